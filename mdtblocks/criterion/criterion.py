"""The training criterion: objective x token rule x label dropout x extra losses, called once per micro batch.

The loop knows none of the parts. Per step it asks :meth:`Criterion.draw_step` for the
draws of the global batch (from the step's random streams, always in the same order),
then calls the criterion on each micro batch with that batch's rows, and logs
:meth:`Criterion.logged` of what it returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Shaped
from torch import Tensor, nn

from ..masking import MaskPlan
from ..objectives.base import Objective
from ..tokens.routing import check_rule_model, draw_routes
from ..tokens.rules import PlainRule, TokenRule
from ..typing import Image, Labels
from .draws import StepRandomness, Streams, to_device
from .labels import LabelDropout

__all__ = ["Criterion", "ExtraLoss", "StepLoss", "SMALL_STREAM"]

SMALL_STREAM = "t-labels-mask"
"""The CPU stream of the small draws (times, label drops, mask plan): read without a device sync."""


@runtime_checkable
class ExtraLoss(Protocol):
    """An extra loss term (e.g. a representation alignment), added to the total with ``weight``.

    Attributes:
        name: logged as ``loss_<name>``.
        weight: its factor in the total loss.
    """

    name: str
    weight: float

    def __call__(
        self,
        net: Callable[..., Tensor],
        x_start: Image,
        y: Labels,
        draws: StepRandomness,
        terms: Mapping[str, Tensor],
        targets: Tensor | None = None,
    ) -> Float[Tensor, "b"]:
        """The per-sample term, given the step's draws, the passes' terms so far and the batch's ``targets``.

        An extra loss may also have ``watch(token_pass)``, a context manager the criterion
        enters around each pass (to record what the backbone computes in that pass).
        """
        ...

    def to_record(self) -> dict[str, Any]:
        """Every option as JSON values, with ``"kind"``."""
        ...


@runtime_checkable
class StepLoss(Protocol):
    """What the optimizer step calls: a :class:`Criterion`, or the older ``MaskedDiffusionObjective``."""

    def __call__(
        self, net: Callable[..., Tensor], x_start: Image, y: Labels, draws: StepRandomness, model_kwargs: Mapping[str, Any] | None = None
    ) -> dict[str, Shaped[Tensor, "b"]]:
        """Per-sample loss terms, ``"loss"`` among them."""
        ...

    def logged(self, terms: Mapping[str, Tensor]) -> tuple[str, ...]:
        """The names of the terms to log."""
        ...


@dataclass(frozen=True)
class Criterion:
    """One training step's loss: the objective's loss over the token rule's passes, with label dropout and extra terms.

    Attributes:
        objective: draws the times and noise and computes each pass's loss terms.
        tokens: the token rule (DiT: :class:`~mdtblocks.tokens.PlainRule`; MDT:
            :class:`~mdtblocks.tokens.MaskedTwoPassRule`).
        label_dropout: the classifier-free-guidance label dropout.
        extra_losses: further per-sample terms added to the loss (e.g. :class:`~mdtblocks.alignment.AlignmentLoss`).
    """

    objective: Objective
    tokens: TokenRule = field(default_factory=PlainRule)
    label_dropout: LabelDropout = field(default_factory=LabelDropout)
    extra_losses: Sequence[ExtraLoss] = ()

    small_stream: ClassVar[str] = SMALL_STREAM

    def __post_init__(self) -> None:
        for name in ("draw_times", "draw_noise", "losses", "to_record"):
            if not callable(getattr(self.objective, name, None)):
                raise TypeError(f"objective {type(self.objective).__name__} has no {name}(): not an Objective")
        for name in ("draw", "passes"):
            if not callable(getattr(self.tokens, name, None)):
                raise TypeError(f"tokens {type(self.tokens).__name__} has no {name}(): not a TokenRule")
        object.__setattr__(self, "extra_losses", tuple(self.extra_losses))
        check = getattr(self.tokens, "check_objective", None)
        if check is not None:  # a rule that works with some objectives only (MaskDiT's dropping: per-element terms)
            check(self.objective)
        self._check_extra_passes()

    def _check_extra_passes(self) -> None:
        """Refuse an extra loss that reads a pass the token rule does not make (e.g. the masked pass of a plain rule)."""
        wanted = [(loss, tuple(getattr(loss, "passes", ()))) for loss in self.extra_losses]
        if not any(names for _, names in wanted):
            return
        plan = self.tokens.draw(2, 16, torch.Generator().manual_seed(0))  # an example step: which passes it makes
        made = [p.name for p in self.tokens.passes(plan)]
        for loss, names in wanted:
            missing = [name for name in names if name not in made]
            if missing:
                raise ValueError(
                    f"the {getattr(loss, 'name', type(loss).__name__)} loss reads the {', '.join(map(repr, missing))} "
                    f"pass, but the token rule {self.tokens.kind!r} makes only {', '.join(map(repr, made))}; "
                    "align a pass the rule makes (--align-pass plain aligns 'unmasked')"
                )

    # --- draws --------------------------------------------------------------------------
    def draw_step(
        self,
        model: nn.Module,
        *,
        streams: Streams,
        global_batch: int,
        sample_shape: tuple[int, ...],
        device: torch.device,
    ) -> StepRandomness:
        """Draw one step's randomness for the whole global batch (identical on every rank).

        Order (fixed: resume and the recorded trajectories depend on it): from the CPU
        stream :data:`SMALL_STREAM` the times, the label drops, the mask plan and, when the
        rule's extra pass has its own draws, its label drops; then that pass's noise from
        ``"noise-masked"`` and the noise from ``"noise"``, both on ``device``.

        Args:
            model: the backbone (not a wrapper): its ``num_tokens`` and null class.
            streams: ``(name, device) -> generator`` of this step.
            global_batch: samples in the global batch.
            sample_shape: ``(c, hh, ww)`` of one sample.
            device: where the draws go.
        """
        check_rule_model(self.tokens, model)
        small = streams(self.small_stream, torch.device("cpu"))
        t = self.objective.draw_times(global_batch, small)
        drop = self.label_dropout.draw(global_batch, small)
        plan = self.tokens.draw(global_batch, model.num_tokens, small)
        if plan is not None:
            plan = MaskPlan(
                ids_keep=to_device(plan.ids_keep, device), ids_restore=to_device(plan.ids_restore, device),
                mask=to_device(plan.mask, device),
            )
        like = torch.empty((), device=device).expand(global_batch, *sample_shape)  # shape and device only
        masked_drop = masked_noise = None
        if plan is not None and self.tokens.own_draws:
            masked_drop = to_device(self.label_dropout.draw(global_batch, small), device)
            masked_noise = self.objective.draw_noise(like, streams("noise-masked", device))
        noise = self.objective.draw_noise(like, streams("noise", device))
        routes = draw_routes(self.tokens, model, global_batch, plan, small, device)  # last: the other draws stay the same
        return StepRandomness(
            t=to_device(t, device), noise=noise, drop_label=to_device(drop, device), mask=plan,
            null_class=self.null_class(model), masked_noise=masked_noise, masked_drop_label=masked_drop, routes=routes,
        )

    def draw(self, model: nn.Module, x_start: Image, generator: torch.Generator | None) -> StepRandomness:
        """Draw a step's randomness for ``x_start`` from one generator: times, noise, label drops, plan, then the extra pass's.

        Label drops are drawn in training mode only (``model.training``).

        Args:
            model: the backbone (not a wrapper).
            x_start: the clean batch (its shape and device).
            generator: the source of every draw (required).
        """
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator: the objective must draw t, noise, mask and label drops "
                f"from it, got {type(generator).__name__}"
            )
        check_rule_model(self.tokens, model)
        b, device = x_start.shape[0], x_start.device
        t = self.objective.draw_times(b, generator)
        noise = self.objective.draw_noise(x_start, generator)
        training = model.training
        drop = self.label_dropout.draw(b, generator, device) if training else torch.zeros(b, dtype=torch.bool, device=device)
        plan = self.tokens.draw(b, model.num_tokens, generator, device)
        masked_noise = masked_drop = None
        if plan is not None and self.tokens.own_draws:
            masked_noise = self.objective.draw_noise(x_start, generator)
            masked_drop = self.label_dropout.draw(b, generator, device) if training else torch.zeros_like(drop)
        routes = draw_routes(self.tokens, model, b, plan, generator, device)  # last: the other draws stay the same
        return StepRandomness(t.to(device), noise, drop, plan, self.null_class(model), masked_noise, masked_drop, routes)

    def null_class(self, model: nn.Module) -> int:
        """The label a dropped label becomes (the model's ``num_classes``); refused when the model has no null row."""
        labels = model.y_embedder
        if self.label_dropout.prob > 0 and labels.null_class is None:
            raise ValueError(
                f"label dropout {self.label_dropout.prob} needs a null-class embedding, but the model was built "
                f"without one (class_dropout_prob=0)"
            )
        return labels.num_classes

    # --- loss ---------------------------------------------------------------------------
    def __call__(
        self,
        net: Callable[..., Tensor],
        x_start: Image,
        y: Labels,
        draws: StepRandomness,
        model_kwargs: Mapping[str, Any] | None = None,
        targets: Tensor | None = None,
    ) -> dict[str, Shaped[Tensor, "b"]]:
        """Per-sample loss terms of one (micro) batch.

        Args:
            net: the backbone as called (DDP-, compile- or autocast-wrapped is fine).
            x_start: clean latents.
            y: class labels, before dropout.
            draws: the step's draws for these samples.
            model_kwargs: extra model arguments for every pass.
            targets: per-sample data the extra losses need (REPA: the encoder's features
                of the clean images on the token grid), or ``None``.

        Returns:
            ``(b,)`` tensors: ``"loss"`` (to average and backpropagate); the primary pass's
            terms under their own names (``mse``, ``vb``) and its loss as ``loss_<pass>``;
            every other pass's terms suffixed ``_<pass>``; ``loss_<name>`` of each extra loss;
            and the times ``"t"``.
        """
        out: dict[str, Tensor] = {}
        loss: Tensor | None = None
        for p in self.tokens.passes(draws.mask):
            noise, drop = draws.noise, draws.drop_label
            if p.own_draws:
                if draws.masked_noise is None or draws.masked_drop_label is None:
                    raise ValueError(
                        f"the {p.name} pass has its own draws (masked_draws='independent'), but the StepRandomness has "
                        "masked_noise=None or masked_drop_label=None (draw it with the criterion's draw or draw_step, "
                        "or draw_step_randomness(..., independent_masked_pass=True))"
                    )
                noise, drop = draws.masked_noise, draws.masked_drop_label
            kwargs = {"y": self.label_dropout.apply(y, drop, draws.null_class), **(model_kwargs or {})}
            if p.ids_keep is not None:
                kwargs["ids_keep"] = p.ids_keep
            if p.name in draws.routes:
                kwargs["route"] = draws.routes[p.name]
            rule_losses = getattr(self.tokens, "losses", None)
            with contextlib.ExitStack() as watching:  # extra losses that look inside a pass (alignment taps)
                for extra in self.extra_losses:
                    watch = getattr(extra, "watch", None)
                    if watch is not None:
                        watching.enter_context(watch(p))
                if rule_losses is not None:  # a rule with its own reduction of the objective's pass (MaskDiT's)
                    terms = rule_losses(self.objective, net, x_start, draws.t, noise, kwargs, draws.mask)
                else:
                    terms = self.objective.losses(net, x_start, draws.t, noise, kwargs)
            for name, value in terms.items():
                if name == "loss":
                    out[f"loss_{p.name}"] = value
                else:
                    out[name if p.primary else f"{name}_{p.name}"] = value
            if p.primary:
                out["t"] = draws.t
            weighted = terms["loss"] if p.weight is None else p.weight * terms["loss"]
            loss = weighted if loss is None else loss + weighted
        assert loss is not None, "a token rule makes at least one pass"
        for extra in self.extra_losses:
            value = extra(net, x_start, y, draws, out, targets)
            out[f"loss_{extra.name}"] = value
            loss = loss + extra.weight * value
        out["loss"] = loss
        return out

    def batch_targets(self, images: Tensor, stored: Tensor | None = None) -> Tensor | None:
        """What the extra losses need from the clean batch (``targets`` of :meth:`__call__`), or ``None``.

        Asked once per step by the loop, before the images are encoded: an extra loss with
        ``targets(images, stored)`` gets the batch's stored features (a latent cache's), or
        runs its frozen encoder on ``images``. Without such a loss nothing runs.
        """
        for extra in self.extra_losses:
            make = getattr(extra, "targets", None)
            if callable(make):
                found = make(images, stored)
                if found is not None:
                    return found
        return None

    def logged(self, terms: Mapping[str, Tensor]) -> tuple[str, ...]:
        """The terms the loop logs: ``"loss"``, and every ``loss_*`` term when there are several."""
        parts = tuple(name for name in terms if name.startswith("loss_"))
        return ("loss", *parts) if len(parts) > 1 else ("loss",)

    # --- record -------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """The run record of every axis: ``objective``, ``tokens``, ``label_dropout`` and ``extra_losses``."""
        return {
            "objective": self.objective.to_record(),
            "tokens": self.tokens.to_record(),
            "label_dropout": self.label_dropout.to_record(),
            "extra_losses": [extra.to_record() for extra in self.extra_losses],
        }
