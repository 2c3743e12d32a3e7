"""The VAE behind a latent run: recorded by the cache and the run, carried into OUT/pipeline, and checked
against another VAE at sampling time; a pipeline never returns latents as images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from training_utils import TINY, load_recipe, save_tiny_vae

from mdtblocks import MDTPipeline
from mdtblocks.data import DigitsDataset, encode_dataset, load_autoencoder, vae_provenance
from mdtblocks.pipelines import pipeline_from_checkpoint
from mdtblocks.sampling import make_scheduler
from mdtblocks.training.recipe import exit_on_bad_input
from tests.helpers import tiny_dit


def _encode(vae: str, cache: Path) -> None:
    digits = DigitsDataset(image_size=16, channels=3)
    digits.images, digits.labels, digits.num_images = digits.images[:12], digits.labels[:12], 12
    encode_dataset(digits, load_autoencoder(vae), cache, batch_size=12, extra_meta={"image_size": 16})


def _train(cache: Path, out: Path) -> None:
    flags = list(TINY)
    flags[flags.index("--image-size") + 1] = "16"
    load_recipe("mdtv2_imagenet256").main(
        flags + ["--latents", str(cache), "--out", str(out), "--steps", "2", "--ckpt-every", "2", "--num-samples", "0"]
    )


def _images(pipe: MDTPipeline, output_type: str = "np"):
    pipe.set_progress_bar_config(disable=True)
    return pipe([0, 1], num_inference_steps=2, output_type=output_type, generator=torch.Generator().manual_seed(0)).images


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A cache encoded with ``--vae vae`` (a path relative to where it was made), and a run trained from it elsewhere."""
    root = tmp_path_factory.mktemp("latent-run")
    save_tiny_vae(root / "made" / "vae")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root / "made")
        _encode("vae", root / "latents")  # meta.json's "vae" is the relative name "vae"
        mp.chdir(root)  # from here "vae" leads nowhere: the recorded absolute folder finds it
        _train(root / "latents", root / "run")
    return {"root": root, "vae": root / "made" / "vae", "cache": root / "latents", "run": root / "run"}


def test_the_cache_and_the_run_record_the_vae_and_the_pipeline_carries_it(latent_run: dict[str, Path]) -> None:
    meta = json.loads((latent_run["cache"] / "meta.json").read_text())
    record = meta["vae_provenance"]
    assert record["name"] == "vae" and record["folder"] == str(latent_run["vae"].resolve())
    assert (record["class"], record["latent_channels"], record["scaling_factor"], record["downsample"]) == (
        "AutoencoderKL", 4, 0.5, 2)
    assert record["config"]["block_out_channels"] == [8, 16] and len(record["config_hash"]) == 16
    assert record["fingerprint"] == meta["vae_fingerprint"]
    run_record = json.loads((latent_run["run"] / "config.json").read_text())["vae_provenance"]
    assert {k: run_record[k] for k in ("folder", "config_hash", "fingerprint")} == {
        k: record[k] for k in ("folder", "config_hash", "fingerprint")}

    pipe = MDTPipeline.from_pretrained(latent_run["run"] / "pipeline")
    assert isinstance(pipe.vae, AutoencoderKL) and pipe.config.latent_space is True
    images = _images(pipe)
    assert images.shape == (2, 16, 16, 3)  # decoded: 8x8x4 latents -> 16x16 RGB
    assert _images(pipe, "latent").shape == (2, 4, 8, 8)


