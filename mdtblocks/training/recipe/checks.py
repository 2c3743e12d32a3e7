"""Every recipe flag checked before any work: one message that quotes the value and the allowed range.

A bad value found deep inside the trainer (an hour in, after the data loaded) costs an
allocation and reads as a traceback; found here it is one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from ...data import DEFAULT_VAE
from ...models import PRESETS
from ...models.config import DiTConfig, MDTConfig
from ...models.config import config_problems as config_problems_of
from .cli import RecipeConfig

__all__ = ["config_problems", "model_problems", "path_problems", "offline", "vae_problem", "ranges"]


def offline() -> bool:
    """The Hugging Face hub may not be asked (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def vae_problem(vae: str | None) -> str | None:
    """Why ``--vae`` cannot load: a folder that does not exist.

    A value that looks like a path (starts with ``.``, ``/`` or ``~``, or has other than
    one ``/``) must be a folder; a hub name (``org/name``) must be one too when offline
    unless it is in the local hub cache, which the loader checks.
    """
    if vae is None or vae.lower() == "none" or vae == DEFAULT_VAE:
        return None
    if Path(vae).expanduser().is_dir():
        return None
    if vae.startswith((".", "/", "~")) or vae.strip("/").count("/") != 1:
        where = " (offline: HF_HUB_OFFLINE is set)" if offline() else ""
        return f"--vae {vae!r} is not a folder{where}; give a folder holding a diffusers AutoencoderKL or a hub name"
    return None


Check = tuple[str, Callable[[Any], bool], str]


def ranges() -> list[Check]:
    """``(field, accepts value, allowed range)`` for each numeric recipe flag (``None`` passes where allowed)."""

    def positive(v: Any) -> bool:
        return v is not None and math.isfinite(v) and v > 0

    def positive_or_none(v: Any) -> bool:
        return v is None or positive(v)

    def unit_open(v: Any) -> bool:
        return v is None or (math.isfinite(v) and 0.0 <= v < 1.0)

    return [
        ("steps", positive, "a positive integer"),
        ("global_batch_size", positive, "a positive integer"),
        ("micro_batch_size", positive_or_none, "a positive integer or none"),
        ("lr", positive_or_none, "a positive number"),
        ("ema_decay", lambda v: math.isfinite(v) and 0.0 <= v <= 1.0, "[0, 1]"),
        ("seed", lambda v: v >= 0, "a non-negative integer"),
        ("mask_ratio", unit_open, "[0, 1)"),
        ("mask_ratio_range", unit_open, "[0, 1)"),
        ("image_size", positive, "a positive integer"),
        ("num_classes", positive_or_none, "a positive integer or none"),
        ("depth", positive_or_none, "a positive integer"),
        ("hidden_size", positive_or_none, "a positive integer"),
        ("num_heads", positive_or_none, "a positive integer"),
        ("decode_layer", lambda v: v is None or v >= 0, "a non-negative integer"),
        ("weight_decay", lambda v: math.isfinite(v) and v >= 0, "a non-negative number"),
        ("grad_clip", positive_or_none, "a positive number or none"),
        ("snr_gamma", positive_or_none, "a positive number or none"),
        ("ckpt_every", positive, "a positive integer"),
        ("log_every", positive, "a positive integer"),
        ("keep_checkpoints", positive_or_none, "a positive integer or none"),
        ("max_bad_steps", positive, "a positive integer"),
        ("num_workers", lambda v: v >= 0, "a non-negative integer"),
        ("num_samples", lambda v: v >= 0, "a non-negative integer"),
        ("sample_steps", positive, "a positive integer"),
        ("sample_cfg_scale", lambda v: math.isfinite(v) and v >= 1.0, "at least 1 (1: no guidance)"),
        ("align_depth", positive_or_none, "a positive integer or none"),
        ("align_coeff", lambda v: v is None or (math.isfinite(v) and v >= 0), "a non-negative number or none"),
        ("align_projector_dim", positive, "a positive integer"),
        ("adan_betas", lambda v: len(v) == 3 and all(0.0 <= b < 1.0 for b in v), "three numbers in [0, 1)"),
    ]


def config_problems(cfg: RecipeConfig, world_size: int | None = None) -> list[str]:
    """What is wrong with ``cfg`` (empty: nothing), each a sentence naming the flag, its value and the allowed range.

    Args:
        cfg: the parsed recipe config.
        world_size: processes of the job; default: torchrun's ``WORLD_SIZE`` (1 without torchrun).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    problems = []
    for name, accepts, allowed in ranges():
        value = getattr(cfg, name)
        if not accepts(value):
            problems.append(f"--{name.replace('_', '-')} {_show(value)} is outside the allowed range: {allowed}")
    if cfg.mask_ratio is not None and cfg.mask_ratio_range is not None and cfg.mask_ratio + cfg.mask_ratio_range >= 1.0:
        problems.append(
            f"--mask-ratio {cfg.mask_ratio} + --mask-ratio-range {cfg.mask_ratio_range} reaches 1 (every token masked); "
            "their sum must stay below 1"
        )
    if cfg.align == "repa" and cfg.align_encoder is None:
        problems.append("--align repa needs --align-encoder (a local DINOv2 folder, or 'inception')")
    if cfg.align != "repa" and cfg.align_encoder is not None:
        problems.append(f"--align-encoder {cfg.align_encoder} applies to --align repa only (got --align {cfg.align})")
    if cfg.align == "none" and any(getattr(cfg, n) is not None for n in ("align_depth", "align_coeff")):
        problems.append("--align-depth and --align-coeff apply only with --align repa or --align dispersive")
    if cfg.compile and cfg.compile_blocks:
        problems.append("--compile (the whole model) and --compile-blocks (each block) exclude each other; give one")
    if not problems and cfg.global_batch_size % world_size:
        problems.append(
            f"--global-batch-size {cfg.global_batch_size} does not divide over {world_size} processes; "
            f"use a multiple of {world_size}"
        )
    elif not problems and cfg.micro_batch_size is not None:
        per_rank = cfg.global_batch_size // world_size
        if per_rank % cfg.micro_batch_size:
            problems.append(
                f"--micro-batch-size {cfg.micro_batch_size} does not divide the per-process batch {per_rank} "
                f"(--global-batch-size {cfg.global_batch_size} over {world_size} processes)"
            )
    return problems


def path_problems(cfg: RecipeConfig) -> list[str]:
    """Folders the run needs that are not there (``--data``, ``--latents``, a ``--vae`` folder)."""
    problems = []
    if cfg.data is not None and not Path(cfg.data).is_dir():
        problems.append(f"--data {cfg.data!r} is not a folder")
    if cfg.latents is not None and not Path(cfg.latents).is_dir():
        problems.append(f"--latents {cfg.latents!r} is not a folder")
    problem = vae_problem(cfg.vae)
    if problem:
        problems.append(problem)
    return problems


def _show(value: Any) -> str:
    return " ".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def model_problems(
    cfg: RecipeConfig, fields: Mapping[str, Any], given: Collection[str], labels: Mapping[str, str] | None = None
) -> list[str]:
    """What is wrong with the model the flags ask for, checked before anything is built (empty: nothing).

    The same check the model constructors make (:func:`~mdtblocks.models.config.config_problems`),
    so the sentences are the ones a library user sees, with flag names for fields a flag sets.

    Args:
        cfg: the parsed recipe config (``cfg.model`` names the preset).
        fields: the preset's fields with the flags' overrides, plus whatever is known of
            ``input_size``, ``in_channels`` and ``num_classes`` (those missing are not checked yet).
        given: the model flags set (on the command line or by the recipe's demo), as field names.
        labels: how to call fields that no flag sets (e.g. ``{"input_size": "--image-size"}``).
    """
    preset_fields = PRESETS[cfg.model][1]
    config_cls = MDTConfig if "decode_layer" in preset_fields else DiTConfig
    unknown = [n for n in ("input_size", "in_channels", "num_classes") if n not in fields]
    placeholders = {n: 1 for n in unknown}

    def name(field: str) -> str:
        if field in given:
            return "--" + field.replace("_", "-")
        if labels and field in labels:
            return labels[field]
        return f"{cfg.model}'s {field}"

    problems = []
    for problem in config_problems_of(config_cls, {**placeholders, **fields}, skip=unknown):
        text = problem.message(name)
        if problem.field not in given and problem.field in _MODEL_FLAGS:
            text += f"; give --{problem.field.replace('_', '-')}"
        problems.append(text)
    return problems


_MODEL_FLAGS = ("depth", "hidden_size", "num_heads", "decode_layer", "mask_ratio", "mask_ratio_range")
