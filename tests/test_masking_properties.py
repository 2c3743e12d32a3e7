"""Masking invariants: mask plans, the side-interpolater, and what the encoder may see."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import inputs, tiny_mdt
from mdtblocks.masking import MaskSampler, SideInterpolater, plan_from_ids_keep

SETTINGS = settings(max_examples=25, deadline=None)


@SETTINGS
@given(b=st.integers(1, 4), n=st.integers(1, 64), ratio=st.floats(0.0, 0.9), width=st.floats(0.0, 0.1), seed=st.integers(0, 2**31))
def test_sampled_plans_are_consistent(b, n, ratio, width, seed):
    sampler = MaskSampler(ratio, width)
    plan = sampler(b, n, generator=torch.Generator().manual_seed(seed))
    k = plan.num_kept
    assert sampler.num_kept(n, ratio + width) <= k <= sampler.num_kept(n, ratio)
    assert plan.ids_keep.shape == (b, k)
    # k distinct indices per row
    assert all(len(set(row.tolist())) == k for row in plan.ids_keep)
    # k zeros per row, at the kept positions
    assert torch.equal((plan.mask == 0).sum(1), torch.full((b,), k))
    assert bool((plan.mask.gather(1, plan.ids_keep) == 0).all())
    # ids_restore inverts the shuffle whose first k entries are ids_keep
    shuffle = plan.ids_restore.argsort(1)
    assert torch.equal(shuffle[:, :k], plan.ids_keep)
    assert torch.equal(shuffle.gather(1, plan.ids_restore), torch.arange(n).expand(b, n))


def test_sampler_is_a_function_of_the_generator():
    sampler = MaskSampler(0.3, 0.2)
    a = sampler(3, 16, generator=torch.Generator().manual_seed(7))
    b = sampler(3, 16, generator=torch.Generator().manual_seed(7))
    c = sampler(3, 16, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.ids_keep, b.ids_keep) and not torch.equal(a.ids_keep, c.ids_keep)


def test_random_ratio_covers_its_range():
    sampler = MaskSampler(0.3, 0.2)
    g = torch.Generator().manual_seed(0)
    ks = {sampler(1, 100, generator=g).num_kept for _ in range(200)}
    assert min(ks) <= 52 and max(ks) >= 68 and ks <= set(range(50, 71))


def test_sampler_rejects_bad_ratios():
    with pytest.raises(ValueError, match="1.2"):
        MaskSampler(1.2)
    with pytest.raises(ValueError, match="range"):
        MaskSampler(0.9, 0.3)
    with pytest.raises(TypeError, match="Generator"):
        MaskSampler(0.3)(2, 4, generator=0)


@st.composite
def kept_rows(draw, max_n: int = 30, max_batch: int = 3):
    """``(n, rows)``: ``b`` rows of ``k`` distinct indices in ``[0, n)``, drawn by Hypothesis (replayable)."""
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, n))
    return n, [draw(st.permutations(range(n)))[:k] for _ in range(draw(st.integers(1, max_batch)))]


@SETTINGS
@given(case=kept_rows())
@example(case=(1, [[0]]))  # one token
@example(case=(5, [[4, 0, 2, 1, 3], [0, 1, 2, 3, 4]]))  # all tokens kept (none masked)
@example(case=(9, [[8], [0], [4]]))  # k = 1 of an odd count
def test_plan_from_ids_keep_matches_sampler_layout(case):
    n, rows = case
    ids = torch.tensor(rows)
    b, k = ids.shape
    plan = plan_from_ids_keep(ids, n)
    shuffle = plan.ids_restore.argsort(1)
    assert torch.equal(shuffle[:, :k], ids)
    assert torch.equal(plan.mask.sum(1), torch.full((b,), float(n - k)))
    for i in range(b):  # the mask is 0 exactly on the kept tokens
        assert sorted(torch.nonzero(plan.mask[i] == 0).flatten().tolist()) == sorted(rows[i])


def test_side_interpolater_passes_kept_tokens_unchanged():
    torch.manual_seed(0)
    side = SideInterpolater(16, 2, 2.0, (3, 3))
    for p in side.parameters():
        torch.nn.init.normal_(p, std=0.3)
    kept = torch.randn(2, 4, 16)
    ids = torch.tensor([[0, 5, 2, 8], [7, 1, 3, 4]])
    pos = torch.randn(1, 9, 16)
    out = side(kept, torch.randn(2, 16), ids, pos)
    for i in range(2):
        torch.testing.assert_close(out[i, ids[i]], kept[i] + pos[0, ids[i]], rtol=0, atol=0)
        masked = [j for j in range(9) if j not in ids[i].tolist()]
        assert not torch.allclose(out[i, masked], side.mask_token[0].expand(len(masked), -1) + pos[0, masked])


@pytest.mark.parametrize("v2", [True, False])
def test_masked_values_never_reach_the_encoder(v2):
    model = tiny_mdt(v2=v2)
    x, t, y = inputs(model)
    ids = torch.tensor([[0, 3, 9, 14, 15], [1, 2, 4, 8, 12]])
    captured = []
    hook = model.encoder[-1].register_forward_hook(lambda m, a, out: captured.append(out))
    x2 = x.clone()
    # overwrite every masked patch (2x2 pixels each on a 4x4 grid)
    for b in range(2):
        for j in set(range(16)) - set(ids[b].tolist()):
            r, c = divmod(j, 4)
            x2[b, :, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = 100.0
    with torch.no_grad():
        out1 = model(x, t, y, ids_keep=ids)
        out2 = model(x2, t, y, ids_keep=ids)
    hook.remove()
    assert torch.equal(captured[0], captured[1])
    if not v2:  # MDT v1 has no dense input shortcut: the whole masked pass ignores masked patches
        assert torch.equal(out1, out2)
    else:  # MDTv2's dense shortcut feeds all input tokens to the decoder
        assert not torch.allclose(out1, out2)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), v2=st.booleans())
def test_output_is_invariant_to_ids_keep_order(seed, v2):
    model = tiny_mdt(v2=v2)
    x, t, y = inputs(model)
    g = torch.Generator().manual_seed(seed)
    plan = model.mask_sampler(2, model.num_tokens, generator=g)
    perm = torch.randperm(plan.num_kept, generator=g)
    with torch.no_grad():
        a = model(x, t, y, ids_keep=plan.ids_keep)
        b = model(x, t, y, ids_keep=plan.ids_keep[:, perm])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_keeping_every_token_differs_from_plain_pass_only_by_side_path():
    # with all tokens kept, the side-interpolater's shortcut returns its input: same as the plain pass
    model = tiny_mdt(v2=True)
    x, t, y = inputs(model)
    ids = torch.arange(16).expand(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y, ids_keep=ids), model(x, t, y), rtol=1e-5, atol=1e-5)
