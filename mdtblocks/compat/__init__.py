"""Converters from the official MDT, MDTv2 and DiT checkpoint layouts."""

from .checkpoint_file import read_state_dict
from .official import convert_official_state_dict, detect_family, load_official

__all__ = ["load_official", "read_state_dict", "detect_family", "convert_official_state_dict"]
