"""End to end: the recipes' built-in default (digits in pixel space), a few steps, and the documented output layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_utils import TINY, load_recipe, with_flag

from conftest import rel_err

import mdtblocks
from mdtblocks.data import DigitsDataset
from mdtblocks.training.recipe import RecipeConfig, build_parser

COMMON_FLAGS = [
    "--data", "--out", "--model", "--steps", "--global-batch-size", "--lr", "--seed", "--ckpt-every",
    "--precision", "--device", "--vae", "--latents",
]
RECIPES = ["mdtv2_imagenet256", "mdt_imagenet256", "dit_imagenet256"]


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_has_the_common_flags(name: str) -> None:
    recipe = load_recipe(name)
    help_text = build_parser(RecipeConfig, defaults=recipe.RECIPE.defaults).format_help()
    for f in COMMON_FLAGS:
        assert f in help_text, f"{name} lacks {f}"
    parser = build_parser(RecipeConfig, defaults=recipe.RECIPE.defaults)
    assert parser.parse_args(["--precision", "bf16"]).precision == "bf16"
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp16"])
    assert parser.parse_args(["--vae", "none"]).vae is None


def test_mdtv2_paper_defaults() -> None:
    """Without the built-in demo, the config is the paper's (XL: lr 3e-4, S: 5e-4; global batch 256 for both)."""
    r = load_recipe("mdtv2_imagenet256")
    cfg, builtin = r.RECIPE.configure(["--data", "/nonexistent"])
    assert not builtin
    assert (cfg.model, cfg.lr, cfg.global_batch_size, cfg.image_size) == ("MDTv2-XL/2", 3e-4, 256, 256)
    assert (cfg.adan_betas, cfg.weight_decay, cfg.grad_clip, cfg.ema_decay, cfg.snr_gamma) == (
        (0.98, 0.92, 0.99), 0.0, 1.0, 0.9999, 5.0
    )
    assert cfg.vae == "stabilityai/sd-vae-ft-ema"
    small = r.RECIPE.configure(["--data", "x", "--model", "MDTv2-S/2"])[0]
    assert (small.lr, small.global_batch_size) == (5e-4, 256)
    assert cfg.objective == "gaussian"  # the paper's objective for real data
    cfg, builtin = r.RECIPE.configure(["--steps", "7"])
    assert builtin and cfg.steps == 7 and cfg.vae is None and cfg.image_size == 16


def test_builtin_default_trains_with_flow_matching() -> None:
    """The built-in digits run uses flow matching (it learns the classes faster per CPU second there); a flag wins."""
    recipe = load_recipe("mdtv2_imagenet256").RECIPE
    cfg, builtin = recipe.configure([])
    assert builtin and (cfg.model, cfg.objective, cfg.steps) == ("MDTv2-S/4", "flow", 1800)
    assert recipe.configure(["--objective", "gaussian"])[0].objective == "gaussian"
    assert recipe.configure(["--data", "x"])[0].objective == "gaussian"


def test_mdt_and_dit_paper_defaults() -> None:
    for name, model, lr in (("mdt_imagenet256", "MDT-XL/2", 3e-4), ("dit_imagenet256", "DiT-XL/2", 1e-4)):
        cfg, _ = load_recipe(name).RECIPE.configure(["--data", "x"])
        assert (cfg.model, cfg.lr, cfg.global_batch_size, cfg.weight_decay, cfg.ema_decay) == (model, lr, 256, 0.0, 0.9999)


@pytest.mark.parametrize("name", RECIPES + ["sit_imagenet256", "maskdit_imagenet256", "repa_imagenet256"])
def test_builtin_digits_are_not_mirrored(name: str) -> None:
    """The built-in run trains on the digits as written: a mirrored digit is not a digit (``--flip`` brings flips back)."""
    from mdtblocks.training.recipe import load_run_data

    module = load_recipe(name)
    recipe = module.RECIPES["pretrain"] if name.startswith("maskdit") else module.RECIPE
    cfg, builtin = recipe.configure([])
    assert builtin and cfg.flip is False
    data = load_run_data(cfg)
    assert len(data.dataset) == data.dataset.num_images == 1797 and "no flips" in data.summary
    plain = DigitsDataset(flip=False)
    assert all(torch.equal(data.dataset[i][0], plain[i][0]) for i in range(0, 1797, 97))  # the digits as written
    flipped, _ = recipe.configure(["--flip"])  # the user's choice wins over the built-in default
    assert flipped.flip is True and len(load_run_data(flipped).dataset) == 2 * 1797


def test_flips_stay_on_for_image_folders_unless_turned_off() -> None:
    """Natural images keep their mirrored copies by default; ``--no-flip`` drops them."""
    recipe = load_recipe("mdtv2_imagenet256").RECIPE
    assert recipe.configure(["--data", "/nonexistent"])[0].flip is True
    assert recipe.configure(["--data", "/nonexistent", "--no-flip"])[0].flip is False


