"""Alignment as an extra loss of the criterion: which pass is aligned, the recipes' --align flags, resume, export, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_dit, tiny_mdt
from torch import Tensor
from training_utils import (
    TINY,
    load_recipe,
    max_abs_diff,
    save_tiny_vae,
    weights,
    with_flag,
)
from training_utils import run_tiny as run

from mdtblocks import MaskedDiffusionTransformer
from mdtblocks.alignment import ALIGN_MODULE, AlignmentLoss, Dinov2Encoder
from mdtblocks.criterion import Criterion, LabelDropout, read_criterion, rule_of_model
from mdtblocks.data import DigitsDataset, encode_dataset, load_autoencoder
from mdtblocks.objectives import GaussianObjective
from mdtblocks.tokens import MaskDiTDropRule, MaskedTwoPassRule, PlainRule


@pytest.fixture(scope="module")
def dino(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random DINOv2 (width 16, patch 14: a 16x16 grid at the default 224 pixels) in a local folder."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, patch_size=14, image_size=224
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("dino") / "dinov2-tiny"
    transformers.Dinov2Model(config).save_pretrained(folder)
    return folder


def repa_flags(dino: Path, *extra: str) -> list[str]:
    return ["--align", "repa", "--align-encoder", str(dino), "--align-depth", "1", "--align-projector-dim", "16", *extra]


# --- which pass, which tokens --------------------------------------------------------------------------------------
def criterion_with(model: MaskedDiffusionTransformer, loss: AlignmentLoss) -> Criterion:
    objective = GaussianObjective("linear", 1000, learn_sigma=True)
    return Criterion(objective, rule_of_model(model), LabelDropout.of_model(model), [loss.attach(model)])


@pytest.mark.parametrize("choice", ["plain", "masked", "both"])
@pytest.mark.parametrize("depth", [1, 5])  # an encoder block (kept tokens in the masked pass), a decoder block (all)
def test_the_chosen_pass_is_aligned_on_its_tokens(choice: str, depth: int) -> None:
    model = tiny_mdt(v2=True).train()  # depth 5, 1 decoder block: blocks 1..4 see only the kept tokens
    loss = AlignmentLoss("repa", depth, 0.5, choice, encoder={"kind": "test"}, target_dim=8, projector_dim=16)  # type: ignore[arg-type]
    criterion = criterion_with(model, loss)
    x, y = torch.randn(3, 3, 8, 8), torch.tensor([1, 2, 3])
    draws = criterion.draw(model, x, torch.Generator().manual_seed(0))
    targets = torch.randn(3, model.num_tokens, 8)
    seen: list[tuple[int, Tensor | None]] = []
    head = getattr(model, ALIGN_MODULE)
    handle = head.register_forward_hook(lambda m, args, out: seen.append((args[0].shape[1], args[2] if len(args) > 2 else None)))
    out = criterion(model, x, y, draws, targets=targets)
    handle.remove()
    n, k = model.num_tokens, draws.mask.ids_keep.shape[1]
    kept_only = depth <= model.kept_only_blocks
    expected = {"plain": [(n, None)], "masked": [(k, draws.mask.ids_keep) if kept_only else (n, None)]}
    expected["both"] = expected["plain"] + expected["masked"]
    assert [s for s, _ in seen] == [s for s, _ in expected[choice]]
    for (_, got), (_, want) in zip(seen, expected[choice]):
        assert (got is None) == (want is None) and (got is None or torch.equal(got, want))
    assert out["loss_repa"].shape == (3,)
    assert torch.allclose(out["loss"], out["loss_unmasked"] + out["loss_masked"] + out["loss_repa"])
    out["loss"].mean().backward()
    assert head.projector.layers[0].weight.grad is not None  # the projector trains with the backbone


def test_an_aligned_pass_the_step_did_not_make_is_refused() -> None:
    model = tiny_mdt(v2=True)
    loss = AlignmentLoss("dispersive", 1, 0.25, "masked").attach(model)
    criterion = Criterion(GaussianObjective("linear", 1000), rule_of_model(model), LabelDropout(0.0), [loss])
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    draws = criterion.draw(model, x, torch.Generator().manual_seed(0))
    draws = type(draws)(draws.t, draws.noise, draws.drop_label, None, draws.null_class)  # a step without the masked pass
    with pytest.raises(ValueError, match="masked"):
        criterion(model, x, y, draws)


def test_no_extra_loss_leaves_the_terms_unchanged() -> None:
    model = tiny_mdt(v2=True).train()
    plain = Criterion(GaussianObjective("linear", 1000, learn_sigma=True), rule_of_model(model), LabelDropout.of_model(model))
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    draws = plain.draw(model, x, torch.Generator().manual_seed(0))
    before = plain(model, x, y, draws)
    aligned = criterion_with(model, AlignmentLoss("dispersive", 2, 0.0, "both"))  # coefficient 0: same total
    after = aligned(model, x, y, draws)
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_bad_options_are_refused() -> None:
    model = tiny_mdt(v2=True)
    with pytest.raises(ValueError, match="past the network's depth 5"):
        AlignmentLoss("dispersive", 6).attach(model)
    with pytest.raises(ValueError, match="encoder record"):
        AlignmentLoss("repa", 1)
    dit = tiny_dit()
    with pytest.raises(ValueError, match="reads the 'masked' pass, but the token rule 'plain' makes only 'unmasked'"):
        criterion_with(dit, AlignmentLoss("dispersive", 1, pass_choice="masked"))


def test_the_criterion_refuses_an_aligned_pass_its_rule_does_not_make() -> None:
    """The check asks the token rule, not the model: an MDTv2 trained with the plain rule has no masked pass."""
    model = tiny_mdt(v2=True)
    objective = GaussianObjective("linear", 1000, learn_sigma=True)
    for choice in ("masked", "both"):
        with pytest.raises(ValueError, match="reads the 'masked' pass, but the token rule 'plain'"):
            Criterion(objective, PlainRule(), LabelDropout.of_model(model), [AlignmentLoss("dispersive", 1, 0.25, choice).attach(model)])
    Criterion(objective, PlainRule(), LabelDropout.of_model(model), [AlignmentLoss("dispersive", 1, 0.25).attach(model)])
    two_pass = MaskedTwoPassRule(0.3, 0.2)
    Criterion(objective, two_pass, LabelDropout.of_model(model), [AlignmentLoss("dispersive", 1, 0.25, "both").attach(model)])
    # MaskDiT's dropping makes one pass over the kept tokens ('dropped'), not the full one
    with pytest.raises(ValueError, match="reads the 'unmasked' pass, but the token rule 'maskdit_drop' makes only 'dropped'"):
        Criterion(objective, MaskDiTDropRule(0.5), LabelDropout.of_model(model), [AlignmentLoss("dispersive", 1, 0.25).attach(model)])


# --- the recipes ---------------------------------------------------------------------------------------------------
def test_repa_trains_resumes_bit_identical_and_the_pipeline_has_no_projector(dino: Path, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    flags = repa_flags(dino, "--align-pass", "both")
    run(straight, 4, *flags)
    run(resumed, 3, *flags, "--no-pipeline")
    run(resumed, 4, *flags)  # resumes at step 3
    a, b = straight / "checkpoints" / "0000004", resumed / "checkpoints" / "0000004"
    for name in ("model.safetensors", "ema.safetensors"):
        assert max_abs_diff(weights(a, name), weights(b, name)) == 0.0, name
    head = [k for k in weights(a) if k.startswith(ALIGN_MODULE + ".")]
    assert len(head) == 6  # three linears: weights and biases, trained and checkpointed
    metrics = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert all("loss_repa" in m for m in metrics)
    config = json.loads((straight / "config.json").read_text())
    (record,) = config["criterion"]["extra_losses"]
    assert record["kind"] == "repa" and record["pass"] == "both" and record["encoder"]["kind"] == "dinov2"
    assert read_criterion(config).extra_losses[0].to_record() == record
    exported = weights(straight / "pipeline" / "transformer", "model.safetensors")
    assert not any(k.startswith(ALIGN_MODULE) for k in exported)
    loaded = MaskedDiffusionTransformer.from_pretrained(a, "ema.safetensors")  # a checkpoint: the head is dropped
    assert not hasattr(loaded, ALIGN_MODULE)


def test_dispersive_trains_on_the_builtin_data(tmp_path: Path) -> None:
    run(tmp_path, 2, "--align", "dispersive", "--align-pass", "masked", "--no-pipeline")
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(m["loss_dispersive"] < 0 for m in metrics)
    (record,) = json.loads((tmp_path / "config.json").read_text())["criterion"]["extra_losses"]
    assert record == {"kind": "dispersive", "depth": 1, "coeff": 0.25, "pass": "masked", "temperature": 1.0}


def test_repa_with_the_offline_inception_on_tiny_images(tmp_path: Path) -> None:
    flags = with_flag(TINY, "--global-batch-size", "2")
    load_recipe("mdtv2_imagenet256").main(flags + [
        "--out", str(tmp_path), "--steps", "1", "--num-samples", "0", "--no-pipeline",
        "--align", "repa", "--align-encoder", "inception", "--align-depth", "2", "--align-projector-dim", "8",
    ])
    (m,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "loss_repa" in m


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, dino: Path) -> Path:
    """Ten RGB digits at 16 pixels through a tiny VAE (8x8 latents), with the tiny DINOv2's features stored."""
    root = tmp_path_factory.mktemp("cache")
    vae = load_autoencoder(str(save_tiny_vae(root / "vae")))
    digits = DigitsDataset(image_size=16, channels=3, flip=False)
    digits.images, digits.labels, digits.num_images = digits.images[:10], digits.labels[:10], 10
    encode_dataset(digits, vae, root / "latents", batch_size=5, shard_size=5, seed=0, align_encoder=Dinov2Encoder(dino))
    return root / "latents"


