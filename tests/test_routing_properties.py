"""Token routing (TREAD) invariants: routed tokens come back unchanged, ratio 0 is the plain model,
the FLOP count falls by what the routed tokens skip, and bad routes are refused by name."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from helpers import inputs, tiny_dit, tiny_mdt
from hypothesis import given, settings
from hypothesis import strategies as st

from mdtblocks import DiT, DiTConfig, MaskedDiffusionTransformer, forward_flops
from mdtblocks.masking.route import (
    Route,
    RoutePlan,
    as_routes,
    default_span,
    route_from_ids_keep,
)
from mdtblocks.models.flops import forward_flop_counts

SETTINGS = settings(max_examples=15, deadline=None)


@st.composite
def spans(draw, depth: int):
    start = draw(st.integers(0, depth - 1))
    return start, draw(st.integers(start + 1, depth))


def record_block_io(blocks, final=None):
    """Hooks that record each block's input (``("in", i)``) and output (``("out", i)``)."""
    rec, handles = {}, []
    for i, blk in enumerate(blocks):
        handles.append(blk.register_forward_pre_hook(lambda m, a, i=i: rec.__setitem__(("in", i), a[0])))
        handles.append(blk.register_forward_hook(lambda m, a, out, i=i: rec.__setitem__(("out", i), out)))
    if final is not None:
        handles.append(final.register_forward_pre_hook(lambda m, a: rec.__setitem__(("in", len(blocks)), a[0])))
    return rec, handles


def assert_routed_unchanged(before: torch.Tensor, after: torch.Tensor, plan: RoutePlan) -> None:
    routed = plan.plan.mask.bool()
    assert torch.equal(after[routed], before[routed])  # bit-identical
    if plan.plan.num_kept:  # the tokens that went through did change (random weights)
        kept = ~routed
        assert not torch.equal(after[kept], before[kept])


@SETTINGS
@given(depth=st.integers(1, 4), data=st.data(), ratio=st.floats(0.05, 0.95), seed=st.integers(0, 2**31))
def test_dit_routed_tokens_come_back_bit_identical(depth, data, ratio, seed):
    model = tiny_dit(depth=depth)
    start, end = data.draw(spans(depth))
    x, t, y = inputs(model, batch=2, seed=seed % 1000)
    plan = Route(start, end, ratio)(2, model.num_tokens, generator=torch.Generator().manual_seed(seed))
    rec, handles = record_block_io(model.blocks, model.final_layer)
    with torch.no_grad():
        model(x, t, y, route=plan)
        before = model.x_embedder(x) + model.pos_embed if start == 0 else rec[("out", start - 1)]
    for h in handles:
        h.remove()
    assert_routed_unchanged(before, rec[("in", end)], plan)


