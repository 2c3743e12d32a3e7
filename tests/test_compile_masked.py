"""torch.compile of the masked pass: one graph for every kept-token count, and the eager function."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch._dynamo.utils
from helpers import tiny_mdt

from mdtblocks.masking import MaskSampler, mark_kept_dynamic


@pytest.mark.parametrize("mark", [True, False])
def test_marked_kept_count_is_traced_once_and_equals_eager(no_shape_checks, mark):
    # Dynamo's graph count is what recompiles cost; backend="eager" counts graphs without
    # inductor's minutes of code generation (inductor numerics: the trainer's --compile test).
    model = tiny_mdt(depth=3, decode_layer=1)
    model.check_values = False  # value checks read tensors: graph breaks
    compiled = torch.compile(model, backend="eager")
    sampler = MaskSampler(0.3, 0.4)
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(2, 3, 8, 8, generator=g), torch.tensor([3, 700]), torch.tensor([1, 4])
    kept = []
    with torch.no_grad():
        for _ in range(5):
            plan = sampler(2, model.num_tokens, generator=g)
            if mark:
                mark_kept_dynamic(plan)
            kept.append(plan.num_kept)
            ours = compiled(x, t, y, ids_keep=plan.ids_keep)
            torch.testing.assert_close(ours, model(x, t, y, ids_keep=plan.ids_keep), rtol=1e-5, atol=1e-6)
    assert len(set(kept)) >= 2, kept  # the draws did vary k
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    # Marked: one symbolic-k graph. Unmarked: the first k static, then recompiles as dynamic.
    assert graphs == 1 if mark else graphs >= 2, (kept, graphs)
