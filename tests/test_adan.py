"""Adan against the reference numbers of the official update, plus state round-trips."""

from __future__ import annotations

import io

import pytest
import torch
from safetensors.torch import load_file

from mdtblocks.training import Adan

from conftest import CONFORMANCE

TOLERANCE = 1e-6  # max abs, as the conformance README specifies


def run_reference(lr: float, weight_decay: float, steps: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    ref = load_file(str(CONFORMANCE / "adan_reference.safetensors"))
    w = torch.nn.Parameter(ref["init_w"].clone())
    b = torch.nn.Parameter(ref["init_b"].clone())
    opt = Adan([w, b], lr=lr, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=weight_decay)
    for i in range(steps):
        w.grad, b.grad = ref["grads_w"][i].clone(), ref["grads_b"][i].clone()
        opt.step()
    return w.detach(), b.detach()


@pytest.mark.parametrize(("tag", "lr", "wd"), [("wd", 3e-3, 0.02), ("nowd", 1e-3, 0.0)])
def test_adan_matches_reference(tag: str, lr: float, wd: float) -> None:
    ref = load_file(str(CONFORMANCE / "adan_reference.safetensors"))
    w, b = run_reference(lr, wd)
    assert (w - ref["init_w"]).abs().max() > 1e-3  # the update is not trivially zero
    assert (w - ref[f"{tag}_final_w"]).abs().max() <= TOLERANCE
    assert (b - ref[f"{tag}_final_b"]).abs().max() <= TOLERANCE


def test_adan_state_roundtrip_weights_only_and_resume_exact() -> None:
    torch.manual_seed(0)
    grads = [torch.randn(4, 3) for _ in range(6)]
    p1 = torch.nn.Parameter(torch.randn(4, 3))
    p2 = torch.nn.Parameter(p1.detach().clone())
    opt1 = Adan([p1], lr=1e-2, weight_decay=0.1)
    for g in grads[:3]:
        p1.grad = g.clone()
        opt1.step()
    buf = io.BytesIO()
    torch.save({"optimizer": opt1.state_dict(), "param": p1.detach().clone()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    with torch.no_grad():
        p2.copy_(saved["param"])
    opt2 = Adan([p2], lr=1e-2, weight_decay=0.1)
    opt2.load_state_dict(saved["optimizer"])
    for g in grads[3:]:
        p1.grad, p2.grad = g.clone(), g.clone()
        opt1.step()
        opt2.step()
    assert torch.equal(p1, p2)


def test_adan_first_step_has_zero_gradient_change_and_skips_gradless() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    q = torch.nn.Parameter(torch.ones(2))
    opt = Adan([p, q], lr=0.1)
    p.grad = torch.tensor([1.0, -2.0, 0.5])
    opt.step()
    # step 1: m_hat = g, v = 0, n_hat = g^2 -> update = sign(g) (up to eps)
    torch.testing.assert_close(p.detach(), 1.0 - 0.1 * torch.sign(p.grad), atol=1e-6, rtol=0)
    assert torch.equal(q.detach(), torch.ones(2)) and not opt.state[q]


@pytest.mark.parametrize(
    "kwargs", [{"lr": -1.0}, {"betas": (0.9, 0.9)}, {"betas": (0.98, 1.0, 0.99)}, {"eps": -1.0}, {"weight_decay": -0.1}]
)
def test_adan_rejects_bad_hyperparameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Adan([torch.nn.Parameter(torch.zeros(1))], **kwargs)
