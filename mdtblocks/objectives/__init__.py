"""Training objectives, one module each, behind one interface (:class:`~mdtblocks.objectives.base.Objective`)."""

from .base import (
    OBJECTIVES, Objective, PointwiseLosses, PointwiseObjective, SchedulerSampling, objective_from_record,
    register_objective,
)
from .edm import EDMObjective
from .gaussian import GaussianObjective
from .sampling_spec import SamplerOption, SamplingSpec, sampling_spec

__all__ = [
    "Objective", "PointwiseObjective", "PointwiseLosses", "SchedulerSampling", "GaussianObjective", "EDMObjective",
    "OBJECTIVES", "register_objective", "objective_from_record", "SamplerOption", "SamplingSpec", "sampling_spec",
]
