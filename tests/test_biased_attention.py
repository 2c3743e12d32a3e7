"""The CPU kernel for attention with a bias computes the reference function, in value and every gradient."""

from __future__ import annotations

import importlib

import jaxtyping
import pytest
import torch
from einops import rearrange

from mdtblocks.blocks.attention import attention
from mdtblocks.blocks.biased_attention import biased_attention


def reference(qkv, bias, num_heads):
    q, k, v = rearrange(qkv, "b n (three h e) -> three b h n e", three=3, h=num_heads)
    return rearrange(attention(q, k, v, bias, backend="math"), "b h n e -> b n (h e)")


@pytest.mark.parametrize("shared_bias", [True, False], ids=["bias-shared-by-the-batch", "bias-per-sample"])
@pytest.mark.parametrize("b,n,h,e", [(3, 7, 2, 5), (2, 16, 4, 8), (1, 1, 1, 3)])
def test_value_and_gradients_match_the_math_path_in_float64(shared_bias, b, n, h, e):
    g = torch.Generator().manual_seed(b * 100 + n)
    qkv = torch.randn(b, n, 3 * h * e, generator=g, dtype=torch.float64)
    bias = torch.randn(1 if shared_bias else b, h, n, n, generator=g, dtype=torch.float64)
    grad = torch.randn(b, n, h * e, generator=g, dtype=torch.float64)
    results = []
    for fn in (biased_attention, reference):
        qkv_ = qkv.clone().requires_grad_()
        bias_ = bias.clone().requires_grad_()
        out = fn(qkv_, bias_, h)
        out.backward(grad)
        results.append((out, qkv_.grad, bias_.grad))
    for name, ours, ref in zip(("output", "qkv gradient", "bias gradient"), *results):
        assert ours.shape == ref.shape, name
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12, msg=name)


def test_gradcheck():
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 5, 12, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c: biased_attention(a, c, 2), (qkv, bias))


def test_bf16_under_autocast_is_close_to_fp32():
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(2, 16, 48, generator=g)
    bias = torch.randn(1, 4, 16, 16, generator=g)
    ref = reference(qkv, bias, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = biased_attention(qkv.bfloat16(), bias.bfloat16(), 4)
    assert ours.dtype == torch.bfloat16
    assert (ours.float() - ref).norm() / ref.norm() < 2e-2


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="qkv width 10"):
        biased_attention(torch.zeros(1, 2, 10), torch.zeros(1, 2, 2, 2), 2)
    with pytest.raises(TypeError, match="bias dtype"):
        biased_attention(torch.zeros(1, 2, 12), torch.zeros(1, 2, 2, 2, dtype=torch.float64), 2)


@pytest.mark.parametrize("shared_bias", [True, False], ids=["bias-shared-by-the-batch", "bias-per-sample"])
def test_custom_operators_pass_torch_opcheck(shared_bias):
    # schema, fake (meta) shapes, autograd registration and dynamo tracing of both operators
    module = importlib.import_module("mdtblocks.blocks.biased_attention")  # the package exports the function under this name

    g = torch.Generator().manual_seed(2)
    qkv = torch.randn(2, 6, 12, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(1 if shared_bias else 2, 2, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(module._forward, (qkv, bias, 2))
    _, qkvp, probs = module._forward(qkv, bias, 2)
    grad = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
    torch.library.opcheck(module._backward, (grad, qkvp.detach(), probs.detach(), bias.shape[0]))


def test_compiled_attention_calls_the_kernel_instead_of_fusing_the_bias_into_its_softmax():
    # The compiler would otherwise inline the bias gather into a fused softmax (several times slower on a CPU).
    from mdtblocks.blocks import SelfAttention

    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    attn = SelfAttention(16, 2, grid=(3, 3))
    x = torch.randn(2, 9, 16)
    expected = attn(x)
    torch._dynamo.reset()
    jaxtyping.config.update("jaxtyping_disable", True)  # the suite's shape checks stay out of compiled code
    try:
        out = torch.compile(attn, backend=capture, fullgraph=True)(x)
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)
        torch._dynamo.reset()
    torch.testing.assert_close(out, expected)
    targets = {str(node.target) for gm in graphs for node in gm.graph.nodes if node.op == "call_function"}
    assert "mdtblocks.biased_attention_forward.default" in targets, sorted(targets)