def test_an_export_without_the_vae_says_how_to_add_it(latent_run: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(latent_run["run"], run)  # the same run; its VAE folder is moved away below
    vae = Path(shutil.copytree(latent_run["vae"], tmp_path / "vae-copy"))
    settings = json.loads((run / "config.json").read_text())
    settings["vae"] = settings["vae_provenance"]["folder"] = str(tmp_path / "gone")
    (run / "config.json").write_text(json.dumps(settings))
    with pytest.raises(FileNotFoundError, match=r"export_pipeline.py --run .* --vae DIR"):
        pipeline_from_checkpoint(run)
    export = load_recipe("export_pipeline")
    assert exit_on_bad_input(lambda: export.main(["--run", str(run), "--out", str(tmp_path / "p")])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be loaded" in err and "--vae DIR" in err and not (tmp_path / "p").exists()
    # The how-to works: --vae DIR adds it, and the pipeline decodes to images.
    folder = export.main(["--run", str(run), "--vae", str(vae)])
    assert folder == run / "pipeline" and _images(MDTPipeline.from_pretrained(folder)).shape == (2, 16, 16, 3)
    # A VAE that makes other latents than the run's record is refused.
    other = tmp_path / "other"
    save_tiny_vae(other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "scaling_factor": 0.3}))
    with pytest.raises(ValueError, match=r"scaling_factor 0.3 \(recorded: 0.5\)"):
        pipeline_from_checkpoint(run, vae=str(other))


def test_a_training_run_that_cannot_export_its_pipeline_says_so_in_one_line(
    latent_run: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mdtblocks.pipelines

    def vae_gone(*args, **kwargs):
        raise FileNotFoundError("the VAE cannot be loaded here; add it with: python recipes/export_pipeline.py ...")

    monkeypatch.setattr(mdtblocks.pipelines, "pipeline_from_checkpoint", vae_gone)
    with pytest.raises(SystemExit) as stop:
        _train(latent_run["cache"], tmp_path / "run")
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "error: OUT/pipeline was not written (the checkpoints are complete): the VAE cannot be loaded" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "pipeline").exists()
    assert (tmp_path / "run" / "checkpoints" / "0000002" / "state.json").is_file()


def test_a_cache_written_before_the_record_still_trains_and_exports_its_vae(tmp_path: Path) -> None:
    vae = save_tiny_vae(tmp_path / "vae")
    _encode(str(vae), tmp_path / "latents")
    meta = json.loads((tmp_path / "latents" / "meta.json").read_text())
    del meta["vae_provenance"]  # as written before the record existed: the name only
    (tmp_path / "latents" / "meta.json").write_text(json.dumps(meta))
    _train(tmp_path / "latents", tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["vae_provenance"]["folder"] == str(vae.resolve())
    assert _images(MDTPipeline.from_pretrained(tmp_path / "run" / "pipeline")).shape == (2, 16, 16, 3)


def test_a_pipeline_without_its_vae_never_returns_latents_as_images(tmp_path: Path) -> None:
    pipe = MDTPipeline(transformer=tiny_dit(in_channels=4), scheduler=make_scheduler("ddim"))
    with pytest.raises(ValueError, match="samples 4-channel latents of a VAE, but the pipeline has no VAE"):
        _images(pipe)
    assert _images(pipe, "latent").shape == (2, 4, 8, 8)  # asked for explicitly
    # Recorded in the folder: a 3-channel latent model (channels alone would pass for RGB) is refused too.
    latent3 = MDTPipeline(transformer=tiny_dit(), scheduler=make_scheduler("ddim"), latent_space=True)
    latent3.save_pretrained(tmp_path / "p3")
    with pytest.raises(ValueError, match="no VAE to decode them"):
        _images(MDTPipeline.from_pretrained(tmp_path / "p3"), "pil")
    # A folder written before latent_space was recorded: the 4 channels decide.
    pipe.save_pretrained(tmp_path / "p4")
    index = json.loads((tmp_path / "p4" / "model_index.json").read_text())
    del index["latent_space"]
    (tmp_path / "p4" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="no VAE"):
        _images(MDTPipeline.from_pretrained(tmp_path / "p4"), "pt")
    # The way the message gives to add it works.
    vae = AutoencoderKL.from_pretrained(save_tiny_vae(tmp_path / "vae"))
    assert _images(MDTPipeline.from_pretrained(tmp_path / "p4", vae=vae)).shape == (2, 16, 16, 3)
    assert _images(MDTPipeline(transformer=tiny_dit(), scheduler=make_scheduler("ddim"))).shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match="the VAE makes 4-channel latents but the transformer takes 3"):
        MDTPipeline(transformer=tiny_dit(), scheduler=make_scheduler("ddim"), vae=vae)


