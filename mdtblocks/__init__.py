"""mdtblocks: typed, composable blocks for masked diffusion transformers (MDT, MDTv2) and DiT."""

from .compat import load_official
from .models import PRESETS, DiT, DiTConfig, MaskedDiffusionTransformer, MDTConfig, load_pretrained

__all__ = ["MaskedDiffusionTransformer", "DiT", "MDTConfig", "DiTConfig", "PRESETS", "load_official", "load_pretrained"]
__version__ = "0.1.0"

from .diffusion import GaussianDiffusion, MaskedDiffusionObjective, create_diffusion  # noqa: E402

__all__ += ["create_diffusion", "GaussianDiffusion", "MaskedDiffusionObjective"]

from .sampling import classifier_free_guidance  # noqa: E402

__all__ += ["classifier_free_guidance"]
