"""Training objectives, one module each, behind one interface (:class:`~mdtblocks.objectives.base.Objective`)."""

from .base import OBJECTIVES, Objective, PointwiseLosses, PointwiseObjective, objective_from_record, register_objective
from .edm import EDMObjective
from .gaussian import GaussianObjective

__all__ = ["Objective", "PointwiseObjective", "PointwiseLosses", "GaussianObjective", "EDMObjective", "OBJECTIVES", "register_objective", "objective_from_record"]
