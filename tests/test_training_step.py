"""The optimizer step as the loop runs it (:func:`~mdtblocks.training.optimizer_step`), checked against a
direct computation with plain SGD.

SGD without clipping moves the weights by exactly ``lr * grad``, so unlike Adan or clipped AdamW it
sees a wrong gradient scale: summing micro-batch gradients instead of averaging them, a wrong
learning rate, a clip that is not applied. The EMA is checked with decay 0.5 and an SGD step of
unit rate, so averaging the weights from before the update instead of after lands far away.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_mdt

from mdtblocks.diffusion import MaskedDiffusionObjective, create_diffusion
from mdtblocks.training import draw_step_randomness, make_ema, optimizer_step
from mdtblocks.training.precision import AutocastForward

BATCH = 8


def setup(seed: int = 0):
    model = tiny_mdt(seed=seed).train()
    objective = MaskedDiffusionObjective(create_diffusion(learn_sigma=True))
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(BATCH, 3, 8, 8, generator=g)
    y = torch.randint(0, 5, (BATCH,), generator=g)
    randomness = draw_step_randomness(
        model, seed=seed, step=0, global_batch=BATCH, sample_shape=(3, 8, 8), num_timesteps=1000,
        device=torch.device("cpu"), independent_masked_pass=objective.independent,
    )
    return model, objective, x, y, randomness


def step(model, objective, x, y, randomness, *, micro, lr=1.0, grad_clip=None, ema_decay=0.5):
    model = copy.deepcopy(model)
    ema = make_ema(model)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    denoiser = AutocastForward(model, torch.device("cpu"), "fp32")
    losses, norm = optimizer_step(
        denoiser, model, ema, objective, optimizer, x, y, randomness,
        micro=micro, accum=BATCH // micro, grad_clip=grad_clip, ema_decay=ema_decay,
    )
    return model, ema, before, losses, norm


def reference_gradient(model, objective, x, y, randomness) -> dict[str, torch.Tensor]:
    """The gradient of the global-batch mean loss, in one backward."""
    model = copy.deepcopy(model)
    objective(model, x, y, randomness)["loss"].mean().backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def total_norm(tensors) -> float:
    return float(torch.linalg.vector_norm(torch.stack([t.double().norm() for t in tensors])))


@pytest.mark.parametrize("micro", [8, 4, 2, 1])
def test_sgd_update_is_lr_times_the_mean_gradient(micro):
    """Any micro-batch split: the update is ``-lr *`` the global-batch mean gradient, and the logged norm is its norm."""
    model, objective, x, y, randomness = setup()
    grad = reference_gradient(model, objective, x, y, randomness)
    trained, _, before, losses, norm = step(model, objective, x, y, randomness, micro=micro, lr=0.5)
    assert total_norm(grad.values()) > 0.1
    for name, p in trained.named_parameters():
        expected = before[name] - 0.5 * grad.get(name, torch.zeros_like(p))
        torch.testing.assert_close(p.detach(), expected, rtol=1e-4, atol=1e-6, msg=name)
    assert float(norm) == pytest.approx(total_norm(grad.values()), rel=1e-5)
    with torch.no_grad():
        full = objective(model, x, y, randomness)["loss"].mean()
    assert float(losses["loss"]) == pytest.approx(float(full), rel=1e-5)


def test_clipping_is_applied_and_the_norm_before_it_logged():
    model, objective, x, y, randomness = setup()
    grad = reference_gradient(model, objective, x, y, randomness)
    full_norm = total_norm(grad.values())
    clip = full_norm / 4
    trained, _, before, _, norm = step(model, objective, x, y, randomness, micro=4, grad_clip=clip)
    assert float(norm) == pytest.approx(full_norm, rel=1e-5)  # before clipping
    moved = total_norm([before[k] - p.detach() for k, p in trained.named_parameters()])
    assert moved == pytest.approx(clip, rel=1e-3)  # lr 1: the step is the clipped gradient
    # A clip above the norm leaves the gradient alone.
    trained, _, before, _, _ = step(model, objective, x, y, randomness, micro=4, grad_clip=full_norm * 2)
    moved = total_norm([before[k] - p.detach() for k, p in trained.named_parameters()])
    assert moved == pytest.approx(full_norm, rel=1e-4)


def test_ema_averages_the_weights_after_the_update():
    model, objective, x, y, randomness = setup()
    trained, ema, before, _, _ = step(model, objective, x, y, randomness, micro=2, ema_decay=0.5)
    ema_params = dict(ema.named_parameters())
    moved = total_norm([before[k] - p.detach() for k, p in trained.named_parameters()])
    assert moved > 0.1  # the update is large next to the tolerance below
    for name, p in trained.named_parameters():
        expected = 0.5 * before[name] + 0.5 * p.detach()
        torch.testing.assert_close(ema_params[name], expected, rtol=1e-5, atol=1e-6, msg=name)
    for (name, b_ema), (_, b) in zip(ema.named_buffers(), trained.named_buffers(), strict=True):
        assert torch.equal(b_ema, b), name


def test_ema_copies_buffers_the_step_changed():
    """A buffer the forward updates (a running statistic, as BatchNorm keeps) reaches the EMA model.

    The model's own buffers are constant index tables, so equal buffers alone would not show a copy.
    """
    model, objective, x, y, randomness = setup()
    model.register_buffer("forwards_seen", torch.zeros(3))
    ema = make_ema(model)

    def count(module, args, output):
        module.forwards_seen.add_(torch.tensor([1.0, 0.5, -2.0]))

    model.register_forward_hook(count)  # after make_ema: only the trained model counts
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    denoiser = AutocastForward(model, torch.device("cpu"), "fp32")
    optimizer_step(
        denoiser, model, ema, objective, optimizer, x, y, randomness, micro=4, accum=BATCH // 4, grad_clip=None,
        ema_decay=0.9,
    )
    assert float(model.forwards_seen.abs().sum()) > 0  # the step changed the buffer
    torch.testing.assert_close(ema.forwards_seen, model.forwards_seen, rtol=0, atol=0)
