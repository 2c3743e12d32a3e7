"""Token choices: the mask plan (:mod:`mdtblocks.masking`) and the rules over it that a training step follows."""

from ..masking import MaskPlan, MaskSampler, SideInterpolater, mark_kept_dynamic, plan_from_ids_keep, scatter_kept, validate_ids_keep
from .rules import TOKEN_RULES, MaskedTwoPassRule, PlainRule, TokenPass, TokenRule, register_token_rule, rule_from_record
from .routing import RoutedRule, check_rule_model, draw_routes
from .maskdit import MaskDiTDropRule
from .legacy import rule_of_config

__all__ = [
    "MaskPlan",
    "MaskSampler",
    "SideInterpolater",
    "mark_kept_dynamic",
    "plan_from_ids_keep",
    "scatter_kept",
    "validate_ids_keep",
    "TokenRule",
    "TokenPass",
    "PlainRule",
    "MaskedTwoPassRule",
    "RoutedRule",
    "MaskDiTDropRule",
    "draw_routes",
    "check_rule_model",
    "TOKEN_RULES",
    "register_token_rule",
    "rule_from_record",
    "rule_of_config",
]
