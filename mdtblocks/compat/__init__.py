"""Converters from the official MDT, MDTv2, DiT and MaskDiT checkpoint layouts, and to and from diffusers' DiT."""

from .checkpoint_file import read_state_dict
from .diffusers_dit import dit_from_diffusers, dit_to_diffusers
from .maskdit import maskdit_from_official, maskdit_to_official
from .official import convert_official_state_dict, detect_family, load_official

__all__ = ["load_official", "read_state_dict", "detect_family", "convert_official_state_dict", "dit_to_diffusers", "dit_from_diffusers", "maskdit_from_official", "maskdit_to_official"]
