"""Reusable network parts: patch embedding, conditioning embeddings, positions, attention, blocks."""

from .attention import BACKENDS, AttentionBackend, SelfAttention, attention
from .biased_attention import biased_attention
from .compile import compile_blocks
from .embeddings import LabelEmbedder, TimestepEmbedder, ZeroNullLabelEmbedder, timestep_frequencies
from .final_layer import FinalLayer
from .patch_embed import PatchEmbed, patchify, unpatchify
from .positions import sincos_1d, sincos_2d
from .relative_bias import RelativePositionBias, gather_relative_index, relative_position_index
from .mlp import Mlp
from .modulated_norm import modulate, modulated_layer_norm
from .transformer_block import AdaLNBlock

__all__ = [
    "BACKENDS", "AttentionBackend", "SelfAttention", "attention",
    "LabelEmbedder", "TimestepEmbedder", "ZeroNullLabelEmbedder", "timestep_frequencies",
    "FinalLayer", "PatchEmbed", "patchify", "unpatchify", "sincos_1d", "sincos_2d",
    "RelativePositionBias", "gather_relative_index", "relative_position_index", "biased_attention",
    "AdaLNBlock", "Mlp", "modulate", "modulated_layer_norm", "compile_blocks",
]
