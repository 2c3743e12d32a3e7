"""EDM (Karras et al. 2022) as an objective: preconditioning, noise levels, the Heun sampler and the objective itself."""

from .heun import ChurnOptions, EDMCallback, heun_sampler
from .objective import EDMObjective, EDMPrediction
from .precond import EDMDenoiser, EDMPreconditioning, PreconditionCoefficients
from .sampling import EDM_DEFAULT_STEPS, EDM_SAMPLING
from .schedule import karras_sigmas, log_normal_sigmas, sigma_ramp

__all__ = [
    "EDMObjective", "EDMPrediction", "EDMPreconditioning", "EDMDenoiser", "PreconditionCoefficients",
    "heun_sampler", "ChurnOptions", "EDMCallback", "karras_sigmas", "log_normal_sigmas", "sigma_ramp",
    "EDM_SAMPLING", "EDM_DEFAULT_STEPS",
]
