"""Token choices over one mask plan: MDT's masking (mask plans, the random mask sampler, the
side-interpolater) and TREAD's token routing (routes and the block-loop router)."""

from .plan import MaskPlan, mark_kept_dynamic, plan_from_ids_keep, validate_ids_keep
from .route import Route, RoutePlan, default_span, route_from_ids_keep
from .router import SpanRouter
from .sampler import MaskSampler
from .side_interpolater import SideInterpolater, scatter_kept

__all__ = ["MaskPlan", "mark_kept_dynamic", "plan_from_ids_keep", "validate_ids_keep", "MaskSampler", "SideInterpolater", "scatter_kept"]
__all__ += ["Route", "RoutePlan", "route_from_ids_keep", "default_span", "SpanRouter"]
