"""Model families assembled from the blocks, and the preset table."""

from .base import DiffusionBackbone
from .config import DiTConfig, MaskDiTConfig, MDTConfig
from .dit import DiT
from .flops import forward_flops
from .maskdit import MaskDiT
from .mdt import MaskedDiffusionTransformer
from .presets import PRESETS
from .pretrained import load_pretrained
from .sit import SiT

__all__ = ["DiffusionBackbone", "DiTConfig", "MDTConfig", "DiT", "SiT", "MaskedDiffusionTransformer", "MaskDiT", "MaskDiTConfig", "PRESETS", "load_pretrained", "forward_flops"]
