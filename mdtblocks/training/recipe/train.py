"""The one training recipe: a :class:`TrainRecipe` row of data (what differs between runs) over one shared ``main``.

``recipes/mdtv2_imagenet256.py``, ``mdt_imagenet256.py`` and ``dit_imagenet256.py`` are
each a row: the model family, the paper's flags, the built-in demo's flags and the
per-size learning rates. The path of one training step from here: :meth:`TrainRecipe.main`
builds model, objective and data, :func:`~mdtblocks.training.train` runs the loop, which
calls :class:`~mdtblocks.diffusion.MaskedDiffusionObjective` on each micro batch.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...diffusion import MaskedDiffusionObjective, create_diffusion
from ...folderlock import hold_output_folder
from ...models import PRESETS, DiT, MaskedDiffusionTransformer
from ..adan import Adan
from ..checkpoint import CheckpointWriteError
from ..distributed import Distributed, setup_distributed
from ..guard import NonFiniteSteps
from ..loop import train
from ..signals import EXIT_CODES
from .checks import config_problems, path_problems
from .cli import RecipeConfig, build_parser, choose_config, parse_flags, presets_of
from .data import load_run_data
from .run import announce_builtin, model_overrides, setup_logging, train_config, write_run_config

__all__ = ["TrainRecipe", "MODEL_OVERRIDES", "OFFICIAL_FIELDS", "DEMO", "build_optimizer"]

log = logging.getLogger("mdtblocks.recipe")

OFFICIAL_FIELDS = (
    "optimizer", "adan_betas", "grad_clip", "snr_gamma", "weight_decay", "ema_decay", "mask_ratio", "mask_ratio_range",
    "masked_draws",
)
"""The flags ``--official`` fixes to the official script's values (learning rate, batch and steps stay free)."""

MODEL_OVERRIDES = ("depth", "hidden_size", "num_heads", "decode_layer", "mask_ratio", "mask_ratio_range")
"""Recipe flags that override a preset's config field (each only where the preset has that field)."""

DEMO: dict[str, Any] = dict(
    depth=6, hidden_size=128, num_heads=4, image_size=16, vae=None, steps=1800, global_batch_size=32, lr=2e-3,
    ema_decay=0.995, ckpt_every=600, log_every=50, device="cpu", num_workers=0, num_samples=40,
)
"""The built-in demo's flags shared by the recipes: digits in pixel space, a CPU-sized model, ~5 minutes on 2 cores."""

_MODEL_CLASSES = {cls.__name__: cls for cls in (MaskedDiffusionTransformer, DiT)}


