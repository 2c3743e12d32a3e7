"""The one training recipe: a :class:`TrainRecipe` row of data (what differs between runs) over one shared ``main``.

``recipes/mdtv2_imagenet256.py``, ``mdt_imagenet256.py`` and ``dit_imagenet256.py`` are
each a row: the model family, the paper's flags, the built-in demo's flags and the
per-size learning rates. The path of one training step from here: :meth:`TrainRecipe.main`
builds model, criterion (objective x token rule x label dropout) and data, records the
criterion in ``config.json``, and :func:`~mdtblocks.training.train` runs the loop, which
calls the :class:`~mdtblocks.criterion.Criterion` on each micro batch.
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

from ...criterion import Criterion, LabelDropout, rule_of_model
from ...objectives import GaussianObjective
from ...folderlock import hold_output_folder
from ...models import PRESETS, DiT, MaskedDiffusionTransformer, SiT
from ...models.maskdit import MaskDiT
from ..adan import Adan
from ..checkpoint import CheckpointWriteError, latest_checkpoint
from ..saving import ResumeRefused
from ..distributed import Distributed, setup_distributed
from ..guard import NonFiniteSteps
from ..loop import train
from ..signals import EXIT_CODES
from ...io import read_json
from .axes import RULE_RATIOS, axes_problems, grid_sampler, learns_sigma, load_init_weights, recipe_criterion
from .checks import config_problems, model_problems, path_problems
from .cli import RecipeConfig, build_parser, choose_config, parse_flags, presets_of
from .align import build_alignment
from .data import load_run_data
from .objective import for_objective, objective_problems
from .run import announce_builtin, model_overrides, setup_logging, train_config, write_run_config

__all__ = ["TrainRecipe", "MODEL_OVERRIDES", "OFFICIAL_FIELDS", "DEMO", "build_optimizer", "build_criterion"]

log = logging.getLogger("mdtblocks.recipe")

OFFICIAL_FIELDS = (
    "optimizer", "adan_betas", "grad_clip", "snr_gamma", "weight_decay", "ema_decay", "mask_ratio", "mask_ratio_range",
    "masked_draws", "objective",
)
"""The flags ``--official`` fixes to the official script's values (learning rate, batch and steps stay free)."""

MODEL_OVERRIDES = ("depth", "hidden_size", "num_heads", "decode_layer")
"""Recipe flags that override a preset's config field (each only where the preset has that field).

(The ratio flags, :data:`~mdtblocks.training.recipe.axes.RULE_RATIOS`, set the token rule's
ratios, not the model's: :func:`~mdtblocks.training.recipe.axes.recipe_tokens`.)"""

DEMO: dict[str, Any] = dict(
    depth=6, hidden_size=128, num_heads=4, image_size=16, vae=None, steps=1800, global_batch_size=32, lr=2e-3,
    ema_decay=0.995, ckpt_every=600, log_every=50, device="cpu", num_workers=0, num_samples=40, flip=False,
)
"""The built-in demo's flags shared by the recipes: digits in pixel space, a CPU-sized model, ~5 minutes on 2 cores."""