def test_builtin_default_runs_end_to_end(tmp_path: Path) -> None:
    """The built-in default (its model and data), two steps with a smaller batch: every documented file appears."""
    out = tmp_path / "run"
    r = load_recipe("mdtv2_imagenet256")
    r.main(["--out", str(out), "--steps", "2", "--global-batch-size", "8", "--ckpt-every", "2",
            "--num-samples", "4", "--sample-steps", "2", "--log-every", "1"])

    config = json.loads((out / "config.json").read_text())
    assert config["vae"] is None and config["image_size"] == 16 and config["num_classes"] == 10
    assert config["model_preset"] == r.RECIPE.builtin["model"] and config["model_overrides"]["depth"] == r.RECIPE.builtin["depth"]
    assert config["criterion"]["objective"]["kind"] == "flow"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in lines] == [1, 2]
    assert all(torch.isfinite(torch.tensor(rec["loss"])) and rec["steps_per_s"] > 0 for rec in lines)
    assert (out / "samples" / "0000002.png").is_file()

    ckpt = out / "checkpoints" / "0000002"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "config.json", "ema.safetensors", "model.safetensors", "optimizer.pt", "state.json"
    ]
    assert not list((out / "checkpoints").glob(".tmp*"))
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 2 and state["data"][0]["batches_consumed"] == 2
    opt = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert opt["state"] and opt["param_groups"][0]["betas"] == (0.98, 0.92, 0.99)

    # config.json is exactly what save_pretrained writes, so the colleague's sampler loads the EMA.
    ema = mdtblocks.load_pretrained(ckpt, weights_name="ema.safetensors")
    again = tmp_path / "again"
    ema.save_pretrained(again)
    assert json.loads((again / "config.json").read_text()) == json.loads((ckpt / "config.json").read_text())
    assert torch.equal(load_file(str(again / "model.safetensors"))["pos_embed"], load_file(str(ckpt / "ema.safetensors"))["pos_embed"])
    assert ema.config.input_size == 16 and ema.config.in_channels == DigitsDataset().channels

    # OUT/pipeline: the EMA weights as a diffusers pipeline folder that samples.
    from mdtblocks import MDTPipeline

    pipe = MDTPipeline.from_pretrained(out / "pipeline")
    assert torch.equal(pipe.transformer.pos_embed, ema.pos_embed)
    assert torch.equal(pipe.transformer.state_dict()["final_layer.linear.weight"], load_file(str(ckpt / "ema.safetensors"))["final_layer.linear.weight"])
    images = pipe([0, 3], num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 16, 16, DigitsDataset().channels) and not (out / "pipeline.tmp").exists()


def test_builtin_default_scores_its_sample_grids(tmp_path: Path) -> None:
    """The built-in digits run writes the class accuracy of every sample grid that shows each class into metrics.jsonl."""
    out = tmp_path / "run"
    load_recipe("mdtv2_imagenet256").main(with_flag(TINY, "--image-size", "16") + ["--out", str(out), "--steps", "2",
                                                  "--ckpt-every", "1", "--num-samples", "10"])
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scores = [rec for rec in lines if "sample_class_accuracy" in rec]
    assert [rec["step"] for rec in scores] == [1, 2]
    assert all(0.0 <= rec["sample_class_accuracy"] <= 1.0 and set(rec) == {"step", "sample_class_accuracy", "time"} for rec in scores)
    assert [rec["step"] for rec in lines if "loss" in rec] == [1, 2]  # the step records are unchanged


@pytest.mark.parametrize("name", ["mdt_imagenet256", "dit_imagenet256"])
def test_mdt_and_dit_recipes_train(name: str, tmp_path: Path) -> None:
    flags = [f for f in TINY]
    flags[flags.index("--model") + 1] = "MDT-S/2" if name.startswith("mdt") else "DiT-S/2"
    if name.startswith("dit"):
        i = flags.index("--decode-layer")
        del flags[i : i + 2]
    load_recipe(name).main(flags + ["--out", str(tmp_path), "--steps", "2", "--ckpt-every", "2"])
    ckpt = tmp_path / "checkpoints" / "0000002"
    model = mdtblocks.load_pretrained(ckpt, weights_name="ema.safetensors")
    assert type(model).__name__ == ("DiT" if name.startswith("dit") else "MaskedDiffusionTransformer")
    assert (tmp_path / "samples" / "0000002.png").is_file()


def _two_steps(tmp_path: Path, precision: str) -> tuple[list[dict], dict, dict]:
    """Metrics, weights after 2 steps and the initial weights (EMA with decay 1 keeps them)."""
    out = tmp_path / precision
    load_recipe("mdtv2_imagenet256").main(TINY + ["--out", str(out), "--steps", "2", "--ckpt-every", "2",
                                                  "--precision", precision, "--num-samples", "0", "--ema-decay", "1.0"])
    ckpt = out / "checkpoints" / "0000002"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return metrics, load_file(str(ckpt / "model.safetensors")), load_file(str(ckpt / "ema.safetensors"))


def test_bf16_autocast_keeps_fp32_weights(tmp_path: Path) -> None:
    """bf16 autocast: fp32 weights, and the same losses, gradient norms and update as fp32 within bf16 error.

    Two steps, since the zero-initialised output layer makes the first step's loss (and all but
    that layer's gradient) independent of the precision. Measured: loss 1e-7, grad norm 3e-4 and
    update 3e-2 relative; a bf16 path that drifted (wrong loss scale, wrong autocast dtype, bf16
    optimizer state) lands far outside, and one that ran in fp32 matches exactly.
    """
    fp32, w_fp32, init = _two_steps(tmp_path, "fp32")
    bf16, w_bf16, init_bf16 = _two_steps(tmp_path, "bf16")
    assert all(v.dtype == torch.float32 for v in w_bf16.values())
    assert init.keys() == init_bf16.keys() and all(torch.equal(init[k], init_bf16[k]) for k in init)
    for a, b in zip(fp32, bf16, strict=True):
        assert abs(b["loss"] - a["loss"]) <= 1e-2 * a["loss"], (a, b)
        assert abs(b["grad_norm"] - a["grad_norm"]) <= 1e-2 * a["grad_norm"], (a, b)
    flat = lambda w: torch.cat([(w[k] - init[k]).flatten() for k in sorted(init)])  # noqa: E731
    update_fp32, update_bf16 = flat(w_fp32), flat(w_bf16)
    assert update_fp32.norm() > 0.05
    err = rel_err(update_bf16, update_fp32)
    assert 1e-5 < err < 0.15, f"bf16 update differs from the fp32 one by {err:.2e} (relative)"
