"""The MLP that recomputes GELU in the backward pass gives the plain MLP's output and gradients, and keeps less."""

from __future__ import annotations

import pytest
import torch

from mdtblocks.blocks import Mlp


def run(mlp, x, grad):
    x = x.clone().requires_grad_()
    mlp.zero_grad(set_to_none=True)
    out = mlp(x)
    out.backward(grad)
    return [out, x.grad] + [p.grad for p in mlp.parameters()]


@pytest.mark.parametrize("shape", [(2, 5, 8), (1, 1, 8), (3, 16, 8)])
def test_same_output_and_gradients_as_the_plain_mlp_in_float64(shape):
    torch.manual_seed(0)
    mlp = Mlp(8, 24).double()
    x, grad = torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64)
    ours = run(mlp, x, grad)
    mlp.recompute_activation = False
    ref = run(mlp, x, grad)
    for name, a, b in zip(["output", "x", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"], ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def test_gradcheck():
    torch.manual_seed(1)
    mlp = Mlp(4, 6).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    params = tuple(mlp.parameters())
    assert torch.autograd.gradcheck(lambda x, *p: torch.func.functional_call(mlp, dict(zip([n for n, _ in mlp.named_parameters()], p)), (x,)), (x, *params))


def saved_bytes(mlp, x):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size() if t.numel() > 64 else 0  # activations, not scalars
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        mlp(x)
    return total


def test_keeps_fc1_output_but_not_the_gelu_output():
    mlp = Mlp(16, 64)
    x = torch.randn(4, 32, 16, requires_grad=True)
    ours = saved_bytes(mlp, x)
    mlp.recompute_activation = False
    plain = saved_bytes(mlp, x)
    hidden = 4 * 32 * 64 * 4  # one (b, n, mlp_hidden) float32 tensor
    assert plain - ours >= hidden, (plain, ours)


def test_plain_path_under_autocast_and_without_gradients():
    mlp = Mlp(8, 16)
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        ref = mlp.fc2(mlp.act(mlp.fc1(x)))
        torch.testing.assert_close(mlp(x), ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert mlp(x.requires_grad_()).dtype == torch.bfloat16