@dataclass(frozen=True)
class TrainRecipe:
    """One training recipe as data.

    Attributes:
        script: the recipe's path, for messages (``"recipes/mdtv2_imagenet256.py"``).
        family: the model family whose presets ``--model`` takes (``"MDTv2"``, ``"MDT"``, ``"DiT"``).
        paper: flags of the real run (the paper's setup), over the :class:`RecipeConfig` defaults.
        builtin: flags of the built-in demo (digits on a CPU), over ``paper``.
        real_run: the command the demo suggests for the real run.
        lr_by_size: learning rate by preset size letter, used when ``lr`` is ``None``.
        description: the ``--help`` text (the script's docstring).
    """

    script: str
    family: str
    paper: Mapping[str, Any]
    builtin: Mapping[str, Any]
    real_run: str
    lr_by_size: Mapping[str, float] = field(default_factory=dict)
    description: str = ""

    @property
    def defaults(self) -> RecipeConfig:
        """The config of the real run when no flag is given."""
        return dataclasses.replace(RecipeConfig(), **self.paper)

    @property
    def official(self) -> dict[str, Any]:
        """The values ``--official`` fixes: the official script's training protocol.

        The paper's optimizer, clipping and loss weighting, no weight decay, the preset's
        mask ratios, EMA 0.9999, and (MDT, MDTv2) a masked pass with its own noise and
        label drops, as the official trainers call the loss twice.
        """
        fixed = {name: getattr(self.defaults, name) for name in OFFICIAL_FIELDS}
        fixed.update(weight_decay=0.0, ema_decay=0.9999, mask_ratio=None, mask_ratio_range=None)
        fixed["masked_draws"] = "independent"  # DiT: unused (no masked pass)
        return fixed

    def configure(self, argv: Sequence[str] | None = None) -> tuple[RecipeConfig, bool]:
        """Parse the command line: ``(config, is_builtin)`` with the size-dependent learning rate filled in."""
        defaults = self.defaults
        builtin = dataclasses.replace(defaults, **self.builtin)
        cfg, is_builtin = choose_config(RecipeConfig, builtin, argv, self.description, defaults=defaults)
        parser = build_parser(RecipeConfig, self.description, defaults)
        if cfg.model not in presets_of(self.family):
            parser.error(f"--model {cfg.model!r} is not a {self.family} preset; choose from {presets_of(self.family)}")
        if cfg.official:
            given = parse_flags(RecipeConfig, argv, self.description, defaults)
            fixed = self.official
            clash = [f"--{n.replace('_', '-')} {given[n]}" for n in fixed if n in given and given[n] != fixed[n]]
            if clash:
                parser.error(
                    f"--official fixes the official {self.family} protocol; drop {', '.join(clash)} "
                    f"(official values: {', '.join(f'{n}={v}' for n, v in fixed.items())})"
                )
            cfg = dataclasses.replace(cfg, **fixed)
        if self.family == "DiT" and "masked_draws" in parse_flags(RecipeConfig, argv, self.description, defaults):
            parser.error("--masked-draws applies to masked models (MDT, MDTv2); DiT has no masked pass")
        if cfg.lr is None:
            size = cfg.model.split("-")[1].split("/")[0]
            if size not in self.lr_by_size:
                parser.error(f"--lr none: {self.script} has no learning rate for size {size!r}; give --lr")
            cfg = dataclasses.replace(cfg, lr=self.lr_by_size[size])
        cls_name, preset_fields = PRESETS[cfg.model]
        unused = [n for n in MODEL_OVERRIDES if getattr(cfg, n) is not None and n not in preset_fields]
        if unused:
            flags = ", ".join("--" + n.replace("_", "-") for n in unused)
            parser.error(f"{flags} does not apply to {cfg.model} (a {cls_name} has no such field)")
        problems = config_problems(cfg)
        if problems:
            parser.error("; ".join(problems))
        return cfg, is_builtin

    def main(self, argv: Sequence[str] | None = None) -> None:
        """Train: parse the flags, build data, model, objective and optimizer, run :func:`~mdtblocks.training.train`."""
        cfg, builtin = self.configure(argv)
        missing = path_problems(cfg)
        if missing:
            build_parser(RecipeConfig, self.description, self.defaults).error("; ".join(missing))
        dist = setup_distributed(cfg.device)
        setup_logging(dist)
        disagreement = config_disagreement(cfg, dist)
        if disagreement:  # every rank sees the same gathered configs, so every rank stops here
            print(f"error: {disagreement}", file=sys.stderr)
            dist.close()
            raise SystemExit(2)
        with hold_output_folder(cfg.out, dist):  # a second run on this --out stops here, on every rank
            self.run(cfg, builtin, dist, argv)

    def run(self, cfg: RecipeConfig, builtin: bool, dist: Distributed, argv: Sequence[str] | None) -> None:
        """The run of :meth:`main` once the flags are checked and ``cfg.out`` is held: data, model, loop, pipeline."""
        if builtin:
            announce_builtin(self.script, self.real_run)

        parser = build_parser(RecipeConfig, self.description, self.defaults)
        given = parse_flags(RecipeConfig, argv, self.description, self.defaults)
        try:
            data = load_run_data(cfg, given=given)
        except (ValueError, FileNotFoundError) as err:  # an empty or damaged dataset: refused before training
            parser.error(str(err))
        size = len(data.dataset)  # type: ignore[arg-type]
        if size < cfg.global_batch_size:
            source = cfg.latents or cfg.data or "the built-in digits"
            parser.error(
                f"the dataset {source} holds {size} samples (flips included), fewer than --global-batch-size "
                f"{cfg.global_batch_size}; use a smaller batch or more data"
            )
        channels, side = data.latent_shape
        cls_name, preset_fields = PRESETS[cfg.model]
        overrides = model_overrides(cfg, [n for n in MODEL_OVERRIDES if n in preset_fields])
        num_classes = cfg.num_classes or data.num_classes
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        model = _MODEL_CLASSES[cls_name].from_preset(
            cfg.model, input_size=side, in_channels=channels, num_classes=num_classes, learn_sigma=True, **overrides
        )
        diffusion = create_diffusion("", "linear", 1000, learn_sigma=True, snr_gamma=cfg.snr_gamma)
        write_run_config(
            cfg.out, cfg, dist, vae=data.vae, image_size=data.image_size, num_classes=num_classes,
            model_preset=cfg.model, model_overrides=overrides, model_config=model.config.to_dict(),
        )
        try:
            result = train(
                train_config(cfg),
                model=model,
                # Without a mask sampler (DiT) the objective is the plain loss.
                objective=MaskedDiffusionObjective(diffusion, masked_draws=cfg.masked_draws),
                dataset=data.dataset,
                autoencoder=data.autoencoder,
                make_optimizer=lambda params: build_optimizer(cfg, params),
                out=cfg.out,
                dist=dist,
                sample_diffusion=create_diffusion(f"ddim{cfg.sample_steps}"),
            )
        except (NonFiniteSteps, CheckpointWriteError) as err:
            # Faults of the run itself, not bugs: one line, no traceback, a non-zero exit.
            print(f"error: {err}", file=sys.stderr)
            dist.close()
            raise SystemExit(1) from None
        dist.close()
        if result.stopped_by is not None:
            log.info("stopped by signal %d at step %d; rerun the same command to resume", result.stopped_by, result.step)
            if EXIT_CODES.get(signal.Signals(result.stopped_by), 1):
                raise SystemExit(EXIT_CODES.get(signal.Signals(result.stopped_by), 1))
            return
        log.info("done: checkpoints in %s/checkpoints, sample grids in %s/samples", cfg.out, cfg.out)
        if cfg.pipeline and dist.is_main:
            folder = write_pipeline(result.checkpoint, Path(cfg.out) / "pipeline", getattr(data.autoencoder, "vae", None))
            log.info("sampling pipeline (EMA weights, diffusers layout): %s", folder)


