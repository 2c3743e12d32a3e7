"""diffusers pipelines over mdtblocks models."""

from .labels import label_table, resolve_labels
from .mdt_pipeline import OUTPUT_TYPES, MDTPipeline

__all__ = ["MDTPipeline", "OUTPUT_TYPES", "label_table", "resolve_labels"]
