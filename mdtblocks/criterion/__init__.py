"""The training criterion: objective x token rule x label dropout x extra losses, and the step's draws."""

from .criterion import SMALL_STREAM, Criterion, ExtraLoss, StepLoss
from .draws import StepDraws, StepRandomness, Streams, to_device
from .labels import LabelDropout
from .masked import MaskedDiffusionObjective, rule_of_model
from .record import criterion_from_record, read_criterion

__all__ = [
    "Criterion",
    "ExtraLoss",
    "StepLoss",
    "SMALL_STREAM",
    "StepRandomness",
    "StepDraws",
    "Streams",
    "to_device",
    "LabelDropout",
    "MaskedDiffusionObjective",
    "rule_of_model",
    "criterion_from_record",
    "read_criterion",
]
