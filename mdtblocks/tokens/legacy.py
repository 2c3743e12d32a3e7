"""The token rule that a model config's legacy mask fields record: the one place those fields are read.

The training policy of a run (its mask ratios) belongs to its token rule, which the run
records in ``config.json["criterion"]``. Model configs still carry ``mask_ratio`` (MDT,
MDTv2, MaskDiT) and ``mask_ratio_range`` (MDT, MDTv2): the presets fill them with each
paper's published ratios, and official checkpoints, their config files and runs written
before the criterion record have them. They are read here, as the record of the rule the
architecture was published (or a legacy run trained) with, and nowhere else at training
time; the forward pass never reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .maskdit import MaskDiTDropRule
from .rules import MaskedTwoPassRule, PlainRule, TokenRule

__all__ = ["rule_of_config", "MASKDIT_MAE_WEIGHT"]

MASKDIT_MAE_WEIGHT = 0.1
"""The MAE weight a MaskDiT config's rule gets (the official pre-training's; configs do not record it)."""

_PLAIN_CLASSES = ("DiT", "SiT")


def rule_of_config(
    config: Any, masked_draws: Literal["shared", "independent"] = "independent", masked_weight: float | int = 1.0
) -> TokenRule:
    """The token rule recorded by a model config's legacy mask fields.

    - MaskDiT (a config with ``decoder_depth``): :class:`~mdtblocks.tokens.MaskDiTDropRule`
      at ``mask_ratio`` (``None`` reads as 0, the unmasked fine-tune), MAE weight 0.1.
    - MDT and MDTv2 with a ``mask_ratio``: :class:`~mdtblocks.tokens.MaskedTwoPassRule` of
      ``mask_ratio`` and ``mask_ratio_range``, with ``masked_draws`` and ``masked_weight``.
    - Anything else (DiT, SiT, an MDT with ``mask_ratio=None``): :class:`~mdtblocks.tokens.PlainRule`.

    Args:
        config: a model config (:class:`~mdtblocks.models.config.MDTConfig`, ...) or its
            dict form (``model.config.to_dict()``, a checkpoint's or run's ``config.json``
            model part, optionally with ``"class"``).
        masked_draws: MDT's masked-pass protocol (not a config field).
        masked_weight: weight of MDT's masked pass (not a config field).

    Raises:
        TypeError: ``config`` is neither a mapping nor a config with ``to_dict``.
        ValueError: ratios outside ``[0, 1)`` (as the rules check them).
    """
    if isinstance(config, Mapping):
        fields: Mapping[str, Any] = config
    elif callable(getattr(config, "to_dict", None)):
        fields = config.to_dict()
    else:
        raise TypeError(f"rule_of_config needs a model config or its dict, got {type(config).__name__}")
    ratio = fields.get("mask_ratio")
    if fields.get("class") in _PLAIN_CLASSES:
        return PlainRule()
    if "decoder_depth" in fields or fields.get("class") == "MaskDiT":
        return MaskDiTDropRule(float(ratio or 0.0), mae_weight=MASKDIT_MAE_WEIGHT)
    if ratio is None:
        return PlainRule()
    return MaskedTwoPassRule(float(ratio), float(fields.get("mask_ratio_range") or 0.0), masked_weight, masked_draws)
