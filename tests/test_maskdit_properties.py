"""MaskDiT: contract and property tests (dropped tokens, mask plan, label embedding, loss, files, bad input)."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize
from hypothesis import given, settings
from hypothesis import strategies as st

from mdtblocks import MaskDiT, MaskDiTConfig, forward_flops
from mdtblocks.blocks import ZeroNullLabelEmbedder
from mdtblocks.criterion import LabelDropout
from mdtblocks.compat import maskdit_from_official, maskdit_to_official
from mdtblocks.losses import MaskDiTLoss, mae_reconstruction_loss, visible_patch_mean
from mdtblocks.masking import MaskSampler, plan_from_ids_keep
from mdtblocks.objectives import EDMObjective

SETTINGS = settings(max_examples=10, deadline=None)


def tiny_maskdit(seed: int = 0, **overrides) -> MaskDiT:
    fields = dict(
        input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=2, num_heads=2, num_classes=5,
        decoder_hidden_size=16, decoder_depth=2, decoder_num_heads=2, attention_backend="math",
    )
    fields.update(overrides)
    return randomize(MaskDiT(MaskDiTConfig(**fields)), seed).eval()


def inputs(model: MaskDiT, batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    t = torch.randn(batch, generator=g)  # EDM's c_noise: any sign
    y = torch.randint(0, cfg.num_classes + 1, (batch,), generator=g)
    return x, t, y


def overwrite_dropped(x: torch.Tensor, mask: torch.Tensor, patch: int, value: torch.Tensor) -> torch.Tensor:
    """``x`` with every dropped patch replaced by ``value`` (a tensor like ``x``)."""
    side = x.shape[-1] // patch
    pixel_mask = mask.view(-1, 1, side, side).repeat_interleave(patch, 2).repeat_interleave(patch, 3).bool()
    return torch.where(pixel_mask, value, x)


@SETTINGS
@given(seed=st.integers(0, 10_000), ratio=st.sampled_from([0.25, 0.5, 0.75]))
def test_dropped_tokens_never_influence_the_kept_ones(seed, ratio):
    model = tiny_maskdit(seed % 3)
    x, t, y = inputs(model, seed=seed)
    g = torch.Generator().manual_seed(seed)
    plan = MaskSampler(ratio)(2, model.num_tokens, generator=g)
    x2 = overwrite_dropped(x, plan.mask, 2, 50 * torch.randn(x.shape, generator=g))
    captured = []
    hook = model.blocks[-1].register_forward_hook(lambda m, a, out: captured.append(out))
    with torch.no_grad():
        out1 = model(x, t, y, ids_keep=plan.ids_keep)
        out2 = model(x2, t, y, ids_keep=plan.ids_keep)
        plain = model(x2, t, y)
    hook.remove()
    assert captured[0].shape[1] == plan.num_kept  # the encoder ran on the kept tokens only
    assert torch.equal(captured[0], captured[1])
    # the decoder sees the mask token where tokens were dropped: the whole output ignores them
    assert torch.equal(out1, out2)
    assert not torch.allclose(out2, plain)  # without dropping, the overwritten patches matter


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_output_is_invariant_to_ids_keep_order(seed):
    model = tiny_maskdit()
    x, t, y = inputs(model)
    g = torch.Generator().manual_seed(seed)
    plan = model.mask_sampler(2, model.num_tokens, generator=g)
    perm = torch.randperm(plan.num_kept, generator=g)
    with torch.no_grad():
        a = model(x, t, y, ids_keep=plan.ids_keep)
        b = model(x, t, y, ids_keep=plan.ids_keep[:, perm])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_keeping_every_token_is_the_plain_pass():
    model = tiny_maskdit()
    x, t, y = inputs(model)
    every = torch.arange(model.num_tokens).flip(0).expand(2, -1)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y, ids_keep=every), model(x, t, y), rtol=1e-5, atol=1e-5)


def test_mask_token_fills_dropped_positions_and_gets_gradients():
    model = tiny_maskdit().train()
    x, t, y = inputs(model)
    plan = model.mask_sampler(2, model.num_tokens, generator=torch.Generator().manual_seed(0))
    model(x, t, y, ids_keep=plan.ids_keep).square().mean().backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0
    model.zero_grad()
    out = model(x, t, y)
    out.square().mean().backward()  # unmasked: the mask token is unused, but in the graph (DDP)
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() == 0
    with torch.no_grad():
        torch.testing.assert_close(out, model.eval()(x, t, y), rtol=0, atol=1e-6)  # and the output is the same


def test_presets_match_the_official_decoder_and_drop_rule():
    with torch.device("meta"):
        model = MaskDiT.from_preset("MaskDiT-XL/2", input_size=32, num_classes=1000)
    cfg = model.config
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads) == (28, 1152, 16)
    assert (cfg.decoder_hidden_size, cfg.decoder_depth, cfg.decoder_num_heads) == (512, 8, 16)
    assert not cfg.learn_sigma and cfg.out_channels == 4
    assert model.mask_sampler == MaskSampler(0.5)
    assert len(model.decoder_blocks) == 8 and model.mask_token.shape == (1, 1, 512)
    assert MaskDiT.from_preset("MaskDiT-S/2", input_size=8, num_classes=3, mask_ratio=0.0).mask_sampler is None


def test_official_stages():
    from mdtblocks.masking.maskdit import MASKDIT_IMAGENET256, MaskDiTStage

    pretrain, finetune = MASKDIT_IMAGENET256
    assert pretrain.drop_rule == MaskSampler(0.5) and finetune.drop_rule is None
    assert (pretrain.lr, finetune.lr, pretrain.global_batch_size) == (1e-4, 5e-5, 1024)
    with pytest.raises(ValueError, match=r"mask_ratio 1.0 is outside \[0, 1\)"):
        MaskDiTStage("x", mask_ratio=1.0, mae_weight=0.1, steps=1, global_batch_size=1, lr=1.0, mixed_precision=False)


def test_flops_fall_with_dropped_tokens():
    model = tiny_maskdit(input_size=16)
    n = model.num_tokens
    full, half, quarter = forward_flops(model), forward_flops(model, kept_tokens=n // 2), forward_flops(model, kept_tokens=n // 4)
    assert quarter < half < full


def test_zero_null_label_embedder():
    emb = ZeroNullLabelEmbedder(4, 8)
    assert emb.embedding_table.weight.shape == (4, 8) and emb.has_null and emb.null_class == 4
    out = emb(torch.tensor([0, 4, 3]))
    assert torch.equal(out[1], torch.zeros(8))
    torch.testing.assert_close(out[0], emb.embedding_table.weight[0])
    # The drops are the criterion's; a MaskDiT's config maps to its LabelDropout, and the null class is 4.
    labels = torch.tensor([1, 2])
    for prob, expected in ((0.0, labels), (0.999, torch.tensor([4, 4]))):
        model = MaskDiT(MaskDiTConfig(input_size=8, hidden_size=32, depth=1, num_heads=2, num_classes=4,
                                      decoder_hidden_size=32, decoder_depth=1, decoder_num_heads=2,
                                      class_dropout_prob=prob))
        assert LabelDropout.of_model(model) == LabelDropout(prob) and model.y_embedder.null_class == 4
        assert torch.equal(model.drop_labels(labels, torch.Generator().manual_seed(0)), expected)


def test_save_and_load_round_trip(tmp_path):
    model = tiny_maskdit()
    x, t, y = inputs(model)
    model.save_pretrained(tmp_path / "m")
    back = MaskDiT.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(back(x, t, y), model(x, t, y))


def test_official_layout_round_trip():
    state = tiny_maskdit().state_dict()
    official = maskdit_to_official(state)
    assert "model.decoder_layer.linear.weight" in official
    assert official["model.y_embedder.embedding_table.weight"].shape == (32, 5)  # Linear(num_classes, d)
    back = maskdit_from_official(official)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="an official MaskDiT state dict has keys 'model"):
        maskdit_from_official({"blocks.0.attn.qkv.weight": torch.zeros(1)})


# --- the loss ---------------------------------------------------------------------------------
def test_visible_and_mae_terms_use_their_own_patches():
    b, c, side, p = 2, 3, 8, 2
    error = torch.zeros(b, c, side, side)
    plan = plan_from_ids_keep(torch.tensor([[0, 1, 2, 3], [12, 13, 14, 15]]), 16)
    # error only on dropped patches: the visible mean is 0
    error = overwrite_dropped(error, plan.mask, p, torch.ones_like(error))
    assert torch.equal(visible_patch_mean(error, plan.mask, p), torch.zeros(b))
    assert torch.equal(visible_patch_mean(1 - error, plan.mask, p), torch.ones(b))
    target = torch.randn(b, c, side, side)
    # a prediction equal to the normalised target on dropped patches gives zero MAE loss, whatever it is elsewhere
    from mdtblocks.blocks import patchify, unpatchify

    t = patchify(target, p)
    normed = unpatchify((t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt(), p, c, (4, 4))
    pred = overwrite_dropped(torch.randn(b, c, side, side) * 9, plan.mask, p, normed)
    torch.testing.assert_close(mae_reconstruction_loss(pred, target, plan.mask, p), torch.zeros(b))
    assert (mae_reconstruction_loss(pred, target, 1 - plan.mask, p) > 1).all()


def test_maskdit_loss_terms_and_unmasked_mode():
    model = tiny_maskdit().train()
    x, _, y = inputs(model, batch=3)
    objective = EDMObjective()
    g = torch.Generator().manual_seed(0)
    sigma, noise = objective.draw_times(3, g), objective.draw_noise(x, g)
    plan = model.mask_sampler(3, model.num_tokens, generator=g)
    loss = MaskDiTLoss(2, objective)
    terms = loss(model, x, sigma, noise, plan, {"y": y})
    torch.testing.assert_close(terms["loss"], terms["denoise"] + 0.1 * terms["mae"])
    terms["loss"].mean().backward()
    assert model.mask_token.grad.abs().sum() > 0
    plain = loss(model, x, sigma, noise, None, {"y": y})
    assert set(plain) == {"loss", "denoise"}
    torch.testing.assert_close(plain["loss"], objective.losses(model, x, sigma, noise, {"y": y})["loss"])


# --- bad input --------------------------------------------------------------------------------
def test_bad_config_and_input():
    with pytest.raises(ValueError, match="decoder_hidden_size 20 must be divisible by decoder_num_heads 3"):
        MaskDiTConfig(input_size=8, hidden_size=32, num_heads=2, decoder_hidden_size=20, decoder_num_heads=3)
    with pytest.raises(ValueError, match=r"mask_ratio must lie in \[0, 1\) or be None, got 1\.0"):
        MaskDiTConfig(input_size=8, hidden_size=32, num_heads=2, mask_ratio=1.0)
    model = tiny_maskdit()
    x, t, y = inputs(model)
    with pytest.raises(ValueError, match="duplicate indices"):
        model(x, t, y, ids_keep=torch.tensor([[0, 0], [1, 2]]))
    with pytest.raises(ValueError, match=r"expected indices in \[0, 16\)"):
        model(x, t, y, ids_keep=torch.tensor([[0, 16], [1, 2]]))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4\), expected \(batch=2, tokens=16\)"):
        visible_patch_mean(torch.zeros(2, 3, 8, 8), torch.zeros(2, 4), 2)
    with pytest.raises(ValueError, match="pass the dropped tokens as plan"):
        MaskDiTLoss(2)(model, x, torch.ones(2), x, None, {"y": y, "ids_keep": torch.zeros(2, 1, dtype=torch.long)})
    with pytest.raises(ValueError, match="mae_weight must be a non-negative finite number, got -1.0"):
        MaskDiTLoss(2, mae_weight=-1.0)
    with pytest.raises(TypeError):  # the shape-and-type hook, or the constructor's own check
        MaskDiTLoss(2, objective="edm")  # type: ignore[arg-type]
