"""Both forms of the tanh GELU in mdtblocks.blocks.gelu are PyTorch's tanh GELU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mdtblocks.blocks import gelu as G


def ref(x):
    return F.gelu(x, approximate="tanh")


# (40, 9000) spans two row blocks of 2^18 elements; (3, 300000) has rows wider than a block
SHAPES = [(10001,), (2, 5, 8), (40, 9000), (3, 300000), (0, 4)]


@pytest.mark.parametrize("shape", SHAPES)
def test_both_forms_are_the_tanh_gelu_in_float64(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4
    torch.testing.assert_close(G.gelu_tanh_as_sigmoid(x), ref(x), rtol=1e-13, atol=1e-13)
    y = x.clone()
    out = G.gelu_tanh_(y)
    assert out.data_ptr() == y.data_ptr()  # in place
    torch.testing.assert_close(y, ref(x), rtol=1e-13, atol=1e-13)


def test_covers_the_tails_and_tells_the_erf_gelu_apart():
    x = torch.linspace(-30, 30, 20001, dtype=torch.float64)
    torch.testing.assert_close(G.gelu_tanh_(x.clone()), ref(x), rtol=1e-13, atol=1e-13)
    assert (F.gelu(x) - ref(x)).abs().max() > 1e-4  # the other GELU fails the tolerance above


def test_float32_is_as_close_to_the_exact_value_as_pytorchs_kernel():
    x = torch.randn(64, 1536, generator=torch.Generator().manual_seed(1)) * 3
    exact = ref(x.double())
    bound = dict(rtol=1e-6, atol=1e-6)  # a few float32 rounding steps at |x| up to ~15
    torch.testing.assert_close(ref(x).double(), exact, **bound)  # PyTorch's kernel meets it too
    torch.testing.assert_close(G.gelu_tanh_(x.clone()).double(), exact, **bound)
    torch.testing.assert_close(G.gelu_tanh_as_sigmoid(x).double(), exact, **bound)


def test_the_sigmoid_form_has_the_tanh_gelus_gradient():
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(G.gelu_tanh_as_sigmoid, (x,))
    grad = torch.randn(7, 5, dtype=torch.float64)
    (ours,) = torch.autograd.grad(G.gelu_tanh_as_sigmoid(x), x, grad)
    torch.testing.assert_close(ours, torch.ops.aten.gelu_backward(grad, x.detach(), approximate="tanh"), rtol=1e-12, atol=1e-12)


def test_a_strided_tensor_is_refused_by_name():
    with pytest.raises(ValueError, match=r"contiguous.*shape \(4, 3\)"):
        G.gelu_tanh_(torch.zeros(3, 4).t())


def test_the_bias_goes_in_before_the_gelu_and_a_wrong_one_is_refused():
    x = torch.randn(40, 9000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    bias = torch.randn(9000, dtype=torch.float64)
    torch.testing.assert_close(G.gelu_tanh_(x.clone(), bias), ref(x + bias), rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match=r"bias of shape \(40,\).*9000"):
        G.gelu_tanh_(x, bias[:40])
