"""A pipeline from a training run: the EMA weights of its newest (or a given) checkpoint, with the run's VAE."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from ..data import KLAutoencoder, load_autoencoder, recorded_vae_source, vae_mismatch
from ..criterion.record import read_criterion
from ..io import read_json
from ..models.pretrained import load_pretrained
from ..objectives.base import SchedulerSampling
from ..objectives.sampling_spec import sampling_spec
from ..sampling.schedulers import diffusers_scheduler, make_scheduler
from ..training.checkpoint import latest_checkpoint
from .mdt_pipeline import MDTPipeline

__all__ = ["pipeline_from_checkpoint"]


def _run_folder(path: Path) -> Path | None:
    """The run folder of a run or checkpoint folder (``None`` for a bare checkpoint)."""
    if (path / "checkpoints").is_dir():
        return path
    if path.parent.name == "checkpoints" and (path.parent.parent / "config.json").is_file():
        return path.parent.parent
    return None


def _diffusers_vae(vae: Any) -> nn.Module:
    """The diffusers model inside an mdtblocks autoencoder (``CachedLatents`` -> ``KLAutoencoder`` -> ``AutoencoderKL``)."""
    inner = vae
    while not hasattr(inner, "save_pretrained") and isinstance(getattr(inner, "vae", None), nn.Module):
        inner = inner.vae
    if not (isinstance(inner, nn.Module) and hasattr(inner, "save_pretrained") and hasattr(inner, "config")):
        raise TypeError(
            f"vae must be a diffusers AutoencoderKL (or a folder with one), got {type(vae).__name__}; "
            "a pipeline saves only diffusers models"
        )
    return inner


def _how_to_add(run: Path) -> str:
    return (
        f"add it with: python recipes/export_pipeline.py --run {run} --vae DIR (DIR: the AutoencoderKL folder, "
        f"written with save_pretrained), or in Python pipeline_from_checkpoint({str(run)!r}, vae=DIR)"
    )


def _run_vae(run: Path, settings: dict[str, Any]) -> nn.Module:
    """Load the VAE a run's ``config.json`` records, or fail with how to add it."""
    name, record = settings.get("vae"), settings.get("vae_provenance")
    source = recorded_vae_source(name, record)
    where = f" (folder {record['folder']})" if record and record.get("folder") else ""
    try:
        return _diffusers_vae(load_autoencoder(source, local_files_only=True))
    except (OSError, ValueError) as err:  # FileNotFoundError: gone; ValueError: not an AutoencoderKL folder
        raise FileNotFoundError(
            f"the run {str(run)!r} works in the latent space of the VAE {name!r}{where}, which cannot be loaded "
            f"here ({err}); its pipeline needs that VAE to turn samples into images: {_how_to_add(run)}"
        ) from None


def pipeline_from_checkpoint(
    path: str | os.PathLike,
    *,
    vae: Any = None,
    scheduler: Any = None,
    id2label: dict[str, str] | dict[int, str] | None = None,
    weights_name: str = "ema.safetensors",
    noise_schedule: str | None = None,
    predict: str | None = None,
) -> MDTPipeline:
    """An :class:`MDTPipeline` over a trainer checkpoint's EMA weights, ready for
    ``save_pretrained`` (the sampling weights of a run, in diffusers' folder layout).

    A run's ``config.json`` says whether it works in latent space and with which VAE
    (``vae``, ``vae_provenance``); without ``vae`` that VAE is loaded from where it is
    recorded (the absolute folder, where the name no longer leads to it). A VAE whose
    latent channels, scaling or downsampling differ from the recorded ones is refused.

    Args:
        path: a checkpoint folder (``OUT/checkpoints/0001000``) or a run folder ``OUT``
            (its newest complete checkpoint).
        vae: the run's VAE: an ``AutoencoderKL``, an mdtblocks autoencoder around one, or
            its folder; ``None``: the one the run records (pixel space for a pixel run, and
            for a bare checkpoint without a run).
        scheduler: a diffusers scheduler; default: the one that the objective the run records in
            its ``config.json`` declares for pipelines (``pipeline_scheduler`` of its
            :class:`~mdtblocks.objectives.sampling_spec.SamplingSpec`: DDIM for the Gaussian
            diffusion, also for a run without the record or a bare checkpoint;
            ``FlowMatchEulerDiscreteScheduler`` for flow matching). An objective that samples
            through its own loop (:class:`~mdtblocks.objectives.base.SchedulerSampling`) goes
            into the pipeline's config; an objective without diffusers schedulers is refused.
        id2label: class names, for names as labels.
        weights_name: ``"ema.safetensors"`` (sampling weights) or ``"model.safetensors"`` (raw).
        noise_schedule: overrides the record: DDIM over the Gaussian diffusion of this schedule.
        predict: overrides the record: the prediction (``"epsilon"``, ``"x0"``, ``"v"``) of that DDIM.

    Raises:
        FileNotFoundError: for a run folder without a complete checkpoint, or a latent run
            whose VAE cannot be loaded (the message says how to add it).
        ValueError: ``vae`` makes other latents than the model or the run's record.
    """
    folder = Path(path)
    run = _run_folder(folder)
    if (folder / "checkpoints").is_dir():
        newest = latest_checkpoint(folder)
        if newest is None:
            raise FileNotFoundError(f"{folder} has no complete checkpoint under checkpoints/")
        folder = newest
    model = load_pretrained(folder, weights_name=weights_name)
    settings = read_json(run / "config.json") if run is not None and (run / "config.json").is_file() else {}
    if isinstance(vae, (str, os.PathLike)):
        vae = _diffusers_vae(load_autoencoder(vae))
    elif vae is not None:
        vae = _diffusers_vae(vae)
    elif settings.get("vae") is not None:
        vae = _run_vae(run, settings)  # type: ignore[arg-type]
    latent_space = True if vae is not None else (False if "vae" in settings else None)
    if vae is not None:
        record, ours = settings.get("vae_provenance"), KLAutoencoder(vae)
        changed = vae_mismatch(record, ours) if record else []
        if changed:
            raise ValueError(
                f"the VAE given for the run {str(run)!r} makes other latents than the one it trained on: its "
                f"{', '.join(changed)} (vae_provenance in its config.json); pass the run's VAE"
            )
    objective = read_criterion({"model_config": model.config.to_dict(), **settings}).objective
    overridden = noise_schedule is not None or predict is not None
    if scheduler is None and overridden:
        scheduler = make_scheduler("ddim", noise_schedule=noise_schedule or "linear", predict=predict or "epsilon",
                                   learn_sigma=model.config.learn_sigma)
    elif not overridden:
        # The scheduler the objective declares for pipelines; one without diffusers schedulers is refused here.
        default = diffusers_scheduler(objective, sampling_spec(objective).pipeline_scheduler)
        scheduler = default if scheduler is None else scheduler
    # An objective that runs its own loop over the scheduler is recorded, so from_pretrained samples with its math.
    record = objective.to_record() if isinstance(objective, SchedulerSampling) and not overridden else None
    return MDTPipeline(transformer=model, scheduler=scheduler, vae=vae, id2label=id2label, latent_space=latent_space,
                       objective=record)
