"""recipes/sample.py on a tiny random model in a fake checkpoint folder: npz format, grid, seeds, torchrun."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_dit
from PIL import Image
from safetensors.torch import save_file

from mdtblocks import MaskedDiffusionTransformer
from mdtblocks.criterion import Criterion, LabelDropout
from mdtblocks.io import write_json
from mdtblocks.objectives import EDMObjective
from mdtblocks.tokens import PlainRule

from training_utils import RECIPES, load_recipe, start_killed_after


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as the trainer writes it: OUT/config.json and OUT/checkpoints/0000100/."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = MaskedDiffusionTransformer.from_preset(
        "MDTv2-S/8", input_size=16, in_channels=1, num_classes=10, depth=2, hidden_size=64, num_heads=2, decode_layer=1
    )
    with torch.no_grad():  # leave the zero init so the network's output depends on x, t and y
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ckpt = run / "checkpoints" / "0000100"
    model.save_pretrained(ckpt)
    ema = {k: (v * 0.5).contiguous() for k, v in model.state_dict().items()}
    save_file(ema, str(ckpt / "ema.safetensors"))
    write_json(run / "config.json", {"vae": None, "image_size": 16, "num_classes": 10, "model": "MDTv2-S/8"})
    return run


def test_sample_writes_adm_npz_and_grid(fake_run: Path, tmp_path: Path) -> None:
    recipe = load_recipe("sample")
    out = recipe.main([
        "--ckpt", str(fake_run / "checkpoints" / "0000100"), "--num-samples", "10", "--batch-size", "4",
        "--sampler", "ddim", "--steps", "4", "--cfg-scale", "2.0", "--scale-pow", "4", "--device", "cpu",
        "--out", str(tmp_path / "s"), "--no-progress",
    ])
    with np.load(out / "samples.npz", allow_pickle=False) as f:
        images, labels = f["arr_0"], f["arr_1"]
    assert images.shape == (10, 16, 16, 3) and images.dtype == np.uint8
    assert labels.shape == (10,) and labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < 10
    assert np.array_equal(images[..., 0], images[..., 2])  # grey images repeated to RGB for the evaluator
    assert len({im.tobytes() for im in images}) == 10  # no duplicates
    grid = Image.open(out / "grid.png")
    # 16 px images enlarged 6x (nearest-neighbour) to tiles of at least 96 px.
    assert grid.mode == "L" and grid.size == (6 * (4 * 18 + 2), 6 * (3 * 18 + 2))
    assert not (out / ".batches").exists()


def test_compiled_blocks_draw_the_same_samples(fake_run: Path, tmp_path: Path, no_shape_checks) -> None:
    recipe = load_recipe("sample")
    common = ["--ckpt", str(fake_run / "checkpoints" / "0000100"), "--num-samples", "6", "--batch-size", "3",
              "--sampler", "ddim", "--steps", "3", "--cfg-scale", "2.0", "--device", "cpu", "--no-progress"]
    images = []
    for i, extra in enumerate([[], ["--compile-blocks"]]):
        out = recipe.main([*common, *extra, "--out", str(tmp_path / str(i))])
        with np.load(out / "samples.npz", allow_pickle=False) as f:
            images.append(f["arr_0"].astype(np.int16))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the blocks were compiled
    diff = np.abs(images[0] - images[1])
    # the same function up to float rounding: a pixel may land one level away, no more
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())


@pytest.mark.parametrize("sampler", ["ddpm", "dpm-solver"])
def test_sample_other_samplers_labels_and_default_out(fake_run: Path, sampler: str) -> None:
    recipe = load_recipe("sample")
    argv = ["--ckpt", str(fake_run / "checkpoints" / "0000100"), "--num-samples", "3", "--sampler", sampler,
            "--steps", "3", "--labels", "7,2", "--weights", "model", "--device", "cpu", "--no-progress"]
    out = recipe.main(argv)
    assert out.parent == fake_run / "samples" and out.name.startswith("0000100-model-")
    with np.load(out / "samples.npz", allow_pickle=False) as f:
        assert f["arr_1"].tolist() == [7, 2, 7] and f["arr_0"].shape == (3, 16, 16, 3)


def test_sample_is_seeded_and_batch_split_independent(fake_run: Path, tmp_path: Path) -> None:
    """Batch ``j`` is drawn from ``(seed, j)`` alone, whatever else the run draws.

    With ``--batch-size 4``, 6 samples are batches of 4 and 2: the first batch equals a run of 4
    samples, and a run of 10 (4, 4, 2) holds it too; with ``--batch-size 3`` the first 3 of 6 equal
    a run of 3. The split over processes is checked with torchrun below.
    The samples do depend on ``--batch-size`` itself (each batch has its own generator).
    """
    recipe = load_recipe("sample")
    common = ["--ckpt", str(fake_run / "checkpoints" / "0000100"), "--sampler", "ddim",
              "--steps", "2", "--device", "cpu", "--no-progress"]

    def run(name: str, n: int, batch: int, *extra: str) -> tuple[np.ndarray, np.ndarray]:
        out = recipe.main([*common, "--num-samples", str(n), "--batch-size", str(batch), *extra,
                           "--out", str(tmp_path / name)])
        with np.load(out / "samples.npz", allow_pickle=False) as f:
            return f["arr_0"], f["arr_1"]

    six, six_labels = run("b4n6", 6, 4)
    four, four_labels = run("b4n4", 4, 4)
    ten, ten_labels = run("b4n10", 10, 4)
    assert len({im.tobytes() for im in ten}) == 10
    assert np.array_equal(six[:4], four) and np.array_equal(six_labels[:4], four_labels)
    assert np.array_equal(ten[:4], four) and np.array_equal(ten_labels[:4], four_labels)
    three, three_labels = run("b3n6", 6, 3)
    first, first_labels = run("b3n3", 3, 3)
    assert np.array_equal(three[:3], first) and np.array_equal(three_labels[:3], first_labels)
    again, _ = run("again", 6, 3)
    other, _ = run("seed1", 6, 3, "--seed", "1")
    assert np.array_equal(again, three) and not np.array_equal(other, three)


def test_sample_latent_run_decodes_with_the_run_vae(tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
    )
    vae.save_pretrained(tmp_path / "vae")
    model = MaskedDiffusionTransformer.from_preset(
        "MDTv2-S/4", input_size=8, in_channels=4, num_classes=3, depth=2, hidden_size=32, num_heads=2, decode_layer=1
    )
    ckpt = tmp_path / "run" / "checkpoints" / "0000001"
    model.save_pretrained(ckpt)
    shutil.copy(ckpt / "model.safetensors", ckpt / "ema.safetensors")
    # A stale image_size in the run config only warns: the model and the VAE decide.
    write_json(tmp_path / "run" / "config.json", {"vae": str(tmp_path / "vae"), "image_size": 256, "num_classes": 3})
    out = load_recipe("sample").main(["--ckpt", str(ckpt), "--num-samples", "2", "--sampler", "ddim", "--steps", "2",
                                      "--cfg-scale", "3", "--guided-channels", "3", "--device", "cpu", "--no-progress"])
    with np.load(out / "samples.npz", allow_pickle=False) as f:
        assert f["arr_0"].shape == (2, 16, 16, 3) and f["arr_1"].shape == (2,)
    assert Image.open(out / "grid.png").mode == "RGB"


def test_sample_rejects_bad_flags(fake_run: Path) -> None:
    recipe = load_recipe("sample")
    ckpt = str(fake_run / "checkpoints" / "0000100")
    with pytest.raises(ValueError, match="labels"):
        recipe.main(["--ckpt", ckpt, "--labels", "3,12", "--device", "cpu"])
    with pytest.raises(ValueError, match="num-samples"):
        recipe.main(["--ckpt", ckpt, "--num-samples", "0", "--device", "cpu"])
    with pytest.raises(ValueError, match="--image-size 32"):
        recipe.main(["--ckpt", ckpt, "--image-size", "32", "--device", "cpu", "--num-samples", "1"])


def test_killed_sampling_resumes_to_identical_samples(fake_run: Path, tmp_path: Path, monkeypatch) -> None:
    recipe = load_recipe("sample")

    def flags(out: Path, *extra: str) -> list[str]:
        return ["--ckpt", str(fake_run / "checkpoints" / "0000100"), "--num-samples", "15", "--batch-size", "2",
                "--sampler", "ddim", "--steps", "25", "--device", "cpu", "--no-progress", "--out", str(out), *extra]

    killed = tmp_path / "killed"
    start_killed_after("sample", flags(killed), lambda: any((killed / ".batches").glob("batch-*.npz")))
    kept = len(list((killed / ".batches").glob("batch-*.npz")))
    assert not (killed / "samples.npz").exists() and 1 <= kept < 8, kept

    for flag, value in (("--seed", "1"), ("--steps", "24"), ("--num-samples", "16")):
        with pytest.raises(ValueError, match=rf"part-done sampling run started with other flags: {flag} {value} "):
            recipe.main(flags(killed, flag, value))

    drawn = []
    real = recipe.sample
    monkeypatch.setattr(recipe, "sample", lambda *a, **k: drawn.append(1) or real(*a, **k))
    recipe.main(flags(killed))
    assert len(drawn) == 8 - kept  # only the batches the killed run had not finished
    monkeypatch.undo()

    fresh = recipe.main(flags(tmp_path / "fresh"))
    with np.load(killed / "samples.npz", allow_pickle=False) as a, np.load(fresh / "samples.npz", allow_pickle=False) as b:
        assert a["arr_0"].shape == (15, 16, 16, 3)
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])
    assert (killed / "grid.png").read_bytes() == (fresh / "grid.png").read_bytes()
    assert not (killed / ".batches").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_sample_torchrun_two_processes_matches_one(fake_run: Path, tmp_path: Path) -> None:
    # 7 samples in batches of 2: rank 0 draws batches 0 and 2, rank 1 batches 1 and 3 (the short one).
    common = ["--ckpt", str(fake_run / "checkpoints" / "0000100"), "--num-samples", "7",
              "--sampler", "ddim", "--steps", "2", "--device", "cpu", "--no-progress"]
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", str(RECIPES / "sample.py"), *common,
           "--batch-size", "2", "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = load_recipe("sample").main([*common, "--batch-size", "2", "--out", str(tmp_path / "one")])
    two = np.load(tmp_path / "two" / "samples.npz", allow_pickle=False)
    ref = np.load(one / "samples.npz", allow_pickle=False)
    assert two["arr_0"].shape == (7, 16, 16, 3)
    assert np.array_equal(two["arr_0"], ref["arr_0"]) and np.array_equal(two["arr_1"], ref["arr_1"])
    assert len({im.tobytes() for im in two["arr_0"]}) == 7


# --- an EDM run: Heun on MaskDiT's 40 levels by default, EDM's churn as flags ---------------------------------


@pytest.fixture(scope="module")
def edm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose config.json records the EDM objective (untrained DiT weights in pixel space)."""
    run = tmp_path_factory.mktemp("edm") / "run"
    model = tiny_dit(learn_sigma=False)
    ckpt = run / "checkpoints" / "0000001"
    model.save_pretrained(ckpt)
    save_file(model.state_dict(), str(ckpt / "ema.safetensors"))
    criterion = Criterion(EDMObjective(), PlainRule(), LabelDropout(0.1))
    write_json(run / "config.json", {"vae": None, "image_size": 8, "criterion": criterion.to_record()})
    return run