def config_disagreement(cfg: RecipeConfig, dist: Any) -> str | None:
    """What the ranks' configs disagree on (``None`` if nothing): a node started with other flags.

    Ranks with different seeds, batch sizes or models would train silently different
    shards of one model; the configs are gathered once at start and compared with rank 0's.
    """
    if not dist.enabled:
        return None
    mine = dataclasses.asdict(cfg)
    gathered: list[Any] = [None] * dist.world_size
    torch.distributed.all_gather_object(gathered, mine)
    for rank, other in enumerate(gathered[1:], start=1):
        diff = [k for k in mine if other.get(k) != gathered[0].get(k)]
        if diff:
            flags = ", ".join(f"--{k.replace('_', '-')} {other[k]} (rank 0: {gathered[0][k]})" for k in diff)
            return f"rank {rank} was started with other flags than rank 0: {flags}; start every rank with the same command"
    return None


def write_pipeline(checkpoint: Path, folder: Path, vae: Any) -> Path:
    """``folder``: the checkpoint's EMA weights as an :class:`~mdtblocks.MDTPipeline` folder, replaced whole.

    Written under a temporary name and renamed, so a reader sees the old folder or the new one.
    """
    from ...pipelines import pipeline_from_checkpoint  # diffusers' pipeline code: imported only here

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipeline_from_checkpoint(checkpoint, vae=vae).save_pretrained(tmp)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def build_optimizer(cfg: RecipeConfig, params: Any) -> torch.optim.Optimizer:
    """The optimizer a recipe config names: Adan (``cfg.adan_betas``, eps 1e-8) or AdamW (torch's betas and eps)."""
    if cfg.optimizer == "adan":
        return Adan(params, lr=cfg.lr, betas=cfg.adan_betas, weight_decay=cfg.weight_decay)
    # The fused kernel (CPU and CUDA) updates every tensor in one pass; --official keeps
    # torch's per-tensor loop, the official scripts' optimizer, to the last bit.
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=not cfg.official)
