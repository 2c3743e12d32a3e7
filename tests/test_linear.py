"""``blocks.linear.linear`` is ``layer(x)``; traced by the compiler on a CPU, its bias is a separate addition."""

from __future__ import annotations

import torch
from torch import nn

from mdtblocks.blocks.linear import linear


def traced_graph(fn, *args):
    graphs = []

    def backend(gm, _inputs):
        graphs.append(gm)
        return gm

    out = torch.compile(fn, backend=backend, fullgraph=True)(*args)
    return out, graphs[0]


def test_same_function_eager_and_traced(no_shape_checks):
    layer = nn.Linear(6, 5).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    torch.testing.assert_close(linear(layer, x), layer(x), rtol=0, atol=0)
    out, _ = traced_graph(lambda t: linear(layer, t), x)
    torch.testing.assert_close(out, layer(x), rtol=1e-14, atol=1e-14)


def test_traced_on_a_cpu_the_bias_is_an_addition_the_compiler_can_fuse(no_shape_checks):
    layer = nn.Linear(6, 5)
    _, gm = traced_graph(lambda t: linear(layer, t), torch.randn(4, 6))
    linears = [n for n in gm.graph.nodes if n.target is torch._C._nn.linear]
    adds = [n for n in gm.graph.nodes if "add" in str(n.target)]
    assert len(linears) == 1 and len(linears[0].args) == 2 and not linears[0].kwargs.get("bias"), gm.code
    assert len(adds) == 1, gm.code


def test_a_layer_without_bias_is_called_as_it_is(no_shape_checks):
    layer = nn.Linear(6, 5, bias=False)
    x = torch.randn(4, 6)
    out, gm = traced_graph(lambda t: linear(layer, t), x)
    torch.testing.assert_close(out, layer(x))
    assert not [n for n in gm.graph.nodes if "add" in str(n.target)], gm.code