def sample_edm(run: Path, out: Path | None, monkeypatch: pytest.MonkeyPatch, *flags: str) -> tuple[Path, np.ndarray, dict]:
    """Sample 2 images of the EDM run: the output folder, the images and what the recipe passed to ``sample``."""
    recipe = load_recipe("sample")
    seen: list[dict] = []
    real = recipe.sample
    monkeypatch.setattr(recipe, "sample", lambda *a, **k: seen.append(k) or real(*a, **k))
    where = ["--out", str(out)] if out is not None else []
    done = recipe.main(["--ckpt", str(run / "checkpoints" / "0000001"), "--num-samples", "2", "--batch-size", "2",
                        "--device", "cpu", "--no-progress", *where, *flags])
    monkeypatch.undo()
    with np.load(done / "samples.npz", allow_pickle=False) as f:
        images = f["arr_0"]
    assert len(seen) == 1
    return done, images, {k: seen[0][k] for k in ("sampler", "num_steps", "S_churn", "S_min", "S_max", "S_noise")}


def test_edm_run_samples_heun_on_maskdits_40_levels_by_default(edm_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, _, seen = sample_edm(edm_run, None, monkeypatch)
    assert seen == {"sampler": "heun", "num_steps": 40, "S_churn": 0.0, "S_min": 0.0, "S_max": math.inf, "S_noise": 1.0}
    assert out.parent == edm_run / "samples" and "-heun40-" in out.name
    made = json.loads((out / "sample_config.json").read_text())
    assert (made["sampler"], made["steps"], made["churn"], made["churn_max"]) == ("heun", 40, 0.0, None)
    _, _, seen = sample_edm(edm_run, out.parent / "s3", monkeypatch, "--steps", "3", "--sampler", "euler")
    assert (seen["sampler"], seen["num_steps"]) == ("euler", 3)  # --steps overrides the default


def test_edm_churn_flags_reach_the_sampler(edm_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = ("--steps", "4")
    _, plain, _ = sample_edm(edm_run, tmp_path / "plain", monkeypatch, *steps)
    _, zero, seen = sample_edm(edm_run, tmp_path / "zero", monkeypatch, *steps, "--churn", "0", "--churn-noise", "1.5")
    assert seen["S_churn"] == 0.0 and np.array_equal(zero, plain)  # churn 0: the deterministic sampler
    churn = ("--churn", "10", "--churn-min", "0.01", "--churn-max", "50", "--churn-noise", "1.007")
    out, churned, seen = sample_edm(edm_run, tmp_path / "churned", monkeypatch, *steps, *churn)
    assert seen == {"sampler": "heun", "num_steps": 4, "S_churn": 10.0, "S_min": 0.01, "S_max": 50.0, "S_noise": 1.007}
    assert not np.array_equal(churned, plain)  # the same seed, fresh noise at the churned levels
    _, again, _ = sample_edm(edm_run, tmp_path / "again", monkeypatch, *steps, *churn)
    assert np.array_equal(again, churned)  # the churn noise comes from each batch's seeded generator
    made = json.loads((out / "sample_config.json").read_text())
    assert (made["churn"], made["churn_min"], made["churn_max"], made["churn_noise"]) == (10.0, 0.01, 50.0, 1.007)
    with pytest.raises(ValueError, match=r"another command: --churn 5.0 \(recorded: 10.0\)"):
        sample_edm(edm_run, out, monkeypatch, *steps, *churn, "--churn", "5")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--churn", "-1"], "--churn must be a finite non-negative number, got -1.0"),
        (["--churn-noise", "nan"], "--churn-noise must be a finite non-negative number, got nan"),
        (["--churn-max", "-3"], "--churn-max must be a finite non-negative number or none"),
        (["--churn", "1", "--churn-min", "2", "--churn-max", "1"], "--churn-min 2.0 exceeds --churn-max 1.0"),
    ],
)
def test_edm_run_refuses_bad_churn(edm_run: Path, tmp_path: Path, flags: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_recipe("sample").main(["--ckpt", str(edm_run / "checkpoints" / "0000001"), "--device", "cpu",
                                    "--out", str(tmp_path / "s"), *flags])
    assert not (tmp_path / "s").exists()


def test_edm_churn_on_the_command_line(edm_run: Path, fake_run: Path, tmp_path: Path, capsys) -> None:
    """A bad value: one line, exit 2; the help of an EDM run lists the flags; a Gaussian run refuses them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(RECIPES / "sample.py"), "--ckpt", str(edm_run / "checkpoints" / "0000001"),
                           "--churn-min", "5", "--churn-max", "1", "--device", "cpu"],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == ["error: --churn-min 5.0 exceeds --churn-max 1.0: expected MIN <= MAX"]
    with pytest.raises(SystemExit) as stop:
        load_recipe("sample").main(["--ckpt", str(edm_run / "checkpoints" / "0000001"), "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "--sampler heun, euler (default: heun, 40 steps)" in text
    assert all(f in text for f in ("--churn ", "--churn-min", "--churn-max", "--churn-noise")) and "--time-shift" not in text
    with pytest.raises(ValueError, match="--churn apply to runs of the 'edm' objective; .* 'gaussian' objective"):
        load_recipe("sample").main(["--ckpt", str(fake_run / "checkpoints" / "0000100"), "--churn", "1", "--device", "cpu",
                                    "--out", str(tmp_path / "g")])
