"""mdtblocks: typed, composable blocks for masked diffusion transformers (MDT, MDTv2) and DiT.

The top level re-exports what most users call; every part is also importable from its
subpackage (``mdtblocks.blocks``, ``mdtblocks.masking``, ``mdtblocks.models``,
``mdtblocks.compat``, ``mdtblocks.diffusion``, ``mdtblocks.sampling``, ``mdtblocks.data``,
``mdtblocks.training``, ``mdtblocks.evaluation``).
"""

from .compat import load_official
from .diffusion import GaussianDiffusion, MaskedDiffusionObjective, create_diffusion
from .models import PRESETS, DiT, DiTConfig, MaskedDiffusionTransformer, MDTConfig, forward_flops, load_pretrained
from .sampling import classifier_free_guidance

__all__ = [
    "MaskedDiffusionTransformer",
    "DiT",
    "MDTConfig",
    "DiTConfig",
    "PRESETS",
    "load_official",
    "load_pretrained",
    "forward_flops",
    "create_diffusion",
    "GaussianDiffusion",
    "MaskedDiffusionObjective",
    "classifier_free_guidance",
]
__version__ = "0.1.0"
