"""Flow matching (SiT's stochastic interpolants): paths, the objective, ODE/SDE samplers, likelihood, SiT's names.

Time convention: t = 0 is noise, t = 1 is data, and the backbone receives t in [0, 1]
(see :mod:`mdtblocks.objectives.flow.paths` for REPA's and diffusers' conventions).
"""

from .compat import Transport, TransportSampler, create_transport, sit_eps
from .guidance import FlowGuidance, flow_guidance
from .likelihood import Likelihood, bits_per_dim, ode_likelihood, prior_logp, rademacher
from .ode import ODE_METHODS, ode_sample, time_grid
from .paths import DIFFUSION_FORMS, PATHS, GVPPath, LinearPath, Path, VPPath, make_path
from .sde import LAST_STEPS, NOISE_FORMS, SDE_METHODS, sde_sample
from .times import TIME_SAMPLERS, draw_training_times, shift_times
from .transport import LOSS_WEIGHTS, PREDICTIONS, FlowMatching, default_eps

__all__ = [
    "FlowMatching",
    "PREDICTIONS",
    "LOSS_WEIGHTS",
    "default_eps",
    "Path",
    "LinearPath",
    "GVPPath",
    "VPPath",
    "PATHS",
    "make_path",
    "DIFFUSION_FORMS",
    "TIME_SAMPLERS",
    "draw_training_times",
    "shift_times",
    "ODE_METHODS",
    "time_grid",
    "ode_sample",
    "SDE_METHODS",
    "LAST_STEPS",
    "NOISE_FORMS",
    "sde_sample",
    "Likelihood",
    "ode_likelihood",
    "prior_logp",
    "bits_per_dim",
    "rademacher",
    "FlowGuidance",
    "flow_guidance",
    "create_transport",
    "Transport",
    "TransportSampler",
    "sit_eps",
]
