"""Samplers (DDPM, DDIM, diffusers schedulers) and classifier-free guidance."""

from ..diffusion.loops import ddim_sample_loop, ddim_sample_loop_progressive, p_sample_loop, p_sample_loop_progressive
from .guidance import ClassifierFreeGuidance, classifier_free_guidance, power_cosine_scale
from .sample import SAMPLERS, sample
from .schedulers import SCHEDULER_KINDS, diffusers_sample_loop, make_scheduler, scheduler_model_output

__all__ = [
    "classifier_free_guidance",
    "ClassifierFreeGuidance",
    "power_cosine_scale",
    "p_sample_loop",
    "p_sample_loop_progressive",
    "ddim_sample_loop",
    "ddim_sample_loop_progressive",
    "make_scheduler",
    "diffusers_sample_loop",
    "scheduler_model_output",
    "SCHEDULER_KINDS",
    "sample",
    "SAMPLERS",
]