def cache_flags(cache: Path, out: Path) -> list[str]:
    return with_flag(TINY, "--image-size", "16") + [
        "--latents", str(cache), "--out", str(out), "--steps", "2", "--num-samples", "0", "--no-pipeline",
    ]


def test_repa_from_a_cache_with_stored_features_never_runs_the_encoder(
    cache: Path, dino: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the encoder ran while training from a cache with stored features")

    monkeypatch.setattr(Dinov2Encoder, "feature_map", refuse)
    load_recipe("mdtv2_imagenet256").main(cache_flags(cache, tmp_path) + repa_flags(dino, "--align-pass", "masked"))
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all("loss_repa" in m for m in metrics)


def dit_flags(flags: list[str]) -> list[str]:
    at = flags.index("--decode-layer")
    return with_flag(flags[:at] + flags[at + 2 :], "--model", "DiT-S/2")


def test_bad_alignment_flags_exit_2(cache: Path, dino: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = load_recipe("mdtv2_imagenet256")
    other = tmp_path / "other-dino"
    import transformers

    transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, patch_size=14)).save_pretrained(other)
    not_dino = tmp_path / "not-dino"
    not_dino.mkdir()
    (not_dino / "config.json").write_text(json.dumps({"model_type": "vit"}))
    base = TINY + ["--out", str(tmp_path / "run"), "--steps", "1", "--num-samples", "0", "--no-pipeline"]
    cases = [
        (base + ["--align", "dispersive", "--align-depth", "9"], "past the network's depth 3"),
        (base + ["--align", "repa"], "needs --align-encoder"),
        (base + ["--align-encoder", str(dino)], "applies to --align repa only"),
        (base + ["--align", "repa", "--align-encoder", str(not_dino)], "not a DINOv2"),
        (base + ["--align", "dispersive", "--align-coeff", "-1"], "--align-coeff"),
        (cache_flags(cache, tmp_path / "c") + repa_flags(Path(other)), "stores features of the encoder"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            recipe.main(argv)
        assert exit_info.value.code == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (message, err)
    for name, argv in (
        ("dit_imagenet256", dit_flags(base) + ["--align", "dispersive", "--align-pass", "masked"]),
        ("mdtv2_imagenet256", base + ["--tokens", "plain", "--align", "dispersive", "--align-pass", "both"]),
    ):
        with pytest.raises(SystemExit) as exit_info:
            load_recipe(name).main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "reads the 'masked' pass, but the token rule 'plain'" in err and "Traceback" not in err, err


def test_the_repa_recipe_trains_sit_with_the_flow_and_repa(dino: Path, tmp_path: Path) -> None:
    recipe = load_recipe("repa_imagenet256")
    assert recipe.PAPER["model"] == "SiT-XL/2" and recipe.PAPER["align_depth"] == 8 and recipe.PAPER["align_coeff"] == 0.5
    assert recipe.SAMPLING == {"sampler": "sde_euler", "steps": 250, "cfg_scale": 1.8, "guidance_interval": (0.3, 1.0)}
    flags = with_flag(dit_flags(TINY), "--model", "SiT-S/2")
    recipe.main(flags + ["--out", str(tmp_path), "--steps", "2", "--num-samples", "0", "--align-encoder", str(dino),
                         "--align-depth", "2", "--align-projector-dim", "16"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["criterion"]["objective"]["kind"] == "flow"
    assert config["criterion"]["extra_losses"][0]["kind"] == "repa"
    assert all("loss_repa" in json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())