@SETTINGS
@given(v2=st.booleans(), masked=st.booleans(), data=st.data(), ratio=st.floats(0.05, 0.95), seed=st.integers(0, 2**31))
def test_mdt_encoder_routed_tokens_come_back_bit_identical(v2, masked, data, ratio, seed):
    model = tiny_mdt(v2=v2, depth=6, decode_layer=2)  # 4 encoder blocks (MDTv2: 2 + 2 with long skips)
    enc = len(model.encoder)
    start = data.draw(st.integers(0, enc - 1))
    end = data.draw(st.integers(max(start + 1, enc - start if v2 and start < enc // 2 else 0), enc))
    x, t, y = inputs(model, batch=2, seed=seed % 1000)
    g = torch.Generator().manual_seed(seed)
    tokens = model.x_embedder(x) + model.pos_embed
    c = model.condition(t, y)
    rel_index = None
    if masked:
        from mdtblocks.blocks import gather_relative_index

        ids = model.mask_sampler(2, model.num_tokens, generator=g).ids_keep
        tokens = tokens.gather(1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        rel_index = gather_relative_index(model.rel_index, ids)
    plan = Route(start, end, ratio)(2, tokens.shape[1], generator=g)
    rec, handles = record_block_io(model.encoder)
    with torch.no_grad():
        out = model.encode(tokens, c, rel_index, routes=(plan,))
    for h in handles:
        h.remove()
    before = tokens if start == 0 else rec[("out", start - 1)]
    assert_routed_unchanged(before, out if end == enc else rec[("in", end)], plan)


@SETTINGS
@given(family=st.sampled_from(["dit", "mdt", "mdtv2"]), masked=st.booleans(), data=st.data(), seed=st.integers(0, 2**31))
def test_ratio_zero_is_the_plain_model(family, masked, data, seed):
    model = tiny_dit(depth=3) if family == "dit" else tiny_mdt(v2=family == "mdtv2", depth=6, decode_layer=2)
    masked = masked and family != "dit"
    x, t, y = inputs(model, batch=2, seed=seed % 1000)
    g = torch.Generator().manual_seed(seed)
    kwargs = {"ids_keep": model.mask_sampler(2, model.num_tokens, generator=g).ids_keep} if masked else {}
    if family == "dit":
        start, end = data.draw(spans(3))
    else:  # a span in the encoder (MDTv2: containing its long skips) or in the decoder
        enc, total = len(model.encoder), len(model.encoder) + len(model.decoder)
        start, end = data.draw(st.sampled_from([(0, enc), (1, enc), (enc, total), (total - 1, total)]))
    m = model.route_tokens(start, kwargs["ids_keep"].shape[1] if masked else None)
    plan = Route(start, end, 0.0)(2, m, generator=g)
    assert plan.plan.num_kept == m
    with torch.no_grad():
        assert torch.equal(model(x, t, y, route=plan, **kwargs), model(x, t, y, **kwargs))


def test_routing_changes_the_output_and_draws_follow_the_generator():
    model = tiny_dit(depth=3)
    x, t, y = inputs(model)
    a = Route(0, 3, 0.5)(2, model.num_tokens, generator=torch.Generator().manual_seed(3))
    b = Route(0, 3, 0.5)(2, model.num_tokens, generator=torch.Generator().manual_seed(3))
    c = Route(0, 3, 0.5)(2, model.num_tokens, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.ids_keep, b.ids_keep) and not torch.equal(a.ids_keep, c.ids_keep)
    assert a.plan.num_kept == model.num_tokens // 2 and int(a.plan.mask.sum()) == 2 * model.num_tokens // 2
    with torch.no_grad():
        assert not torch.allclose(model(x, t, y, route=a), model(x, t, y), atol=1e-3)


def test_a_routed_model_loads_into_and_samples_as_the_plain_one(tmp_path):
    model = tiny_dit(depth=3)
    n_params = sum(p.numel() for p in model.parameters())
    model.train()
    x, t, y = inputs(model)
    plan = Route(1, 3, 0.5)(2, model.num_tokens, generator=torch.Generator().manual_seed(0))
    model(x, t, y, route=plan).pow(2).mean().backward()  # a routed training step's gradients
    assert sum(p.numel() for p in model.parameters()) == n_params  # routing adds no parameters
    model.save_pretrained(tmp_path)
    plain = DiT.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(plain(x, t, y), model.eval()(x, t, y))


def test_official_list_of_routes_and_official_counts():
    model = tiny_dit(depth=5)
    n = model.num_tokens  # 16
    first = Route(0, 2, 0.3)(2, n, generator=torch.Generator().manual_seed(0))
    second = Route(3, 5, 0.5)(2, n, generator=torch.Generator().manual_seed(1))
    assert first.plan.num_kept == n - int(n * 0.3) == 12  # TREAD routes int(n * ratio) tokens
    x, t, y = inputs(model)
    with torch.no_grad():
        both = model(x, t, y, route=[first, second])
        assert not torch.equal(both, model(x, t, y, route=first))


# --- FLOPs ------------------------------------------------------------------------------------


def small_dit() -> DiT:
    """64 tokens, 6 blocks, width 64, on the meta device (a FLOP count builds a copy: keep it small)."""
    with torch.device("meta"):
        return DiT(DiTConfig(input_size=16, patch_size=2, hidden_size=64, depth=6, num_heads=2, num_classes=10))


def block_flops(tokens: int, d: int) -> int:
    """Multiply-adds of one DiT block over ``tokens`` tokens (qkv, proj, MLP; attention; adaLN)."""
    return 12 * tokens * d * d + 2 * tokens * tokens * d + 6 * d * d


@settings(max_examples=8, deadline=None)
@given(data=st.data(), routed=st.integers(0, 63))
def test_flops_fall_by_what_the_routed_tokens_skip(data, routed):
    model = small_dit()
    start, end = data.draw(spans(6))
    n, d = 64, 64
    ratio = routed / n
    route = Route(start, end, ratio)
    k = route.num_kept(n)
    assert k == n - routed
    saved = forward_flops(model) - forward_flops(model, route=route)
    # Each block of the span runs on k of the n tokens: its token-linear work (projections,
    # MLP) falls linearly with the routed count, its attention with the square of the kept count.
    assert saved == (end - start) * (block_flops(n, d) - block_flops(k, d))
    assert saved == (end - start) * (12 * d * d * routed + 2 * d * (n * n - k * k))


def test_flops_are_linear_in_the_span_and_in_the_routed_share_of_the_linear_part():
    model = small_dit()
    plain = forward_flops(model)
    saved = [plain - forward_flops(model, route=Route(1, 1 + blocks, 0.5)) for blocks in range(1, 6)]
    assert len({b - a for a, b in pairwise(saved)}) == 1  # the same saving per routed block
    # With attention's quadratic term removed, the saving is linear in the routed count.
    d, n = 64, 64
    linear = [plain - forward_flops(model, route=Route(0, 6, r / n)) - 6 * 2 * d * (n * n - (n - r) ** 2) for r in range(0, 40, 8)]
    assert len({b - a for a, b in pairwise(linear)}) == 1 and linear[0] == 0


@settings(max_examples=4, deadline=None)
@given(data=st.data(), first=st.integers(0, 40), step=st.integers(1, 11))
def test_flops_are_linear_in_the_routed_fraction_once_attention_is_apart(data, first, step):
    """The FLOP count falls linearly with the routed fraction over the span, attention's quadratic term aside.

    For three routed counts in equal steps (``first``, ``first + step``, ``first + 2 step`` of the
    n tokens), the span's blocks see ``k = n - routed`` tokens: the count without attention's
    score and value products falls by the same amount at each step (linear in the routed
    fraction), and those products are ``2 k^2 d`` per span block, ``2 n^2 d`` per other block.
    """
    model = small_dit()
    n, d, depth = 64, 64, 6
    start, end = data.draw(spans(depth))
    routed = [first, first + step, first + 2 * step]
    counts = [forward_flop_counts(model, route=Route(start, end, r / n)) for r in routed]
    assert [Route(start, end, r / n).num_kept(n) for r in routed] == [n - r for r in routed]
    rest = [c.rest for c in counts]
    assert rest[0] - rest[1] == rest[1] - rest[2] > 0  # equal steps of the fraction, equal savings
    assert rest[0] - rest[1] == (end - start) * 12 * d * d * step  # projections and MLP: 12 d^2 per token
    for r, c in zip(routed, counts):
        k = n - r
        assert c.attention == (end - start) * 2 * k * k * d + (depth - end + start) * 2 * n * n * d
    plain = forward_flop_counts(model)
    assert plain.attention == depth * 2 * n * n * d and plain.rest - rest[0] == (end - start) * 12 * d * d * first


def test_flops_of_dit_s2_at_the_tread_setting():
    with torch.device("meta"):
        model = DiT.from_preset("DiT-S/2", input_size=32, num_classes=1000)
    span = default_span(12)
    assert span == (2, 9)  # TREAD's start_layer_idx 2, end_layer_idx 8 (inclusive)
    plain, routed = forward_flops(model), forward_flops(model, route=Route(*span, 0.5))
    assert routed < plain and abs(1 - routed / plain - 0.3054) < 1e-3  # 6.06 -> 4.21 GFLOPs


def test_flops_of_mdt_route_within_the_masked_pass():
    with torch.device("meta"):
        model = MaskedDiffusionTransformer.from_preset("MDTv2-S/2", input_size=16, num_classes=10)
    enc = len(model.encoder)
    route = Route(*default_span(12, enc), 0.5)
    masked, routed = forward_flops(model, 32), forward_flops(model, 32, route=route)
    # the span's encoder blocks see 16 of the 32 kept tokens; blocks 3..5 also fuse a long skip (2d -> d)
    expected = (route.end - route.start) * (block_flops(32, 384) - block_flops(16, 384)) + 3 * 16 * 2 * 384 * 384
    assert masked - routed == expected
    with pytest.raises(TypeError, match="Route"):
        forward_flops(model, route=(2, 6))


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((0, 2, 1.0), ValueError, r"ratio 1.0 is outside \[0, 1\)"),
        ((0, 2, -0.1), ValueError, r"ratio -0.1 is outside \[0, 1\)"),
        ((2, 2, 0.5), ValueError, r"span \[2, 2\) is empty"),
        ((3, 1, 0.5), ValueError, r"span \[3, 1\) is empty"),
        ((-1, 2, 0.5), ValueError, "start -1 is negative"),
        ((0.0, 2, 0.5), TypeError, "start"),  # the library's message, or the test suite's type-check hook
        ((0, 2, "half"), TypeError, "ratio"),
    ],
)
def test_bad_routes_are_refused(args, error, message):
    with pytest.raises(error, match=message):
        Route(*args)


def test_bad_routes_are_refused_by_the_models():
    dit = tiny_dit(depth=3)
    x, t, y = inputs(dit)
    g = torch.Generator().manual_seed(0)
    n = dit.num_tokens
    with pytest.raises(ValueError, match=r"span \[1, 5\) does not fit the model's 3 blocks"):
        dit(x, t, y, route=Route(1, 5, 0.5)(2, n, generator=g))
    with pytest.raises(ValueError, match=r"drawn for 2 samples of 10 tokens, but those blocks see 2 samples of 16"):
        dit(x, t, y, route=Route(0, 2, 0.5)(2, 10, generator=g))
    with pytest.raises(TypeError, match="RoutePlan"):  # the library's message, or the test suite's type-check hook
        dit(x, t, y, route=Route(0, 2, 0.5))
    with pytest.raises(ValueError, match="overlap or are out of order"):
        as_routes([Route(0, 2, 0.5)(2, n, generator=g), Route(1, 3, 0.5)(2, n, generator=g)])
    with pytest.raises(ValueError, match="duplicate"):
        route_from_ids_keep(0, 2, torch.tensor([[1, 1]]), n)

    v2 = tiny_mdt(v2=True, depth=6, decode_layer=2)  # encoder 0..3 (long skips 0->3, 1->2), decoder 4..5
    x, t, y = inputs(v2)
    with pytest.raises(ValueError, match=r"crosses the encoder/decoder boundary at block 4"):
        v2(x, t, y, route=Route(3, 5, 0.5)(2, n, generator=g))
    with pytest.raises(ValueError, match=r"long shortcuts .* end it at block 4 or later"):
        v2(x, t, y, route=Route(0, 2, 0.5)(2, n, generator=g))
    plan = v2.mask_sampler(2, n, generator=g)
    with pytest.raises(ValueError, match=f"those blocks see 2 samples of {plan.num_kept} tokens"):
        v2(x, t, y, ids_keep=plan.ids_keep, route=Route(1, 3, 0.5)(2, n, generator=g))  # drawn for n, not k
    assert v2.route_tokens(1, plan.num_kept) == plan.num_kept and v2.route_tokens(4, plan.num_kept) == n
    with pytest.raises(ValueError, match=r"route start 6 is not a block index in \[0, 6\)"):
        v2.route_tokens(6)
    with pytest.raises(ValueError, match="at least 6 blocks"):
        default_span(5)
