"""``MDTPipeline``: class-conditional sampling from an MDT or DiT the way diffusers' DiT pipeline does it."""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from ..models.base import DiffusionBackbone
from ..objectives.base import SchedulerSampling, objective_from_record
from ..sampling.guidance import guide
from ..sampling.schedulers import scheduler_model_output
from .labels import label_table, resolve_labels

__all__ = ["MDTPipeline", "OUTPUT_TYPES"]

OUTPUT_TYPES: tuple[str, ...] = ("pil", "np", "pt", "latent")
"""``pil``: PIL images; ``np``: ``(b, h, w, c)`` floats in [0, 1]; ``pt``: ``(b, c, h, w)``
floats in [0, 1]; ``latent``: the sampled latents (or pixels in [-1, 1]) undecoded. A latent
model without a VAE gives only ``latent``."""


class MDTPipeline(DiffusionPipeline):
    """Sample images for class labels from a :class:`~mdtblocks.MaskedDiffusionTransformer`
    or :class:`~mdtblocks.DiT`, with any diffusers scheduler that fits the model.

    The loop is diffusers' DiT pipeline's: noise from ``randn_tensor``, the batch stacked
    as ``[cond; uncond]`` when guided, the learned-sigma channels dropped before the
    scheduler step (except for a DDPM scheduler that reads them, ``variance_type=
    "learned_range"``). Unlike that pipeline the null class is the model's own (not a
    fixed 1000), the noise is scaled by ``scheduler.init_noise_sigma`` (so Euler works),
    and MDT's power-cosine guidance schedule is available.

    Args:
        transformer: the denoiser.
        scheduler: a diffusers scheduler over the model's training betas (e.g.
            :func:`~mdtblocks.sampling.make_scheduler`); swap with
            ``pipe.scheduler = X.from_config(pipe.scheduler.config)``.
        vae: an ``AutoencoderKL`` for a latent model, ``None`` for a pixel-space model.
        id2label: class id -> name (comma-separated synonyms), for names as labels; int
            keys are accepted too (stored as strings, as JSON has them).
        prediction_type: what the model predicts, in diffusers' words (``"epsilon"``,
            ``"v_prediction"``, ``"sample"``); default: the scheduler's. A scheduler
            configured for another prediction is refused at call time.
        latent_space: whether the model samples a VAE's latents (``True``) or pixels
            (``False``); ``None``: latents if a ``vae`` is given, else decided by the
            channels (other than 1 or 3 cannot be images). A latent model without a VAE
            returns only ``output_type="latent"`` and refuses the image types.
        objective: the record (:meth:`~mdtblocks.objectives.base.Objective.to_record`) of the
            objective the model was trained with, where that objective samples with its
            scheduler through its own loop (:class:`~mdtblocks.objectives.base.SchedulerSampling`,
            e.g. flow matching: the network called at ``t = 1 - sigma`` with ``-velocity`` as the
            step's model output); it checks the scheduler and runs the steps. ``None``: the
            scheduler holds the whole process and takes the network's output as it is (the
            Gaussian diffusion's schedulers), and diffusers' own loop runs.
    """

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]

    def __init__(
        self,
        transformer: DiffusionBackbone,
        scheduler: Any,
        vae: Any = None,
        id2label: dict[str, str] | dict[int, str] | None = None,
        prediction_type: str | None = None,
        latent_space: bool | None = None,
        objective: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(transformer, DiffusionBackbone):
            raise TypeError(
                f"transformer must be an mdtblocks MaskedDiffusionTransformer or DiT, got {type(transformer).__name__}; "
                "for a diffusers DiTTransformer2DModel use mdtblocks.compat.dit_from_diffusers"
            )
        if objective is not None:
            # Refused here, not at the first call; the objective reads the network's output, not the scheduler.
            prediction_type = _recorded_objective(objective, scheduler).kind
        if prediction_type is None:
            prediction_type = scheduler.config.get("prediction_type", "epsilon")
        channels = transformer.config.in_channels
        if vae is not None and int(vae.config.latent_channels) != channels:
            raise ValueError(
                f"the VAE makes {vae.config.latent_channels}-channel latents but the transformer takes {channels} channels"
            )
        if vae is not None and latent_space is False:
            raise ValueError("latent_space=False (a pixel-space model) but a vae was given; pass vae=None")
        if latent_space is None and vae is not None:
            latent_space = True
        self.register_modules(transformer=transformer, scheduler=scheduler, vae=vae)
        table = {str(k): v for k, v in (id2label or {}).items()}
        self.labels = label_table(table)
        self.register_to_config(
            id2label=table or None, prediction_type=prediction_type, latent_space=latent_space,
            objective=dict(objective) if objective is not None else None,
        )

    def _samples_latents(self) -> bool:
        """Whether the model samples a VAE's latents rather than pixels (what ``latent_space`` says,
        or, where it says nothing, channels other than 1 and 3)."""
        recorded = self.config.get("latent_space", None)
        if recorded is not None:
            return bool(recorded)
        return self.vae is not None or self.transformer.config.in_channels not in (1, 3)

    def _check_decoder(self, output_type: str) -> None:
        """Refuse image output from latents without a VAE (they would come back as pictures of latents)."""
        if output_type == "latent" or self.vae is not None or not self._samples_latents():
            return
        raise ValueError(
            f"this pipeline's model samples {self.transformer.config.in_channels}-channel latents of a VAE, but the "
            "pipeline has no VAE to decode them into images; load it with MDTPipeline.from_pretrained(PIPELINE, "
            "vae=AutoencoderKL.from_pretrained(VAE_DIR)) or set pipe.vae (for a training run: python "
            "recipes/export_pipeline.py --run OUT --vae VAE_DIR), or ask for output_type='latent'"
        )

    def get_label_ids(self, label: str | Sequence[str]) -> list[int]:
        """Class ids of label names (as diffusers' ``DiTPipeline.get_label_ids``)."""
        names = [label] if isinstance(label, str) else list(label)
        cfg = self.transformer.config
        return resolve_labels(names, self.labels, cfg.num_classes).tolist()

    def _check_scheduler(self) -> None:
        if self.config.get("objective", None) is not None:
            _recorded_objective(self.config.objective, self.scheduler)
            return
        expected = self.config.prediction_type
        got = self.scheduler.config.get("prediction_type", None)
        if got != expected:
            raise ValueError(
                f"{type(self.scheduler).__name__} has prediction_type={got!r} but the model predicts {expected!r}; "
                f"build the scheduler with prediction_type={expected!r} (X.from_config(pipe.scheduler.config) keeps it)"
            )

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | Sequence[int | str] | Tensor,
        guidance_scale: float | int = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 50,
        output_type: str = "pil",
        return_dict: bool = True,
        *,
        guidance_power: float | int | None = None,
        guided_channels: int | None = None,
        latents: Tensor | None = None,
        **step_kwargs: Any,
    ) -> ImagePipelineOutput | tuple[Any]:
        """Sample one image per class label.

        Args:
            class_labels: ints in ``[0, num_classes)`` or names from ``id2label``.
            guidance_scale: classifier-free guidance scale, at least 1 (1: no guidance).
            generator: source of the initial noise and of any step noise.
            num_inference_steps: scheduler steps.
            output_type: one of :data:`OUTPUT_TYPES`.
            return_dict: return an ``ImagePipelineOutput`` rather than a tuple.
            guidance_power: ``None`` for a constant scale (DiT), else MDT's power-cosine
                schedule with this power (MDT uses 4).
            guided_channels: output channels to guide (``None``: all prediction channels,
                as diffusers' DiT pipeline; the official MDT evaluation guides 3).
            latents: initial ``(b, c, h, w)`` noise instead of a draw.
            **step_kwargs: passed to ``scheduler.step`` (e.g. ``eta`` for DDIM).
        """
        model = self.transformer
        cfg = model.config
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"unknown output_type {output_type!r}; expected one of {OUTPUT_TYPES}")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        if guidance_scale < 1:
            raise ValueError(f"guidance_scale must be at least 1 (1 turns guidance off), got {guidance_scale}")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
        guided = guidance_scale > 1
        if guided and not model.y_embedder.has_null:
            raise ValueError("guidance_scale > 1 needs a null class, but this model was built with class_dropout_prob=0")
        self._check_scheduler()
        self._check_decoder(output_type)
        device = self._execution_device
        y = resolve_labels(class_labels, self.labels, cfg.num_classes).to(device)
        b = y.shape[0]
        shape = (b, cfg.in_channels, cfg.input_size, cfg.input_size)
        dtype = next(model.parameters()).dtype
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape} for {b} labels")
        record = self.config.get("objective", None)
        if record is not None:  # the objective's own loop over the scheduler
            objective = _recorded_objective(record, self.scheduler)
            net, latents, y = guide(
                model, latents, y, cfg.num_classes, guidance_scale if guided else 1.0, scale_pow=guidance_power,
                guided_channels=guided_channels, data_fraction=objective.data_fraction,
            )
            x = objective.diffusers_sample(self.scheduler, net, latents.to(device), {"y": y}, num_inference_steps,
                                           self.progress_bar, **step_kwargs)[:b]
            images = self._decode(x, output_type)
            self.maybe_free_model_hooks()
            return ImagePipelineOutput(images=images) if return_dict else (images,)
        net, latents, y = guide(
            model, latents, y, cfg.num_classes, guidance_scale if guided else 1.0, scale_pow=guidance_power,
            guided_channels=guided_channels, diffusion_steps=self.scheduler.config.num_train_timesteps,
        )
        x = latents.to(device) * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        if "generator" in inspect.signature(self.scheduler.step).parameters:
            step_kwargs.setdefault("generator", generator)
        for t in self.progress_bar(self.scheduler.timesteps):
            t_batch = t.to(device).expand(x.shape[0])
            out = net(self.scheduler.scale_model_input(x, t), t_batch, y)
            out = scheduler_model_output(self.scheduler, out.to(x.dtype), x.shape[1])
            x = self.scheduler.step(out, t, x, **step_kwargs).prev_sample
        x = x[:b]
        images = self._decode(x, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _decode(self, x: Tensor, output_type: str) -> Any:
        """Latents -> images in ``output_type`` (the VAE's scaling factor undone first)."""
        if output_type == "latent":
            return x
        self._check_decoder(output_type)
        if self.vae is not None:
            shift = self.vae.config.get("shift_factor", None) or 0.0  # absent (0) for SD-VAE
            x = self.vae.decode(x.to(self.vae.dtype) / self.vae.config.scaling_factor + shift).sample
        images = (x / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return images
        arr = images.cpu().permute(0, 2, 3, 1).float().numpy()
        return arr if output_type == "np" else self.numpy_to_pil(arr)


def _recorded_objective(record: dict[str, Any], scheduler: Any) -> SchedulerSampling:
    """The objective a pipeline's config records, with ``scheduler`` checked by it.

    Raises:
        ValueError: for an objective that does not sample with a diffusers scheduler itself,
            or a scheduler it cannot sample with.
    """
    objective = objective_from_record(record)
    if not isinstance(objective, SchedulerSampling):
        raise ValueError(
            f"the pipeline records a {objective.kind!r} objective, which does not sample with a diffusers scheduler "
            "itself (no diffusers_sample); sample its checkpoints with recipes/sample.py"
        )
    objective.check_scheduler(scheduler)
    return objective
