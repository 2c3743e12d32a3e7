"""Property tests of the blocks over random valid configurations (Hypothesis).

Every random tensor comes from a generator seeded by a Hypothesis-drawn ``seed`` (or is drawn by
Hypothesis itself), never from the global torch generator, so that a failure replays from its
printed example; ``@example`` pins the edges (one token, patch 1, odd grids, k = 1, all kept).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mdtblocks.blocks import (
    AdaLNBlock,
    FinalLayer,
    PatchEmbed,
    RelativePositionBias,
    SelfAttention,
    attention,
    gather_relative_index,
    patchify,
    relative_position_index,
    sincos_2d,
    unpatchify,
)

SETTINGS = settings(max_examples=25, deadline=None)
SHAPES = settings(max_examples=60, deadline=None)  # cheap shape properties: more examples
SEEDS = st.integers(0, 2**32 - 1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@st.composite
def kept_tokens(draw, max_side: int = 5, max_batch: int = 3):
    """``(grid, ids)``: a ``gh x gw`` grid and ``b`` rows of ``k`` distinct token indices, all drawn by Hypothesis."""
    gh, gw = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    n = gh * gw
    k = draw(st.integers(1, n))
    rows = [draw(st.permutations(range(n)))[:k] for _ in range(draw(st.integers(1, max_batch)))]
    return (gh, gw), rows


@SHAPES
@given(p=st.integers(1, 4), gh=st.integers(1, 5), gw=st.integers(1, 5), c=st.integers(1, 4), b=st.integers(1, 3), seed=SEEDS)
@example(p=1, gh=1, gw=1, c=1, b=1, seed=0)  # one token, patch 1
@example(p=1, gh=3, gw=5, c=3, b=2, seed=1)  # patch 1, odd non-square grid
@example(p=3, gh=5, gw=3, c=2, b=1, seed=2)  # odd patch and grid
def test_patchify_unpatchify_invert(p, gh, gw, c, b, seed):
    x = torch.randn(b, c, gh * p, gw * p, generator=gen(seed))
    tokens = patchify(x, p)
    assert tokens.shape == (b, gh * gw, p * p * c)
    assert torch.equal(unpatchify(tokens, p, c, (gh, gw)), x)


@SHAPES
@given(p=st.integers(1, 4), gh=st.integers(1, 4), gw=st.integers(1, 4), c=st.integers(1, 4), d=st.sampled_from([8, 16]), seed=SEEDS)
@example(p=1, gh=1, gw=1, c=1, d=8, seed=0)  # one token, patch 1
@example(p=1, gh=3, gw=1, c=3, d=16, seed=1)  # patch 1, odd grid
@example(p=3, gh=3, gw=2, c=2, d=8, seed=2)
def test_patch_embed_is_linear_map_of_patchify(p, gh, gw, c, d, seed):
    embed = PatchEmbed(p, c, d)
    with torch.no_grad():
        for param in embed.parameters():
            param.copy_(torch.randn(param.shape, generator=gen(seed + 1)))
    x = torch.randn(2, c, gh * p, gw * p, generator=gen(seed))
    out = embed(x)
    assert out.shape == (2, gh * gw, d)
    # the conv equals a linear map of the raw patches in (p, q, c) order
    w = embed.proj.weight.permute(0, 2, 3, 1).reshape(d, -1)
    torch.testing.assert_close(out, patchify(x, p) @ w.T + embed.proj.bias, rtol=1e-4, atol=1e-5)


@SETTINGS
@given(case=kept_tokens(), h=st.integers(1, 3), seed=SEEDS)
@example(case=((1, 1), [[0]]), h=1, seed=0)  # one token
@example(case=((3, 5), [[14], [0]]), h=2, seed=1)  # k = 1, odd grid
@example(case=((3, 3), [[8, 0, 4, 2, 6, 1, 3, 5, 7]]), h=3, seed=2)  # all tokens kept, out of order
@example(case=((5, 1), [[4, 0, 2], [1, 3, 0]]), h=1, seed=3)  # a one-column grid
def test_relative_bias_gather_equals_full_table_indexing(case, h, seed):
    (gh, gw), rows = case
    b, k = len(rows), len(rows[0])
    bias = RelativePositionBias((gh, gw), h)
    with torch.no_grad():
        table = bias.relative_position_bias_table
        table.copy_(torch.randn(table.shape, generator=gen(seed)))
    ids = torch.tensor(rows)
    full = bias()  # (1, h, n, n)
    expected = torch.stack([full[0][:, ids[i]][:, :, ids[i]] for i in range(b)])
    got = bias(gather_relative_index(bias.index, ids))
    assert got.shape == (b, h, k, k)
    assert torch.equal(got, expected)


def test_relative_index_is_translation_invariant():
    idx = relative_position_index((3, 4))
    # token (0,0)->(1,1) and (1,2)->(2,3) have the same offset, hence the same row
    assert idx[0, 5] == idx[6, 11]
    assert idx.max() < (2 * 3 - 1) * (2 * 4 - 1)
    assert torch.equal(idx.diagonal(), torch.full((12,), idx[0, 0].item()))


@SETTINGS
@given(b=st.integers(1, 3), h=st.integers(1, 3), n=st.integers(1, 9), e=st.sampled_from([4, 8]), with_bias=st.booleans())
def test_attention_backends_agree_in_value_and_gradient(b, h, n, e, with_bias):
    g = torch.Generator().manual_seed(b * 100 + n)
    base = [torch.randn(b, h, n, e, generator=g, dtype=torch.float64) for _ in range(3)]
    bias0 = torch.randn(b, h, n, n, generator=g, dtype=torch.float64) if with_bias else None
    results = {}
    for backend in ("math", "sdpa"):
        q, k, v = (t.clone().requires_grad_() for t in base)
        bias = bias0.clone().requires_grad_() if bias0 is not None else None
        out = attention(q, k, v, bias, backend)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads = [q.grad, k.grad, v.grad] + ([bias.grad] if bias is not None else [])
        results[backend] = (out, grads)
    torch.testing.assert_close(results["sdpa"][0], results["math"][0])
    for gs, gm in zip(results["sdpa"][1], results["math"][1]):
        torch.testing.assert_close(gs, gm)


def test_self_attention_backends_agree_with_relative_bias_gradients():
    torch.manual_seed(0)
    attn = SelfAttention(16, 2, grid=(3, 3)).double()
    torch.nn.init.normal_(attn.rel_pos_bias.relative_position_bias_table)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    outs, grads = {}, {}
    for backend in ("math", "sdpa"):
        attn.backend = backend
        attn.zero_grad()
        out = attn(x)
        out.square().sum().backward()
        outs[backend] = out.detach()
        grads[backend] = attn.rel_pos_bias.relative_position_bias_table.grad.clone()
    torch.testing.assert_close(outs["sdpa"], outs["math"])
    torch.testing.assert_close(grads["sdpa"], grads["math"])
    assert grads["math"].abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="xformers runs on CUDA only")
def test_xformers_backend_agrees_with_math():  # pragma: no cover - needs a GPU
    pytest.importorskip("xformers")
    q, k, v = (torch.randn(2, 3, 10, 16, device="cuda") for _ in range(3))
    bias = torch.randn(2, 3, 10, 10, device="cuda")
    torch.testing.assert_close(attention(q, k, v, bias, "xformers"), attention(q, k, v, bias, "math"), rtol=1e-3, atol=1e-3)


def test_xformers_backend_refuses_cpu_tensors():
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises((ValueError, ImportError), match="xformers"):
        attention(q, q, q, None, "xformers")


def test_unknown_backend_is_named():
    with pytest.raises((ValueError, TypeError), match="flash9"):
        SelfAttention(8, 2, backend="flash9")


@SHAPES
@given(d=st.sampled_from([8, 16]), heads=st.sampled_from([1, 2]), n=st.integers(1, 9), skip=st.booleans(), rel=st.booleans(), seed=SEEDS)
@example(d=8, heads=1, n=1, skip=False, rel=False, seed=0)  # one token
def test_adaln_block_shapes_and_zero_init_identity(d, heads, n, skip, rel, seed):
    side = 3
    grid = (side, side) if rel else None
    n = side * side if rel else n
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the block's own initialisation draws from the global generator
        block = AdaLNBlock(d, heads, 2.0, grid=grid, fuses_skip=skip)
        block.reset_parameters()
    g = gen(seed)
    x, c = torch.randn(2, n, d, generator=g), torch.randn(2, d, generator=g)
    s = torch.randn(2, n, d, generator=g) if skip else None
    out = block(x, c, skip=s)
    assert out.shape == x.shape
    if not skip:  # adaLN-Zero: a fresh block is the identity
        torch.testing.assert_close(out, x)


def test_adaln_block_skip_contract():
    block = AdaLNBlock(8, 2, fuses_skip=True)
    with pytest.raises(ValueError, match="skip"):
        block(torch.randn(1, 4, 8), torch.randn(1, 8))
    with pytest.raises(ValueError, match="skip"):
        AdaLNBlock(8, 2)(torch.randn(1, 4, 8), torch.randn(1, 8), skip=torch.randn(1, 4, 8))


def test_final_layer_zero_init_and_shape():
    layer = FinalLayer(16, 2, 3)
    layer.reset_parameters()
    out = layer(torch.randn(2, 5, 16), torch.randn(2, 16))
    assert out.shape == (2, 5, 12) and out.abs().max() == 0


def test_sincos_table_layout():
    table = sincos_2d(8, (2, 3))
    assert table.shape == (6, 8) and table.dtype == torch.float32
    # first half encodes the column, second half the row: tokens in one row share the second half
    torch.testing.assert_close(table[0, 4:], table[2, 4:])
    torch.testing.assert_close(table[0, :4], table[3, :4])
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(6, (2, 2))


@SHAPES
@given(b=st.integers(1, 4), d=st.sampled_from([4, 8, 12]), freq=st.integers(1, 17), classes=st.integers(1, 9), p=st.sampled_from([0.0, 0.1]), seed=SEEDS)
@example(b=1, d=4, freq=1, classes=1, p=0.0, seed=0)
def test_embedders_shapes(b, d, freq, classes, p, seed):
    from mdtblocks.blocks import LabelEmbedder, TimestepEmbedder, timestep_frequencies

    g = gen(seed)
    t = torch.rand(b, generator=g) * 999
    feats = timestep_frequencies(t, freq)
    assert feats.shape == (b, freq) and bool((feats.abs() <= 1).all())
    assert TimestepEmbedder(d, freq)(t).shape == (b, d)
    labels = LabelEmbedder(classes, d, has_null=p > 0)
    assert labels.embedding_table.num_embeddings == classes + (p > 0)
    y = torch.randint(0, classes, (b,), generator=g)
    assert labels(y).shape == (b, d)
    assert labels.null_class == (classes if p > 0 else None)
