"""SiT's names over :class:`FlowMatching`: ``create_transport``, ``Transport.training_losses`` and ``TransportSampler``.

This layer reproduces willisma/SiT's ``transport`` package (its defaults, its choice of
``train_eps``/``sample_eps`` and its sampler signatures) so that SiT's numbers can be
checked through it; ``tests/fixtures/sit`` holds numbers recorded from SiT itself. Two
deliberate differences: unknown names raise instead of silently falling back, and
draws can be injected (``t``/``x0`` for the loss, ``brownian`` for the SDE, ``probe``
for the likelihood); left out, they come from the global generator as in SiT.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float, Shaped
from torch import Tensor

from .likelihood import ProbeFn, prior_logp, rademacher
from .ode import time_grid
from .paths import PATHS
from .sde import NoiseFn
from .transport import LOSS_WEIGHTS, PREDICTIONS, FlowMatching
from .times import check_times

__all__ = ["create_transport", "Transport", "TransportSampler", "sit_eps"]

SampleFn = Callable[..., Any]
"""``sample_fn(x, model, **model_kwargs)``; the last entry of its result is the sample."""


def sit_eps(path_type: str, prediction: str, train_eps: float | None, sample_eps: float | None) -> tuple[float, float]:
    """``(train_eps, sample_eps)`` exactly as SiT's ``create_transport`` resolves them.

    Linear and GVP with a velocity prediction always get ``(0, 0)``, whatever was asked.
    Otherwise a missing ``train_eps`` gets the default (VP ``1e-5``, else ``1e-3``), and
    ``sample_eps`` gets ``1e-3`` only when ``train_eps`` was missing too (SiT tests
    ``train_eps`` there); a given ``train_eps`` without ``sample_eps`` is refused here,
    where SiT would fail later with ``None`` arithmetic.
    """
    if path_type == "VP" or prediction != "velocity":
        train_new = (1e-5 if path_type == "VP" else 1e-3) if train_eps is None else train_eps
        sample_new = 1e-3 if train_eps is None else sample_eps
        if sample_new is None:
            raise ValueError("with train_eps given, SiT needs sample_eps too (it does not default it)")
        return float(train_new), float(sample_new)
    return 0.0, 0.0


def create_transport(
    path_type: str = "Linear",
    prediction: str = "velocity",
    loss_weight: str | None = None,
    train_eps: float | None = None,
    sample_eps: float | None = None,
) -> Transport:
    """SiT's ``create_transport``: a :class:`Transport` over :class:`FlowMatching`.

    Args:
        path_type: ``"Linear"``, ``"GVP"`` or ``"VP"``.
        prediction: ``"velocity"``, ``"score"`` or ``"noise"``.
        loss_weight: ``None``, ``"velocity"`` or ``"likelihood"``; ignored for velocity (as SiT).
        train_eps: see :func:`sit_eps`.
        sample_eps: see :func:`sit_eps`.

    Raises:
        ValueError: for an unknown path, prediction or weight (SiT falls back silently).
    """
    if path_type not in PATHS:
        raise ValueError(f"unknown path_type {path_type!r}; expected one of {sorted(PATHS)}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")
    if loss_weight not in LOSS_WEIGHTS:
        raise ValueError(f"unknown loss_weight {loss_weight!r}; expected one of {LOSS_WEIGHTS}")
    train, sample = sit_eps(path_type, prediction, train_eps, sample_eps)
    weight = None if prediction == "velocity" else loss_weight
    return Transport(FlowMatching(path_type, prediction, weight, train_eps=train, sample_eps=sample))


class Transport:
    """SiT's ``Transport``: the loss with injectable draws, over a :class:`FlowMatching` objective.

    Args:
        objective: the flow-matching objective (its eps values are used as given).
    """

    def __init__(self, objective: FlowMatching) -> None:
        self.objective = objective

    def training_losses(
        self,
        model: Callable[..., Tensor],
        x1: Float[Tensor, "b c hh ww"],
        model_kwargs: dict[str, Any] | None = None,
        *,
        t: Shaped[Tensor, "b"] | None = None,
        x0: Float[Tensor, "b c hh ww"] | None = None,
    ) -> dict[str, Tensor]:
        """Per-sample losses (``"loss"``, shape ``(b,)``) and the prediction (``"pred"``).

        ``t`` and ``x0`` are drawn as SiT draws them (``torch.rand`` on the CPU in
        ``[t0, t1]``, ``torch.randn_like``) unless given.

        Raises:
            ValueError: for ``t`` outside ``[0, 1]`` or of the wrong shape.
        """
        kwargs = dict(model_kwargs or {})
        if x0 is None:
            x0 = torch.randn_like(x1)
        if t is None:
            t0, t1 = self.objective.interval()
            t = (torch.rand((x1.shape[0],)) * (t1 - t0) + t0).to(x1)
        if t.shape != (x1.shape[0],):
            raise ValueError(f"t must have shape ({x1.shape[0]},), one time per sample, got {tuple(t.shape)}")
        check_times(t)
        preds: list[Tensor] = []

        def recorded(*args: Any, **kw: Any) -> Tensor:
            preds.append(model(*args, **kw))
            return preds[-1]

        terms = self.objective.losses(recorded, x1, t, x0, kwargs)
        return {"pred": preds[0], "loss": terms["loss"], **{k: v for k, v in terms.items() if k != "loss"}}

    def prior_logp(self, z: Float[Tensor, "b ..."]) -> Float[Tensor, "b"]:
        """``log N(z; 0, I)`` per sample."""
        return prior_logp(z)


class TransportSampler:
    """SiT's ``Sampler``: factories of sampling functions with SiT's signatures and defaults.

    Args:
        transport: from :func:`create_transport`.
    """

    def __init__(self, transport: Transport) -> None:
        if not isinstance(transport, Transport):
            raise TypeError(f"TransportSampler needs a Transport (create_transport), got {type(transport).__name__}")
        self.transport = transport
        self.objective = transport.objective

    def sample_ode(
        self,
        *,
        sampling_method: str = "dopri5",
        num_steps: int = 50,
        atol: float = 1e-6,
        rtol: float = 1e-3,
        reverse: bool = False,
    ) -> SampleFn:
        """``sample_fn(x, model, **kw)`` -> the states at ``num_steps`` evenly spaced times (``[-1]``: the sample).

        ``sampling_method`` is any ``torchdiffeq`` method (``"dopri5"``, ``"euler"``,
        ``"heun2"``, ...) and goes to ``torchdiffeq.odeint`` as in SiT; ``reverse`` runs
        data to noise.
        """
        from torchdiffeq import odeint
        from torchdiffeq._impl.odeint import SOLVERS

        if sampling_method not in SOLVERS:
            raise ValueError(f"unknown ODE sampling_method {sampling_method!r}; torchdiffeq offers {sorted(SOLVERS)}")
        t0, t1 = self.objective.interval(eval=True)
        if reverse:
            t0, t1 = 1 - t0, 1 - t1
        times = time_grid(t0, t1, num_steps)

        def sample_fn(x: Tensor, model: Callable[..., Tensor], **model_kwargs: Any) -> Tensor:
            velocity = self.objective.velocity(model)
            b = x.size(0)

            def f(t: Tensor, y: Tensor) -> Tensor:
                return velocity(y, torch.ones(b).to(x.device) * t, **model_kwargs)

            return odeint(f, x, times.to(x.device), method=sampling_method, atol=[atol], rtol=[rtol])

        return sample_fn

    def sample_sde(
        self,
        *,
        sampling_method: str = "Euler",
        diffusion_form: str = "SBDM",
        diffusion_norm: float = 1.0,
        last_step: str | None = "Mean",
        last_step_size: float = 0.04,
        num_steps: int = 250,
        brownian: NoiseFn | None = None,
    ) -> SampleFn:
        """``sample_fn(x, model, **kw)`` -> ``num_steps`` states: ``num_steps - 1`` SDE steps, then the last step.

        SiT's noise form (``sqrt(2 w dt)``). ``brownian(x)`` replaces SiT's
        ``torch.randn(x.size())`` draw of each step.
        """
        if brownian is None:

            def brownian(x: Tensor) -> Tensor:
                return torch.randn(x.size()).to(x)

        source = brownian

        def sample_fn(x: Tensor, model: Callable[..., Tensor], **model_kwargs: Any) -> list[Tensor]:
            states: list[Tensor] = []
            out = self.objective.sample_sde(
                model, x, model_kwargs, method=sampling_method, num_points=num_steps, brownian=source,
                callback=lambda info: states.append(info["x"]), diffusion_form=diffusion_form,
                diffusion_norm=diffusion_norm, last_step=last_step, last_step_size=last_step_size,
            )  # fmt: skip
            return [*states, out]

        return sample_fn

    def sample_ode_likelihood(
        self,
        *,
        sampling_method: str = "dopri5",
        num_steps: int = 50,
        atol: float = 1e-6,
        rtol: float = 1e-3,
        probe: ProbeFn | None = None,
    ) -> SampleFn:
        """``sample_fn(x, model, **kw)`` -> ``(logp, latent)``: the log-likelihood of data ``x`` in nats and its prior point.

        ``probe(x)`` replaces SiT's Rademacher draw at each evaluation.
        """
        source = rademacher if probe is None else probe

        def sample_fn(x: Tensor, model: Callable[..., Tensor], **model_kwargs: Any) -> tuple[Tensor, Tensor]:
            result = self.objective.likelihood(
                model, x, model_kwargs, method=sampling_method, num_points=num_steps, atol=atol, rtol=rtol, probe=source
            )
            return result.logp, result.latent

        return sample_fn
