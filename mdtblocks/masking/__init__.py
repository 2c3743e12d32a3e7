"""MDT's masking scheme: mask plans, the random mask sampler, the side-interpolater."""

from .plan import MaskPlan, mark_kept_dynamic, plan_from_ids_keep, validate_ids_keep
from .sampler import MaskSampler
from .side_interpolater import SideInterpolater, scatter_kept

__all__ = ["MaskPlan", "mark_kept_dynamic", "plan_from_ids_keep", "validate_ids_keep", "MaskSampler", "SideInterpolater", "scatter_kept"]
