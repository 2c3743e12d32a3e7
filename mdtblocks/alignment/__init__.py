"""Representation alignment: extra losses on a block's tokens (REPA with a frozen encoder, the weight-free Dispersive loss)."""

from .dinov2 import Dinov2Encoder
from .dispersive import DispersiveLoss
from .extra import ALIGN_MODULE, ALIGN_PASSES, AlignmentLoss, alignment_from_record
from .encoder import FrozenEncoder, resample_to_grid, to_unit_rgb
from .inception import InceptionEncoder
from .projector import Projector
from .repa import RepaLoss, gather_targets, negative_cosine
from .tap import FeatureTap

__all__ = [
    "AlignmentLoss",
    "ALIGN_MODULE",
    "ALIGN_PASSES",
    "alignment_from_record",
    "FeatureTap",
    "Projector",
    "RepaLoss",
    "gather_targets",
    "negative_cosine",
    "DispersiveLoss",
    "FrozenEncoder",
    "resample_to_grid",
    "to_unit_rgb",
    "Dinov2Encoder",
    "InceptionEncoder",
]
