"""diffusers pipelines over mdtblocks models."""

from .from_run import pipeline_from_checkpoint
from .labels import label_table, resolve_labels
from .mdt_pipeline import OUTPUT_TYPES, MDTPipeline

__all__ = ["MDTPipeline", "OUTPUT_TYPES", "pipeline_from_checkpoint", "label_table", "resolve_labels"]
