"""Regional compilation (``compile_blocks`` / ``--compile-blocks``): the eager function, few graphs, same state dict."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch._dynamo.utils
from helpers import tiny_mdt
from training_utils import TINY, load_recipe, max_abs_diff, weights

from mdtblocks.blocks import compile_blocks
from mdtblocks.masking import MaskSampler
from mdtblocks.training import loop as loop_module


def graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def test_compiled_blocks_compute_the_eager_function_with_a_bounded_graph_count(no_shape_checks) -> None:
    # backend="eager" runs dynamo's captured graphs with eager kernels (graphs are counted without
    # inductor's code generation); the traced graph may order a few sums differently, hence ~1e-7.
    model = tiny_mdt(depth=4, decode_layer=2)  # MDTv2: blocks with and without a fused skip stream
    model.check_values = False
    reference = tiny_mdt(depth=4, decode_layer=2)
    reference.load_state_dict(model.state_dict())
    assert compile_blocks(model, backend="eager") == len(model.encoder) + len(model.decoder) + len(model.side_interpolater.blocks)
    assert model.state_dict().keys() == reference.state_dict().keys()  # no wrapper prefixes
    sampler = MaskSampler(0.2, 0.5)
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(2, 3, 8, 8, generator=g), torch.tensor([3, 700]), torch.tensor([1, 4])
    counts, kept = [], []
    for _ in range(6):
        plan = sampler(2, model.num_tokens, generator=g)
        kept.append(plan.num_kept)
        for net in (model, reference):
            net.zero_grad()
            (net(x, t, y).square().mean() + net(x, t, y, ids_keep=plan.ids_keep).square().mean()).backward()
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
        with torch.no_grad():
            # outputs are O(1): 1e-6 is float32 rounding, a wrong bias or a dropped token moves them by ~1e-1
            torch.testing.assert_close(model(x, t, y, ids_keep=plan.ids_keep), reference(x, t, y, ids_keep=plan.ids_keep),
                                       rtol=1e-5, atol=1e-6)
        counts.append(graphs())
    assert len(set(kept)) >= 3, kept  # the kept count did change
    assert counts[0] > 0, "no block was compiled"
    # Once the kept count has changed (it becomes a dynamic dimension), new counts add no graph.
    first_new = next(i for i, k in enumerate(kept) if k not in kept[:i] and i >= 2)
    assert counts[-1] == counts[first_new - 1], (kept, counts)
    assert counts[-1] <= 16, counts


def test_a_model_without_blocks_is_refused() -> None:
    with pytest.raises(ValueError, match="compile_blocks found no AdaLNBlock in Linear"):
        compile_blocks(torch.nn.Linear(2, 2))


def test_trainer_compile_blocks_equals_eager(no_shape_checks, tmp_path, monkeypatch) -> None:
    flags = TINY + ["--steps", "2", "--ckpt-every", "2", "--num-samples", "0", "--ema-decay", "0.5"]
    recipe = load_recipe("mdtv2_imagenet256")
    recipe.main(flags + ["--out", str(tmp_path / "eager")])
    compiled = []

    def eager_backend(model, **kwargs):
        compiled.append(compile_blocks(model, backend="eager"))
        return compiled[-1]

    monkeypatch.setattr(loop_module, "compile_blocks", eager_backend)
    recipe.main(flags + ["--out", str(tmp_path / "blocks"), "--compile-blocks"])
    assert compiled and compiled[0] > 0, "--compile-blocks did not compile the blocks"
    for name in ("model.safetensors", "ema.safetensors"):
        a = weights(tmp_path / "eager/checkpoints/0000002", name)
        b = weights(tmp_path / "blocks/checkpoints/0000002", name)
        assert a.keys() == b.keys()
        assert max_abs_diff(a, b) < 1e-5, name
