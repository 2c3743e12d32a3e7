"""The training axes as recipe flags: --route / --route-span, --objective edm, the MaskDiT recipe's two phases;
runs resume bit-identically, routed weights are the plain model's, and combinations that make no sense are refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from training_utils import TINY, load_recipe, max_abs_diff, weights, with_flag

from mdtblocks import DiT, load_pretrained
from mdtblocks.criterion import read_criterion
from mdtblocks.masking import Route
from mdtblocks.objectives import EDMObjective, GaussianObjective
from mdtblocks.objectives.flow import FlowMatching
from mdtblocks.tokens import MaskDiTDropRule, MaskedTwoPassRule, PlainRule, RoutedRule

COMMON = ["--num-samples", "0", "--no-pipeline", "--ckpt-every", "3"]
def _without(flags: list[str], name: str) -> list[str]:
    i = flags.index(name)
    return flags[:i] + flags[i + 2:]


DIT = _without(with_flag(with_flag(TINY, "--model", "DiT-S/2"), "--depth", "3"), "--decode-layer")
MASKDIT = _without(with_flag(with_flag(TINY, "--model", "MaskDiT-S/2"), "--depth", "2"), "--decode-layer")


def _run(recipe: str, base: list[str], out: Path, steps: int, *extra: str) -> None:
    load_recipe(recipe).main([*base, *COMMON, "--out", str(out), "--steps", str(steps), *extra])


def _criterion(out: Path):
    return read_criterion(json.loads((out / "config.json").read_text()))


def _resumes_bit_identical(recipe: str, base: list[str], tmp_path: Path, *extra: str) -> Path:
    a, b = tmp_path / "a", tmp_path / "b"
    _run(recipe, base, a, 4, *extra)
    _run(recipe, base, b, 3, *extra)
    _run(recipe, base, b, 4, *extra)
    for name in ("model.safetensors", "ema.safetensors"):
        assert max_abs_diff(weights(a / "checkpoints/0000004", name), weights(b / "checkpoints/0000004", name)) == 0.0
    return a


def test_dit_with_routing_resumes_and_its_weights_are_the_plain_models(tmp_path: Path) -> None:
    run = _resumes_bit_identical("dit_imagenet256", DIT, tmp_path, "--route", "0.5", "--route-span", "1", "2")
    assert _criterion(run).tokens == RoutedRule(PlainRule(), Route(1, 2, 0.5))
    model = load_pretrained(run / "checkpoints/0000004")
    assert isinstance(model, DiT)
    x = torch.randn(2, 1, 8, 8)
    assert torch.isfinite(model(x, torch.tensor([3, 500]), torch.tensor([0, 1]))).all()  # the plain model, no route


def test_mdtv2_routes_its_masked_pass(tmp_path: Path) -> None:
    _run("mdtv2_imagenet256", TINY, tmp_path, 1, "--route", "0.5", "--route-span", "0", "2")
    assert _criterion(tmp_path).tokens == RoutedRule(MaskedTwoPassRule(0.3, 0.2), Route(0, 2, 0.5))


def test_maskdit_pretrain_resumes_and_the_finetune_starts_from_it(tmp_path: Path) -> None:
    pre = _resumes_bit_identical("maskdit_imagenet256", MASKDIT, tmp_path)
    criterion = _criterion(pre)
    assert criterion.objective == EDMObjective() and criterion.tokens == MaskDiTDropRule(0.5, 0.1)
    fine = tmp_path / "fine"
    load_recipe("maskdit_imagenet256").main(
        [*MASKDIT, *COMMON, "--phase", "finetune", "--init-from", str(pre), "--out", str(fine), "--steps", "1", "--lr", "1e-12"]
    )
    assert _criterion(fine).tokens == MaskDiTDropRule(0.0, 0.1)
    config = json.loads((fine / "config.json").read_text())
    assert config["init_from"] == str(pre) and config["global_batch_size"] == 8
    # a step of lr 1e-12 leaves the weights those of the pre-training run's EMA (the trained weights differ from it by far more)
    start = weights(pre / "checkpoints/0000004", "ema.safetensors")
    assert max_abs_diff(weights(fine / "checkpoints/0000001"), start) < 1e-6
    assert max_abs_diff(weights(pre / "checkpoints/0000004"), start) > 1e-4
    # sampling takes the recorded objective's sampler (EDM: Heun) when --sampler is not given
    out = load_recipe("sample").main(["--ckpt", str(fine / "checkpoints/0000001"), "--num-samples", "2", "--steps", "2",
                                      "--device", "cpu", "--no-progress", "--out", str(tmp_path / "s")])
    assert json.loads((out / "sample_config.json").read_text())["sampler"] == "heun"


@pytest.mark.parametrize("objective", ["gaussian", "flow"])
@pytest.mark.parametrize("route", [[], ["--route", "0.5", "--route-span", "0", "1"]], ids=["dropped", "dropped+routed"])
def test_maskdit_drops_tokens_with_the_other_objectives(objective: str, route: list[str], tmp_path: Path) -> None:
    _run("maskdit_imagenet256", MASKDIT, tmp_path, 2, "--objective", objective, *route)
    criterion = _criterion(tmp_path)
    rule = MaskDiTDropRule(0.5, 0.1)
    assert criterion.tokens == (RoutedRule(rule, Route(0, 1, 0.5)) if route else rule)
    if objective == "gaussian":  # learned sigma, as every Gaussian recipe run: the vb term on the visible patches
        assert criterion.objective == GaussianObjective("linear", 1000, learn_sigma=True)
    else:
        assert criterion.objective == FlowMatching()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2] and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)
    model = load_pretrained(tmp_path / "checkpoints/0000002")
    assert model.config.learn_sigma == (objective == "gaussian")
    if objective == "gaussian" and not route:  # the run samples with its objective's sampler
        out = load_recipe("sample").main(["--ckpt", str(tmp_path / "checkpoints/0000002"), "--num-samples", "2", "--steps", "2",
                                          "--device", "cpu", "--no-progress", "--out", str(tmp_path / "s")])
        assert json.loads((out / "sample_config.json").read_text())["sampler"] == "ddpm"


def test_tokens_flag_trains_mdtv2_with_maskdits_dropping_or_without_its_masked_pass(tmp_path: Path) -> None:
    """--tokens picks the step's rule on any backbone that can take it; the model is the preset's either way."""
    _run("mdtv2_imagenet256", TINY, tmp_path / "drop", 2, "--tokens", "maskdit_drop", "--mask-ratio", "0.25")
    assert _criterion(tmp_path / "drop").tokens == MaskDiTDropRule(0.25, 0.1)
    rows = [json.loads(line) for line in (tmp_path / "drop" / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2] and all(torch.isfinite(torch.tensor(r["loss"])) for r in losses)
    _run("mdtv2_imagenet256", TINY, tmp_path / "plain", 1, "--tokens", "plain")
    assert _criterion(tmp_path / "plain").tokens == PlainRule()
    _run("mdtv2_imagenet256", TINY, tmp_path / "preset", 1, "--tokens", "preset")
    assert _criterion(tmp_path / "preset").tokens == MaskedTwoPassRule(0.3, 0.2)
    preset = load_pretrained(tmp_path / "preset" / "checkpoints/0000001").config
    for run, step in (("drop", 2), ("plain", 1)):  # the preset's network, whatever rule trained it
        assert load_pretrained(tmp_path / run / f"checkpoints/{step:07d}").config == preset


@pytest.mark.parametrize(("recipe", "base", "extra", "message"), [
    ("maskdit_imagenet256", MASKDIT, ["--route", "0.5", "--route-span", "1", "3"], "does not fit the model's 2 blocks"),
    ("maskdit_imagenet256", MASKDIT, ["--objective", "gaussian", "--flow-path", "GVP"], "--flow-path apply to --objective flow"),
    ("dit_imagenet256", DIT, ["--route", "1.5"], r"--route 1.5 is outside \(0, 1\)"),
    ("dit_imagenet256", DIT, ["--objective", "edm", "--snr-gamma", "5"], "--snr-gamma 5(.0)? weights the Gaussian"),
    ("dit_imagenet256", DIT, ["--objective", "flow", "--edm-p-mean", "0.3"], "--edm-p-mean apply to --objective edm"),
    ("mdtv2_imagenet256", TINY, ["--edm-sigma-data", "1"], "--edm-sigma-data apply to --objective edm"),
    ("dit_imagenet256", DIT, ["--objective", "edm", "--edm-p-std", "-1"], r"--objective edm: EDMObjective.p_std must be positive"),
    ("dit_imagenet256", DIT, ["--route-span", "1", "2"], "without --route"),
    ("mdtv2_imagenet256", TINY, ["--route", "0.5", "--route-span", "1", "3"], "span"),
    ("dit_imagenet256", DIT, ["--tokens", "maskdit_drop"], "for DiT and SiT route tokens with --route"),
    ("mdtv2_imagenet256", TINY, ["--tokens", "plain", "--mask-ratio", "0.5"], "--mask-ratio does not apply to the 'plain'"),
    ("mdtv2_imagenet256", TINY, ["--tokens", "maskdit_drop", "--mask-ratio-range", "0.1"], "--mask-ratio-range does not apply"),
    ("mdtv2_imagenet256", TINY, ["--tokens", "every"], "invalid choice: 'every'"),
    ("mdtv2_imagenet256", TINY, ["--official", "--tokens", "plain"], "--official fixes the official"),
])
def test_combinations_that_make_no_sense_are_refused(
    recipe: str, base: list[str], extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _run(recipe, base, tmp_path / "r", 1, *extra)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "r" / "checkpoints").exists()