# --- recipes/sample.py --vae against the run's VAE --------------------------------------------------------


def _sample(ckpt: Path, out: Path, *extra: str) -> Path:
    return load_recipe("sample").main(["--ckpt", str(ckpt), "--num-samples", "1", "--sampler", "ddim", "--steps", "2",
                                       "--device", "cpu", "--no-progress", "--out", str(out), *extra])


def _with_scale(src: Path, dst: Path, scale: float) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, "scaling_factor": scale}))
    return dst


def test_sample_refuses_a_vae_with_other_latents_and_warns_when_it_cannot_compare(
    latent_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = latent_run["run"] / "checkpoints" / "0000002"
    other_scale = _with_scale(latent_run["vae"], tmp_path / "scale03", 0.3)
    with pytest.raises(ValueError, match=r"--vae .*scale03' makes other latents than the run's VAE.*scaling_factor 0.3 "
                                         r"\(recorded: 0.5\)"):
        _sample(ckpt, tmp_path / "a", "--vae", str(other_scale))
    eight = tmp_path / "eight"
    AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  block_out_channels=(8, 16), layers_per_block=1, latent_channels=8, norm_num_groups=8,
                  scaling_factor=0.5).save_pretrained(eight)
    with pytest.raises(ValueError, match=r"latent_channels 8 \(recorded: 4\)"):
        _sample(ckpt, tmp_path / "b", "--vae", str(eight))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    # A copy of the run's VAE elsewhere: the same weights, accepted without a word.
    copy = Path(shutil.copytree(latent_run["vae"], tmp_path / "copy"))
    capsys.readouterr()
    _sample(ckpt, tmp_path / "c", "--vae", str(copy))
    assert "--vae" not in capsys.readouterr().err

    # A run whose config.json has no record (written before it existed): warned, not refused.
    old_run = tmp_path / "old-run"
    shutil.copytree(latent_run["run"], old_run)
    settings = json.loads((old_run / "config.json").read_text())
    del settings["vae_provenance"]
    (old_run / "config.json").write_text(json.dumps(settings))
    out = _sample(old_run / "checkpoints" / "0000002", tmp_path / "d", "--vae", str(other_scale))
    err = capsys.readouterr().err
    assert "cannot compare --vae" in err and "records no vae_provenance" in err
    with np.load(out / "samples.npz") as f:
        assert f["arr_0"].shape == (1, 16, 16, 3)
    # A checkpoint without its run folder: nothing to compare with, a warning says so.
    bare = Path(shutil.copytree(ckpt, tmp_path / "bare" / "ckpt"))
    _sample(bare, tmp_path / "e", "--vae", str(copy))
    err = capsys.readouterr().err
    assert "cannot compare --vae" in err and "no run config.json" in err


def test_sample_refuses_a_vae_for_a_pixel_run(tmp_path: Path) -> None:
    model = tiny_dit()  # 3 channels: an RGB pixel model
    ckpt = tmp_path / "run" / "checkpoints" / "0000001"
    model.save_pretrained(ckpt)
    shutil.copy(ckpt / "model.safetensors", ckpt / "ema.safetensors")
    (tmp_path / "run" / "config.json").write_text(json.dumps({"vae": None, "vae_provenance": None}))
    vae = tmp_path / "vae3"
    AutoencoderKL(block_out_channels=(8,), layers_per_block=1, latent_channels=3, norm_num_groups=8).save_pretrained(vae)
    with pytest.raises(ValueError, match="the run trained in pixel space"):
        _sample(ckpt, tmp_path / "s", "--vae", str(vae))


def test_provenance_is_none_in_pixel_space() -> None:
    assert vae_provenance(load_autoencoder(None)) is None