_MODEL_CLASSES = {cls.__name__: cls for cls in (MaskedDiffusionTransformer, DiT, SiT, MaskDiT)}


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

        The paper's objective, optimizer, clipping and loss weighting, no weight decay, the preset's
        mask ratios, EMA 0.9999, and (MDT, MDTv2) a masked pass with its own noise and
        label drops, as the official trainers call the loss twice.
        """
        fixed = {name: getattr(self.defaults, name) for name in OFFICIAL_FIELDS}
        fixed.update(weight_decay=0.0, ema_decay=0.9999, mask_ratio=None, mask_ratio_range=None)
        fixed["masked_draws"] = "independent"  # DiT: unused (no masked pass)
        fixed["tokens"] = "preset"
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
        unused = [n for n in MODEL_OVERRIDES + RULE_RATIOS if getattr(cfg, n) is not None and n not in preset_fields]
        if unused:
            flags = ", ".join("--" + n.replace("_", "-") for n in unused)
            parser.error(f"{flags} does not apply to {cfg.model} (a {cls_name} has no such field or ratio)")
        given = parse_flags(RecipeConfig, argv, self.description, defaults)
        problems = config_problems(cfg) + objective_problems(cfg, given) + axes_problems(cfg, PRESETS[cfg.model][0])
        if problems:
            parser.error("; ".join(problems))
        cfg = for_objective(cfg)
        # The model the flags ask for, checked before anything is built (the input side where it is known already).
        refuse_model(cfg, *known_input(cfg))
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
        if dist.is_main:
            log.info("%s", data.summary)
            for warning in data.warnings:
                log.warning("%s", warning)
        size = len(data.dataset)  # type: ignore[arg-type]
        if size < cfg.global_batch_size:
            source = cfg.latents or cfg.data or "the built-in digits"
            parser.error(
                f"the dataset {source} holds {size} samples{' (flips included)' if cfg.flip else ''}, fewer than --global-batch-size "
                f"{cfg.global_batch_size}; use a smaller batch or more data"
            )
        channels, side = data.latent_shape
        cls_name, preset_fields = PRESETS[cfg.model]
        overrides = model_overrides(cfg, [n for n in MODEL_OVERRIDES if n in preset_fields])
        num_classes = cfg.num_classes or data.num_classes
        refuse_model(cfg, {"input_size": side, "in_channels": channels, "num_classes": num_classes}, {
            "input_size": "--image-size" if data.image_size == side and cfg.latents is None
            else f"the latent side ({data.image_size} px / VAE downsampling {data.image_size // side})",
            "num_classes": "--num-classes" if cfg.num_classes else "the dataset's number of classes",
        })
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        model = _MODEL_CLASSES[cls_name].from_preset(
            cfg.model, input_size=side, in_channels=channels, num_classes=num_classes,
            learn_sigma=learns_sigma(cfg, cls_name), **overrides
        )
        try:
            criterion = recipe_criterion(cfg, model)
            if cfg.init_from is not None and latest_checkpoint(cfg.out) is None:
                log.info("initial weights: %s", load_init_weights(model, cfg.init_from))
            # --align: an extra loss of the criterion (REPA's projector joins the model's trained weights)
            alignment, dataset = build_alignment(cfg, model, data.dataset)
            if alignment is not None:  # the criterion checks that its rule makes the aligned passes
                criterion = dataclasses.replace(criterion, extra_losses=(alignment,))
        except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
            parser.error(str(err))
        write_run_config(
            cfg.out, cfg, dist, vae=data.vae, image_size=data.image_size, num_classes=num_classes,
            model_preset=cfg.model, model_overrides=overrides, model_config=model.config.to_dict(),
            vae_provenance=data.vae_provenance,
            id2label=class_names(data.dataset),
            criterion=criterion.to_record(),
        )
        sample_score = None
        # The built-in digits: a digit classifier scores grids that show every class at least once.
        if cfg.latents is None and cfg.data is None and cfg.num_samples >= num_classes == 10 and dist.is_main:
            from ...evaluation.sample_score import digits_scorer

            sample_score = digits_scorer(side, channels)
            log.info("sample grids are scored by a digit classifier (%.3f accuracy on 297 held-out real digits); "
                     "sample_class_accuracy in metrics.jsonl", sample_score.held_out_accuracy)
        try:
            result = train(
                train_config(cfg),
                model=model,
                criterion=criterion,
                dataset=dataset,
                autoencoder=data.autoencoder,
                make_optimizer=lambda params: build_optimizer(cfg, params),
                out=cfg.out,
                dist=dist,
                sampler=grid_sampler(criterion, cfg.sample_steps),
                sample_score=sample_score,
            )
        except ResumeRefused as err:  # the folder holds another run: a usage error, one line
            print(f"error: {err}", file=sys.stderr)
            dist.close()
            raise SystemExit(2) from None
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
        if cfg.pipeline and dist.is_main and getattr(criterion.objective, "diffusers_scheduler", None) is None:
            log.info("no OUT/pipeline: the %r objective has no diffusers scheduler (sample with recipes/sample.py)",
                     criterion.objective.kind)
        elif cfg.pipeline and dist.is_main:
            try:  # a latent run's pipeline carries its VAE (the one in memory: the cache's, or --vae's)
                folder = write_pipeline(result.checkpoint, Path(cfg.out) / "pipeline", data.autoencoder if data.vae else None,
                                        id2label=class_names(data.dataset))
            except (FileNotFoundError, ValueError, TypeError) as err:
                print(f"error: OUT/pipeline was not written (the checkpoints are complete): {err}", file=sys.stderr)
                raise SystemExit(1) from None
            log.info("sampling pipeline (EMA weights, diffusers layout): %s", folder)


def known_input(cfg: RecipeConfig) -> tuple[dict[str, int], dict[str, str]]:
    """The model input known before any data is read: the side in pixel space, side and channels of a latent cache.

    Returns:
        ``(fields, labels)``: model config fields and how to call them in a message.
    """
    if cfg.latents is not None:
        meta = Path(cfg.latents) / "meta.json"
        if meta.is_file():
            shape = read_json(meta).get("latent_shape")
            if isinstance(shape, list) and len(shape) == 3:
                return {"input_size": int(shape[-1]), "in_channels": int(shape[0])}, {
                    "input_size": f"the latent side of {cfg.latents}", "in_channels": f"the latent channels of {cfg.latents}"
                }
        return {}, {}
    if cfg.vae is None:
        return {"input_size": cfg.image_size}, {"input_size": "--image-size"}
    return {}, {}


def refuse_model(cfg: RecipeConfig, known: dict[str, int], labels: dict[str, str]) -> None:
    """Exit 2 with one ``error:`` line if the model the flags ask for cannot be built (see :func:`model_problems`)."""
    preset_fields = PRESETS[cfg.model][1]
    # The ratio flags are the rule's, but obey the ranges of the config fields that record them: checked with them.
    names = [n for n in MODEL_OVERRIDES + RULE_RATIOS if n in preset_fields]
    fields = {**preset_fields, **model_overrides(cfg, names), **known}
    problems = model_problems(cfg, fields, given=[n for n in names if getattr(cfg, n) is not None], labels=labels)
    if problems:
        print(f"error: {'; '.join(problems)}", file=sys.stderr)
        raise SystemExit(2)


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


def class_names(dataset: Any) -> dict[str, str] | None:
    """``{"0": name, ...}``: the dataset's class names by label (the pipelines' ``id2label``), ``None`` if it has none."""
    classes = getattr(dataset, "classes", None)
    return {str(i): str(name) for i, name in enumerate(classes)} if classes else None


def write_pipeline(
    checkpoint: Path, folder: Path, vae: Any, weights_name: str = "ema.safetensors", id2label: dict[str, str] | None = None
) -> Path:
    """``folder``: the checkpoint's EMA weights as an :class:`~mdtblocks.MDTPipeline` folder, replaced whole.

    Written under a temporary name and renamed, so a reader sees the old folder or the new one.
    ``vae`` (an ``AutoencoderKL``, an autoencoder around one, or its folder; ``None``: the
    one the run's ``config.json`` records) goes into the folder for a latent run; one that
    cannot be found stops the export with how to add it (see
    :func:`~mdtblocks.pipelines.pipeline_from_checkpoint`).
    """
    from ...pipelines import pipeline_from_checkpoint  # diffusers' pipeline code: imported only here

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipeline_from_checkpoint(checkpoint, vae=vae, weights_name=weights_name, id2label=id2label).save_pretrained(tmp)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def build_criterion(
    model: torch.nn.Module, *, snr_gamma: float | int | None = None, masked_draws: str = "independent",
    objective: Objective | None = None,
) -> Criterion:
    """The recipes' criterion: ``objective`` (default: the Gaussian diffusion, linear, 1000 steps, learned
    sigma, ``snr_gamma``), the token rule of the model's preset (MDT's two passes with its mask ratios and
    ``masked_draws``; DiT: the plain rule) and the label dropout of its config."""
    if objective is None:
        objective = GaussianObjective("linear", 1000, learn_sigma=True, snr_gamma=snr_gamma)
    elif snr_gamma is not None:
        raise ValueError(f"snr_gamma={snr_gamma} applies to the default Gaussian objective; set it on the objective given")
    tokens = rule_of_model(model, masked_draws)
    return Criterion(objective, tokens, LabelDropout.of_model(model))


def build_optimizer(cfg: RecipeConfig, params: Any) -> torch.optim.Optimizer:
    """The optimizer a recipe config names: Adan (``cfg.adan_betas``, eps 1e-8) or AdamW (torch's betas and eps)."""
    if cfg.optimizer == "adan":
        return Adan(params, lr=cfg.lr, betas=cfg.adan_betas, weight_decay=cfg.weight_decay)
    # The fused kernel (CPU and CUDA) updates every tensor in one pass; --official keeps
    # torch's per-tensor loop, the official scripts' optimizer, to the last bit.
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=not cfg.official)
