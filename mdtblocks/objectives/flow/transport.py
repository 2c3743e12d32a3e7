"""Flow matching (stochastic interpolants, SiT): the objective, its loss, and its samplers behind one object.

``FlowMatching`` implements :class:`~mdtblocks.objectives.base.Objective` with kind
``"flow"``. A training step draws ``t`` (uniform or logit-normal) and noise ``x0``, forms
``x_t = alpha_t x1 + sigma_t x0`` on a path (:mod:`~mdtblocks.objectives.flow.paths`), and regresses the network's
prediction (velocity, score or noise) against the path's target. Times follow SiT: 0 is
noise, 1 is data, and the backbone receives ``t`` in ``[0, 1]`` (see :mod:`~mdtblocks.objectives.flow.paths` for
other conventions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from jaxtyping import Float, Shaped
from torch import Tensor

from ..base import PointwiseLosses, register_objective
from ..sampling_spec import SamplingSpec
from .likelihood import Likelihood, ProbeFn, ode_likelihood, rademacher
from .ode import ODE_METHODS, Callback, VelocityFn, ode_sample, time_grid
from .paths import DIFFUSION_FORMS, PATHS, Path, expand_like, make_path
from .sampling import FLOW_SAMPLING
from .scheduler import check_flow_scheduler, scheduler_sample
from .sde import LAST_STEPS, SDE_METHODS, NoiseFn, noise_factor, sde_sample
from .times import TIME_SAMPLERS, draw_training_times

__all__ = ["FlowMatching", "PREDICTIONS", "LOSS_WEIGHTS", "default_eps", "mean_flat"]

PREDICTIONS = ("velocity", "score", "noise")
"""What the network predicts."""

LOSS_WEIGHTS = (None, "velocity", "likelihood")
"""Loss weightings of score and noise predictions (SiT): none, ``(g / sigma)^2`` or ``g / sigma^2``."""

Net = Callable[..., Tensor]


def mean_flat(x: Float[Tensor, "b ..."]) -> Float[Tensor, "b"]:
    """Mean over every dimension but the batch."""
    return torch.mean(x, dim=list(range(1, x.dim())))


def default_eps(path: str, prediction: str) -> tuple[float, float]:
    """SiT's ``(train_eps, sample_eps)``: VP ``(1e-5, 1e-3)``; Linear and GVP ``(0, 0)`` for velocity, else ``(1e-3, 1e-3)``.

    The interval is shortened where the conversion to a score divides by zero at an end.
    """
    if path == "VP":
        return 1e-5, 1e-3
    if prediction != "velocity":
        return 1e-3, 1e-3
    return 0.0, 0.0


@dataclass(frozen=True)
class FlowMatching:
    """The flow-matching objective (kind ``"flow"``).

    Attributes:
        path: ``"Linear"`` (rectified flow, SiT's default), ``"GVP"`` or ``"VP"``.
        prediction: ``"velocity"``, ``"score"`` or ``"noise"``.
        loss_weight: ``None``, ``"velocity"`` or ``"likelihood"`` (score and noise predictions only).
        train_eps: training times lie in ``[t0, t1]`` shortened by this; ``None``: SiT's default.
        sample_eps: the same for sampling; ``None``: SiT's default.
        time_sampler: ``"uniform"`` or ``"logit_normal"``.
        logit_mean: mean of the logit-normal (on ``t``; 0 is symmetric).
        logit_scale: scale of the logit-normal.
        cosine_weight: weight of LightningDiT's ``1 - cos(v_pred, v_target)`` term (per pixel over
            channels, averaged); 0 turns it off. Velocity prediction only.
        sampling: what a sampling command offers for a flow run (:data:`~mdtblocks.objectives.flow.sampling.FLOW_SAMPLING`).
    """

    path: str = "Linear"
    prediction: str = "velocity"
    loss_weight: str | None = None
    train_eps: float | None = None
    sample_eps: float | None = None
    time_sampler: str = "uniform"
    logit_mean: float = 0.0
    logit_scale: float = 1.0
    cosine_weight: float = 0.0

    kind: ClassVar[str] = "flow"
    samplers: ClassVar[tuple[str, ...]] = ("euler", "heun", "dopri5", "sde_euler", "sde_heun")
    sampling: ClassVar[SamplingSpec] = FLOW_SAMPLING

    def __post_init__(self) -> None:
        if self.path not in PATHS:
            raise ValueError(f"unknown path {self.path!r}; expected one of {sorted(PATHS)}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; expected one of {PREDICTIONS}")
        if self.loss_weight not in LOSS_WEIGHTS:
            raise ValueError(f"unknown loss weight {self.loss_weight!r}; expected one of {LOSS_WEIGHTS}")
        if self.loss_weight is not None and self.prediction == "velocity":
            raise ValueError(f"loss_weight={self.loss_weight!r} applies to score and noise predictions; velocity is unweighted")
        if self.time_sampler not in TIME_SAMPLERS:
            raise ValueError(f"unknown time sampler {self.time_sampler!r}; expected one of {TIME_SAMPLERS}")
        if not self.logit_scale > 0:
            raise ValueError(f"logit_scale must be positive, got {self.logit_scale!r}")
        if not self.cosine_weight >= 0:
            raise ValueError(f"cosine_weight must be >= 0, got {self.cosine_weight!r}")
        if self.cosine_weight and self.prediction != "velocity":
            raise ValueError("the cosine term compares velocities: it needs prediction='velocity'")
        train, sample = default_eps(self.path, self.prediction)
        for name, value, default in (("train_eps", self.train_eps, train), ("sample_eps", self.sample_eps, sample)):
            if value is None:
                object.__setattr__(self, name, default)
            elif not 0 <= value < 0.5:
                raise ValueError(f"{name} must lie in [0, 0.5), got {value!r}")

    @property
    def interpolant(self) -> Path:
        """The path object (coefficients and conversions)."""
        return make_path(self.path)

    # --- the time interval (SiT's check_interval) ----------------------------------------
    def interval(
        self, *, eval: bool = False, sde: bool = False, diffusion_form: str = "SBDM", last_step_size: float = 0.0
    ) -> tuple[float, float]:
        """``(t0, t1)``: the times training draws from (``eval=False``) or sampling integrates over.

        VP stops ``eps`` short of data; Linear and GVP with a score or noise prediction (or
        in an SDE) also start ``eps`` after noise; an SDE with a last step stops
        ``last_step_size`` short of data, where the last step takes over.
        """
        eps = self.sample_eps if eval else self.train_eps
        t0, t1 = 0.0, 1.0
        if self.path == "VP":
            t1 = 1 - eps if (not sde or last_step_size == 0) else 1 - last_step_size
        elif self.prediction != "velocity" or sde:
            t0 = eps if (diffusion_form == "SBDM" and sde) or self.prediction != "velocity" else 0
            t1 = 1 - eps if (not sde or last_step_size == 0) else 1 - last_step_size
        return float(t0), float(t1)

    # --- Objective: training -------------------------------------------------------------
    def draw_times(self, n: int, generator: torch.Generator) -> Float[Tensor, "n"]:
        """``n`` training times in :meth:`interval` from the time sampler, on ``generator``'s device."""
        t0, t1 = self.interval()
        return draw_training_times(
            n, generator, t0=t0, t1=t1, sampler=self.time_sampler, mean=self.logit_mean, scale=self.logit_scale
        )

    def draw_noise(self, x_start: Float[Tensor, "b c hh ww"], generator: torch.Generator) -> Float[Tensor, "b c hh ww"]:
        """Standard normal ``x0`` shaped like the data."""
        return torch.randn(x_start.shape, generator=generator, device=x_start.device, dtype=x_start.dtype)

    def losses(
        self,
        net: Net,
        x_start: Float[Tensor, "b c hh ww"],
        times: Shaped[Tensor, "b"],
        noise: Float[Tensor, "b c hh ww"],
        model_kwargs: Mapping[str, Any],
    ) -> dict[str, Float[Tensor, "b"]]:
        """Per-sample losses at times ``times`` with noise ``noise`` (SiT's ``training_losses``).

        Returns ``"loss"`` (what is averaged and backpropagated), ``"mse"`` and, with a
        cosine weight, ``"cosine"``. A backbone that also emits variance channels
        (``learn_sigma``) has them dropped, as SiT's forward does.
        """
        terms = self.pointwise_losses(net, x_start, times, noise, model_kwargs).reduce(mean_flat)
        return {name: terms[name] for name in ("mse", "loss", "cosine") if name in terms}

    def pointwise_losses(
        self,
        net: Net,
        x_start: Float[Tensor, "b c hh ww"],
        times: Shaped[Tensor, "b"],
        noise: Float[Tensor, "b c hh ww"],
        model_kwargs: Mapping[str, Any],
    ) -> PointwiseLosses:
        """The terms of :meth:`losses` per element: ``"mse"`` ``(b, c, hh, ww)`` and the cosine term per pixel ``(b, 1, hh, ww)``.

        The MAE reconstruction (MaskDiT's dropping) is the network's prediction (velocity,
        score or noise) and its noisy input ``x_t``.
        """
        path = self.interpolant
        t, x0, x1 = times, noise, x_start
        xt = path.interpolate(t, x0, x1)
        ut = path.velocity_target(t, x0, x1)
        out = _prediction(net(xt, t, **model_kwargs), xt)
        terms: dict[str, Tensor] = {}
        if self.prediction == "velocity":
            terms["mse"] = (out - ut) ** 2
        else:
            _, drift_var = path.drift(xt, t)
            sigma_t, _ = path.sigma(expand_like(t, xt))
            if self.loss_weight == "velocity":
                weight = (drift_var / sigma_t) ** 2
            elif self.loss_weight == "likelihood":
                weight = drift_var / (sigma_t**2)
            else:
                weight = 1
            target = (out - x0) if self.prediction == "noise" else (out * sigma_t + x0)
            terms["mse"] = weight * (target**2)
        weights = {}
        if self.cosine_weight:
            # LightningDiT: 1 - cosine similarity of predicted and target velocity over channels, per pixel.
            terms["cosine"] = (1 - F.cosine_similarity(out, ut, dim=1)).unsqueeze(1)
            weights["cosine"] = float(self.cosine_weight)
        return PointwiseLosses(terms, noisy=xt, reconstruction=out, weights=weights)

    def data_fraction(self, times: Shaped[Tensor, "b"]) -> Float[Tensor, "b"]:
        """``t`` itself: flow time is already 0 at noise and 1 at data."""
        return times.float()

    # --- the fields samplers integrate -----------------------------------------------------
    def velocity(self, net: Net) -> VelocityFn:
        """The probability-flow ODE's drift ``v(x, t, **kw)`` from the network's prediction."""
        path, prediction = self.interpolant, self.prediction

        def velocity(x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
            out = _prediction(net(x, t, **kwargs), x)
            if prediction == "velocity":
                return out
            drift_mean, drift_var = path.drift(x, t)
            if prediction == "noise":
                sigma_t, _ = path.sigma(expand_like(t, x))
                out = out / -sigma_t
            return -drift_mean + drift_var * out

        return velocity

    def score(self, net: Net) -> VelocityFn:
        """The score ``grad log p_t(x)`` from the network's prediction."""
        path, prediction = self.interpolant, self.prediction

        def score(x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
            out = _prediction(net(x, t, **kwargs), x)
            if prediction == "noise":
                return out / -path.sigma(expand_like(t, x))[0]
            if prediction == "score":
                return out
            return path.score_from_velocity(out, x, t)

        return score

    # --- Objective: sampling ---------------------------------------------------------------
    def sample(
        self,
        net: Net,
        noise: Float[Tensor, "b c hh ww"],
        model_kwargs: Mapping[str, Any],
        *,
        sampler: str,
        num_steps: int,
        generator: torch.Generator | None = None,
        progress: bool = False,
        callback: Callback | None = None,
        shift: float | None = None,
        atol: float = 1e-6,
        rtol: float = 1e-3,
        diffusion_form: str = "sigma",
        diffusion_norm: float = 1.0,
        last_step: str | None = "Mean",
        last_step_size: float = 0.04,
        noise_form: str = "code",
        brownian: NoiseFn | None = None,
        clip_denoised: bool = False,
    ) -> Float[Tensor, "b c hh ww"]:
        """Integrate from ``noise`` (t=0) to data with one of :attr:`samplers` in ``num_steps`` steps.

        Args:
            net: the backbone or a guided wrapper (:func:`~mdtblocks.objectives.flow.guidance.flow_guidance`).
            noise: the start state.
            model_kwargs: extra arguments of ``net`` (labels ``y``).
            sampler: ``"euler"``, ``"heun"``, ``"dopri5"`` (ODE) or ``"sde_euler"``, ``"sde_heun"``.
            num_steps: steps (ODE, SDE); for dopri5 the number of reported intervals.
            generator: draws the SDE's Brownian increments (unless ``brownian`` is given).
            progress: unused (steps report through ``callback``).
            callback: called after every step.
            shift: time shift of the grid (:func:`~mdtblocks.objectives.flow.times.shift_times`).
            atol: dopri5 absolute tolerance.
            rtol: dopri5 relative tolerance.
            diffusion_form: SDE diffusion coefficient's form (SiT's sampling default ``"sigma"``).
            diffusion_norm: its scale.
            last_step: SDE last step (``None``, ``"Mean"``, ``"Tweedie"``, ``"Euler"``).
            last_step_size: its length in time (SiT: 0.04).
            noise_form: ``"code"`` (SiT's code, default) or ``"paper"`` (:mod:`~mdtblocks.objectives.flow.sde`).
            brownian: ``brownian(x)`` gives each step's standard normal increment (for tests).
            clip_denoised: ignored: the flow samplers integrate velocities and form no data
                estimate to clip (accepted so the sample grids call every objective alike).

        Raises:
            ValueError: for an unknown sampler or option.
        """
        del progress, clip_denoised
        if sampler not in self.samplers:
            raise ValueError(f"unknown flow sampler {sampler!r}; expected one of {self.samplers}")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        if sampler in ODE_METHODS:
            t0, t1 = self.interval(eval=True)
            times = time_grid(t0, t1, num_steps + 1, shift=shift, device=noise.device)
            return ode_sample(
                self.velocity(net), noise, times, method=sampler, atol=atol, rtol=rtol,
                model_kwargs=model_kwargs, callback=callback,
            )  # fmt: skip
        if brownian is None:

            def brownian(x: Tensor) -> Tensor:
                return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

        return self.sample_sde(
            net, noise, model_kwargs, method="Euler" if sampler == "sde_euler" else "Heun", num_points=num_steps + 1,
            brownian=brownian, callback=callback, shift=shift, diffusion_form=diffusion_form,
            diffusion_norm=diffusion_norm, last_step=last_step, last_step_size=last_step_size, noise_form=noise_form,
        )  # fmt: skip

    def sample_sde(
        self,
        net: Net,
        noise: Float[Tensor, "b c hh ww"],
        model_kwargs: Mapping[str, Any],
        *,
        method: str,
        num_points: int,
        brownian: NoiseFn,
        callback: Callback | None = None,
        shift: float | None = None,
        diffusion_form: str = "sigma",
        diffusion_norm: float = 1.0,
        last_step: str | None = "Mean",
        last_step_size: float = 0.04,
        noise_form: str = "code",
    ) -> Float[Tensor, "b c hh ww"]:
        """The SDE sampler on a grid of ``num_points`` times, then the last step (SiT's ``sample_sde``).

        Raises:
            ValueError: for an unknown diffusion form, last step, method or noise form.
        """
        if diffusion_form not in DIFFUSION_FORMS + ("inccreasing-decreasing",):
            raise ValueError(f"unknown diffusion form {diffusion_form!r}; expected one of {DIFFUSION_FORMS}")
        if last_step not in LAST_STEPS:
            raise ValueError(f"unknown last step {last_step!r}; expected one of {LAST_STEPS}")
        if method not in SDE_METHODS:
            raise ValueError(f"unknown SDE method {method!r}; expected one of {SDE_METHODS}")
        factor = noise_factor(noise_form)
        if last_step is None:
            last_step_size = 0.0
        path = self.interpolant
        velocity, score = self.velocity(net), self.score(net)

        def w(x: Tensor, t: Tensor) -> Any:
            value = path.diffusion(x, t, form=diffusion_form, norm=diffusion_norm)
            return value if factor == 1.0 else factor * value

        def drift(x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
            return velocity(x, t, **kwargs) + w(x, t) * score(x, t, **kwargs)

        t0, t1 = self.interval(eval=True, sde=True, diffusion_form=diffusion_form, last_step_size=last_step_size)
        times = time_grid(t0, t1, num_points, shift=shift)
        x = sde_sample(
            drift, w, noise, times.to(noise.device), method=method, noise=brownian, uniform=shift in (None, 1),
            model_kwargs=model_kwargs, callback=callback,
        )  # fmt: skip
        t_end = torch.ones(noise.size(0), device=noise.device) * t1
        kwargs = dict(model_kwargs)
        if last_step == "Mean":
            return x + drift(x, t_end, **kwargs) * last_step_size
        if last_step == "Euler":
            return x + velocity(x, t_end, **kwargs) * last_step_size
        if last_step == "Tweedie":
            # SiT: the coefficients of the first sample's time (all samples share it).
            alpha, sigma = path.alpha(t_end)[0][0], path.sigma(t_end)[0][0]
            return x / alpha + (sigma**2) / alpha * score(x, t_end, **kwargs)
        return x

    def likelihood(
        self,
        net: Net,
        x: Float[Tensor, "b c hh ww"],
        model_kwargs: Mapping[str, Any] | None = None,
        *,
        method: str = "dopri5",
        num_points: int = 2,
        atol: float = 1e-6,
        rtol: float = 1e-3,
        probe: ProbeFn = rademacher,
    ) -> Likelihood:
        """Log-likelihood of data ``x`` in nats (:func:`~mdtblocks.objectives.flow.likelihood.ode_likelihood`)."""
        t0, t1 = self.interval(eval=True)
        times = time_grid(t0, t1, num_points)
        return ode_likelihood(
            self.velocity(net), x, times, method=method, atol=atol, rtol=rtol, probe=probe, model_kwargs=model_kwargs
        )

    def diffusers_scheduler(self, kind: str = "euler") -> Any:
        """diffusers' ``FlowMatchEulerDiscreteScheduler`` (shift 1) for :class:`~mdtblocks.MDTPipeline`.

        diffusers' flow schedulers run on the noise level ``sigma = 1 - t`` from 1 (noise) to
        0 and step ``x + (sigma_next - sigma) * out``: the pipeline calls the network at
        ``t = 1 - sigma`` and passes ``out = -velocity`` (:meth:`velocity`, so every path and
        prediction fits); a sampling interval ``[t0, t1]`` shorter than ``[0, 1]`` (a positive
        ``sample_eps``) is mapped onto the sigma grid linearly (:mod:`mdtblocks.objectives.flow.scheduler`).

        Raises:
            ValueError: for another ``kind``.
        """
        if kind != "euler":
            raise ValueError(f"the flow objective's diffusers scheduler is 'euler' (FlowMatchEulerDiscreteScheduler), got {kind!r}")
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)

    def check_scheduler(self, scheduler: Any) -> None:
        """Refuse a scheduler other than ``FlowMatchEulerDiscreteScheduler`` (:func:`~mdtblocks.objectives.flow.scheduler.check_flow_scheduler`)."""
        check_flow_scheduler(scheduler)

    def diffusers_sample(
        self,
        scheduler: Any,
        net: Net,
        noise: Float[Tensor, "b c hh ww"],
        model_kwargs: Mapping[str, Any],
        num_steps: int,
        progress_bar: Callable[[Any], Any] = iter,
        **step_kwargs: Any,
    ) -> Float[Tensor, "b c hh ww"]:
        """The Euler ODE on ``scheduler``'s sigma grid (:func:`~mdtblocks.objectives.flow.scheduler.scheduler_sample`)."""
        return scheduler_sample(self, scheduler, net, noise, model_kwargs, num_steps, progress_bar, **step_kwargs)

    # --- the run record --------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """Every option as JSON values, with ``"kind": "flow"``."""
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FlowMatching:
        """Rebuild from :meth:`to_record` (unknown keys are refused)."""
        fields = {k: v for k, v in record.items() if k != "kind"}
        if record.get("kind", cls.kind) != cls.kind:
            raise ValueError(f"not a flow-matching record: kind {record.get('kind')!r}")
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown flow-matching options {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**fields)


def _prediction(out: Tensor, x: Tensor) -> Tensor:
    """The network's prediction in the input's precision, without variance channels a ``learn_sigma`` backbone adds."""
    if out.shape[1] == 2 * x.shape[1] and out.shape[1] != x.shape[1]:
        out = out[:, : x.shape[1]]
    if out.shape != x.shape:
        raise ValueError(f"the network's output has shape {tuple(out.shape)}, expected {tuple(x.shape)} like its input")
    return out.to(x.dtype)


register_objective(FlowMatching.kind, FlowMatching.from_record)
