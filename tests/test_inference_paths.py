"""Without gradients, attention and the MLP take their inference kernels, and compute the same function.

On a CPU, attention with the relative bias runs PyTorch's fused flash kernel (which takes an
additive mask but gives no mask gradient) instead of ``biased_attention``, and the MLP writes
its GELU in place over fc1's output. Both are checked against the math path in float64, and
the kernels actually run are read from the dispatcher.
"""

from __future__ import annotations

import pytest
import torch
from helpers import inputs, randomize, tiny_mdt
from torch.utils._python_dispatch import TorchDispatchMode

from mdtblocks.blocks import Mlp, SelfAttention

FLASH = "aten._scaled_dot_product_flash_attention_for_cpu"
SDPA = {FLASH, "aten.scaled_dot_product_attention"}  # inference mode dispatches the op before it picks its kernel
BIASED = "mdtblocks.biased_attention_forward"


class OpLog(TorchDispatchMode):
    """Names of the operators dispatched while active."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func.overloadpacket._qualified_op_name).replace("::", "."))
        return func(*args, **(kwargs or {}))


def ops(fn):
    with OpLog() as log:
        out = fn()
    return out, set(log.names)


def attention_layer(backend="sdpa", dtype=torch.float64):
    layer = randomize(SelfAttention(24, 3, grid=(4, 4), backend=backend), seed=2, std=0.5).to(dtype)
    return layer


@pytest.mark.parametrize("grad_mode", ["no_grad", "inference_mode"])
def test_attention_without_gradients_runs_sdpa_and_matches_math(grad_mode):
    x = torch.randn(3, 16, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    layer = attention_layer()
    reference = attention_layer(backend="math")
    context = torch.no_grad if grad_mode == "no_grad" else torch.inference_mode
    with context():
        out, names = ops(lambda: layer(x))
        ref = reference(x)
    assert SDPA & names and BIASED not in names, names
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_attention_that_needs_gradients_keeps_the_biased_kernel():
    x = torch.randn(3, 16, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _, names = ops(lambda: attention_layer()(x))  # the bias table requires grad
    assert BIASED in names and not SDPA & names, names


def test_mlp_without_gradients_writes_gelu_in_place_and_matches_the_plain_mlp():
    mlp = randomize(Mlp(16, 64), seed=3, std=0.5).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x), approximate="tanh"))
    with torch.no_grad():
        out, names = ops(lambda: mlp(x))
    assert "aten.gelu" not in names and "aten.sigmoid_" in names, names
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_mlp_under_autocast_keeps_pytorchs_gelu():
    mlp = Mlp(16, 64)  # bf16: one rounding in PyTorch's kernel beats five in the in-place passes
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, names = ops(lambda: mlp(torch.randn(2, 5, 16)))
    assert "aten.gelu" in names, names


def test_whole_model_forward_without_gradients_matches_the_math_backend_plain_and_masked():
    fast = tiny_mdt().double()
    slow = tiny_mdt(attention_backend="math").double()
    x, t, y = (v.double() if v.is_floating_point() else v for v in inputs(fast, batch=3))
    plan = fast.mask_sampler(3, fast.num_tokens, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out, names = ops(lambda: fast(x, t, y))
        torch.testing.assert_close(out, slow(x, t, y), rtol=1e-11, atol=1e-11)
        # the masked pass: a bias per sample, gathered for each sample's kept tokens
        masked, masked_names = ops(lambda: fast(x, t, y, ids_keep=plan.ids_keep))
        torch.testing.assert_close(masked, slow(x, t, y, ids_keep=plan.ids_keep), rtol=1e-11, atol=1e-11)
    assert FLASH in names and "aten.gelu" not in names
    assert FLASH in masked_names and BIASED not in masked_names
