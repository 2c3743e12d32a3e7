"""mdtblocks: typed, composable blocks for masked diffusion transformers (MDT, MDTv2) and DiT.

The top level re-exports what most users call; every part is also importable from its
subpackage (``mdtblocks.blocks``, ``mdtblocks.masking``, ``mdtblocks.models``,
``mdtblocks.compat``, ``mdtblocks.diffusion``, ``mdtblocks.objectives``, ``mdtblocks.tokens``,
``mdtblocks.criterion``, ``mdtblocks.sampling``, ``mdtblocks.data``, ``mdtblocks.training``,
``mdtblocks.evaluation``, ``mdtblocks.pipelines``).
"""

from typing import TYPE_CHECKING, Any

from .compat import load_official
from .criterion import Criterion, MaskedDiffusionObjective
from .diffusion import GaussianDiffusion, create_diffusion
from .objectives import GaussianObjective
from .objectives.flow import FlowMatching, TransportSampler, create_transport
from .models import PRESETS, DiT, DiTConfig, MaskDiT, MaskDiTConfig, SiT, MaskedDiffusionTransformer, MDTConfig, forward_flops, load_pretrained
from .sampling import classifier_free_guidance

if TYPE_CHECKING:  # imported on first use (see __getattr__); named here for type checkers and the docs
    from .pipelines import MDTPipeline

__all__ = [
    "MaskedDiffusionTransformer",
    "DiT",
    "SiT",
    "MDTConfig",
    "DiTConfig",
    "MaskDiT",
    "MaskDiTConfig",
    "PRESETS",
    "load_official",
    "load_pretrained",
    "forward_flops",
    "create_diffusion",
    "GaussianDiffusion",
    "MaskedDiffusionObjective",
    "Criterion",
    "GaussianObjective",
    "classifier_free_guidance",
    "create_transport",
    "TransportSampler",
    "FlowMatching",
    "MDTPipeline",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``MDTPipeline`` on first use: importing diffusers' pipeline machinery takes seconds."""
    if name == "MDTPipeline":
        from .pipelines import MDTPipeline

        return MDTPipeline
    raise AttributeError(f"module 'mdtblocks' has no attribute {name!r}")
