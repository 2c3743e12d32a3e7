"""The criterion in a run's ``config.json``: written by the recipes, read by sampling, the pipeline and evaluation.

A run records ``config["criterion"] = Criterion.to_record()``: the objective with all its
options, the token rule, the label dropout and the extra losses. A run written before
this record existed reads as what trained it: the Gaussian diffusion (linear, 1000 steps,
the recipe's ``snr_gamma``) with the rule its model config's legacy mask fields record
(:func:`~mdtblocks.tokens.rule_of_config`: MDT's two-pass rule, or DiT's plain one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..objectives.base import objective_from_record
from ..registry import Registry
from ..objectives.gaussian import GaussianObjective
from ..tokens.legacy import rule_of_config
from ..tokens.maskdit import MaskDiTDropRule
from ..tokens.rules import PlainRule, rule_from_record
from .criterion import Criterion, ExtraLoss
from .labels import LabelDropout

__all__ = ["criterion_from_record", "read_criterion", "legacy_criterion", "EXTRA_LOSSES", "register_extra_loss"]

EXTRA_LOSSES: Registry[ExtraLoss] = Registry("extra loss")
"""``kind`` -> a function that rebuilds an extra loss from its record (none in the package yet)."""


def register_extra_loss(kind: str, from_record: Callable[[Mapping[str, Any]], ExtraLoss]) -> None:
    """Make :func:`criterion_from_record` rebuild extra losses of ``kind``."""
    EXTRA_LOSSES.register(kind, from_record)


def criterion_from_record(record: Mapping[str, Any]) -> Criterion:
    """Rebuild a :class:`Criterion` from :meth:`Criterion.to_record`'s output."""
    if not isinstance(record, Mapping) or "objective" not in record:
        raise ValueError(f"a criterion record is a mapping with an 'objective' entry, got {record!r}")
    if record.get("extra_losses"):
        from .. import alignment  # noqa: F401  (registers the alignment losses' kinds)
    extras = [EXTRA_LOSSES.build(extra) for extra in record.get("extra_losses", [])]
    dropout = record.get("label_dropout", {"prob": 0.1})
    return Criterion(
        objective=objective_from_record(record["objective"]),
        tokens=rule_from_record(record.get("tokens", {"kind": PlainRule.kind})),
        label_dropout=LabelDropout(float(dropout["prob"])),
        extra_losses=tuple(extras),
    )


def legacy_criterion(run: Mapping[str, Any]) -> Criterion:
    """What trained a run written before the criterion record: Gaussian diffusion and its model's mask fields.

    ``run`` is the recipe's ``config.json`` (``model_config`` included), or any part of it; a
    missing field takes the value every recipe used (linear schedule, 1000 steps, epsilon,
    learned sigma, label dropout 0.1, MDT's independent masked draws).
    """
    model = run.get("model_config") or {}
    objective = GaussianObjective(
        noise_schedule=run.get("noise_schedule", "linear"),
        diffusion_steps=int(run.get("diffusion_steps", 1000)),
        learn_sigma=bool(model.get("learn_sigma", True)),
        predict=run.get("predict", "epsilon"),
        snr_gamma=run.get("snr_gamma"),
    )
    tokens = rule_of_config(model, run.get("masked_draws") or "independent")  # the model's legacy mask fields
    if tokens.kind == MaskDiTDropRule.kind:  # MaskDiT came after the record: every MaskDiT run has one
        raise ValueError("a MaskDiT run records its criterion (EDM, MaskDiT's dropping) in config.json, and this one has none")
    return Criterion(objective, tokens, LabelDropout(float(model.get("class_dropout_prob", 0.1))))


def read_criterion(run: Mapping[str, Any]) -> Criterion:
    """The criterion a run's ``config.json`` records, or :func:`legacy_criterion` for a run without the record."""
    if "criterion" in run:
        return criterion_from_record(run["criterion"])
    return legacy_criterion(run)
