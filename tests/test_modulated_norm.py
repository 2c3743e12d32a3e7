"""adaLN's modulated LayerNorm that recomputes the normalised tokens: same output and gradients, less kept."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mdtblocks.blocks import modulated_layer_norm


def plain(x, shift, scale, eps=1e-6):
    return torch.addcmul(shift.unsqueeze(1), F.layer_norm(x, x.shape[-1:], eps=eps), 1 + scale.unsqueeze(1))


def inputs(b, n, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g, dtype=dtype) * 3 + 1
    return x, torch.randn(b, d, generator=g, dtype=dtype), torch.randn(b, d, generator=g, dtype=dtype)


def grads(fn, x, shift, scale, grad, eps=1e-6):
    leaves = [t.clone().requires_grad_() for t in (x, shift, scale)]
    out = fn(*leaves, eps)
    out.backward(grad)
    return [out] + [t.grad for t in leaves]


@pytest.mark.parametrize("b,n,d", [(2, 5, 8), (1, 1, 4), (3, 16, 12)])
def test_output_and_every_gradient_match_the_plain_composition_in_float64(b, n, d):
    x, shift, scale = inputs(b, n, d)
    grad = torch.randn(b, n, d, dtype=torch.float64)
    for name, ours, ref in zip(("output", "x", "shift", "scale"), grads(modulated_layer_norm, x, shift, scale, grad),
                               grads(plain, x, shift, scale, grad)):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12, msg=name)


def test_gradcheck():
    x, shift, scale = (t.requires_grad_() for t in inputs(2, 3, 5, seed=1))
    assert torch.autograd.gradcheck(lambda a, b, c: modulated_layer_norm(a, b, c, 1e-5), (x, shift, scale))


def test_float32_forward_is_bit_identical_and_gradients_are_close():
    x, shift, scale = inputs(4, 64, 32, dtype=torch.float32, seed=2)
    grad = torch.randn(4, 64, 32)
    ours, ref = grads(modulated_layer_norm, x, shift, scale, grad), grads(plain, x, shift, scale, grad)
    assert torch.equal(ours[0], ref[0])
    for name, a, b in zip(("x", "shift", "scale"), ours[1:], ref[1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


def test_only_the_inputs_that_need_a_gradient_get_one():
    x, shift, scale = inputs(2, 3, 4)
    x.requires_grad_()
    modulated_layer_norm(x, shift, scale).sum().backward()
    assert x.grad is not None and shift.grad is None and scale.grad is None


def saved_bytes(fn, *args):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return total


def test_keeps_one_token_tensor_less_than_the_plain_composition():
    x, shift, scale = (t.float().requires_grad_() for t in inputs(4, 32, 16))
    tokens = 4 * 32 * 16 * 4  # one (b, n, d) float32 tensor
    ours, ref = saved_bytes(modulated_layer_norm, x, shift, scale), saved_bytes(plain, x, shift, scale)
    assert ref - ours >= tokens, (ref, ours)
    assert ours < 1.2 * tokens, ours  # the input, plus per-token statistics and the scale


def test_under_autocast_and_without_grad_it_is_the_plain_composition():
    x, shift, scale = inputs(2, 8, 16, dtype=torch.float32, seed=3)
    with torch.no_grad():
        assert torch.equal(modulated_layer_norm(x, shift, scale), plain(x, shift, scale))
    x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, ref = modulated_layer_norm(x, shift, scale), plain(x, shift, scale)
    assert ours.dtype == ref.dtype
    torch.testing.assert_close(ours, ref)
