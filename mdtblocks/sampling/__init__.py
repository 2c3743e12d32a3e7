"""Samplers (DDPM, DDIM, diffusers schedulers) and classifier-free guidance.

Sampling a loaded official MDTv2 checkpoint with the papers' protocol (DDPM, 250 steps,
power-cosine guidance, 3 guided channels)::

    import torch
    from mdtblocks import classifier_free_guidance, create_diffusion, load_official

    model = load_official("mdt_xl2_v2_ckpt.pt").eval()
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([207, 360])
    z = torch.randn(2, 4, 32, 32, generator=g)
    guided = classifier_free_guidance(model, 3.8, scale_pow=4.0, guided_channels=3)
    y = torch.cat([labels, torch.full_like(labels, model.config.num_classes)])  # [cond; uncond]
    latents = create_diffusion("250").p_sample_loop(
        guided, (4, 4, 32, 32), torch.cat([z, z]), clip_denoised=False,
        model_kwargs={"y": y}, progress=True, generator=g,
    )[:2]

or in one call, with any of :data:`SAMPLERS`::

    from mdtblocks.sampling import sample

    latents = sample(model, labels, sampler="dpm_solver++", num_steps=25, cfg_scale=3.8,
                     scale_pow=4.0, guided_channels=3, generator=g)
"""

from ..diffusion.loops import ddim_sample_loop, p_sample_loop
from .guidance import ClassifierFreeGuidance, classifier_free_guidance, guide, power_cosine_of_fraction, power_cosine_scale
from .sample import SAMPLERS, check_sampler, sample
from .schedulers import SCHEDULER_KINDS, diffusers_sample_loop, diffusers_scheduler, make_scheduler, scheduler_model_output

__all__ = [
    "classifier_free_guidance",
    "ClassifierFreeGuidance",
    "power_cosine_scale",
    "power_cosine_of_fraction",
    "guide",
    "check_sampler",
    "p_sample_loop",
    "ddim_sample_loop",
    "make_scheduler",
    "diffusers_scheduler",
    "diffusers_sample_loop",
    "scheduler_model_output",
    "SCHEDULER_KINDS",
    "sample",
    "SAMPLERS",
]
