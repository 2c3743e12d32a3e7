"""The training loop: one straight-line function over small named helpers (DiT ``train.py``, edm2 ``training_loop``).

The loop receives everything it trains (backbone, criterion, dataset, autoencoder,
optimizer factory) and never builds a model or an autoencoder itself; recipes do. It
knows no objective and no token rule: the criterion draws each step's randomness
(:meth:`~mdtblocks.criterion.Criterion.draw_step`) and turns a micro batch into loss terms.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..blocks import compile_blocks
from ..data import Autoencoder
from ..criterion import Criterion, StepLoss, StepRandomness
from ..masking import mark_kept_dynamic
from .batches import BatchStream
from .checkpoint import latest_checkpoint, model_config_json
from .config import TrainConfig
from .distributed import Distributed
from .ema import make_ema, update_ema
from .guard import NonFiniteGuard, step_is_finite
from .parallel import enable_activation_checkpointing, wrap_model
from .precision import AutocastForward
from .progress import Meter, MetricsWriter, progress_bar
from .randomness import step_generator, step_streams
from .samples import SampleScore, save_samples
from .saving import resume, save
from .signals import StopRequest

__all__ = ["train", "TrainResult", "OptimizerFactory", "optimizer_step"]

log = logging.getLogger("mdtblocks.training")

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
"""Builds the optimizer from the (possibly sharded) trainable parameters."""


@dataclass(frozen=True)
class TrainResult:
    """What a finished :func:`train` leaves behind.

    Attributes:
        step: the final step.
        checkpoint: the folder of the last checkpoint.
        resumed_from: the step the run resumed from (0 for a fresh run).
        stopped_by: the signal (SIGTERM, SIGINT) that made the run checkpoint and stop
            before ``cfg.steps``; ``None`` when it ran to the end.
    """

    step: int
    checkpoint: Path
    resumed_from: int
    stopped_by: int | None = None


def train(
    cfg: TrainConfig,
    *,
    model: nn.Module,
    criterion: Criterion,
    dataset: Dataset,
    autoencoder: Autoencoder,
    make_optimizer: OptimizerFactory,
    out: str | os.PathLike,
    dist: Distributed,
    sampler: tuple[str, int] | None = None,
    sample_score: SampleScore | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset`` until ``cfg.steps``, resuming from the newest checkpoint in ``out``.

    Args:
        cfg: loop settings.
        model: the backbone (a freshly initialised one, identical on every rank).
        criterion: the training loss (:class:`~mdtblocks.criterion.Criterion`: objective, token
            rule, label dropout, extra losses); it also draws each step's randomness.
        dataset: ``(x, y)`` pairs: images for ``autoencoder`` to encode, or cached latents
            (with an autoencoder whose ``encode`` is the identity, e.g.
            :class:`~mdtblocks.training.recipe.CachedLatents`).
        autoencoder: maps dataset items to the space the model works in, and back for samples.
        make_optimizer: builds the optimizer from the trainable parameters.
        out: run folder (``checkpoints/``, ``samples/``, ``metrics.jsonl``).
        dist: this process's place in the job (:func:`~mdtblocks.training.setup_distributed`).
        sampler: ``(name, steps)`` of the criterion's objective's sampler for the sample grids
            (e.g. ``("ddim", 50)``); ``None`` skips them.
        sample_score: scores each sample grid's images and labels (e.g. a domain
            classifier's class accuracy); its values go into ``metrics.jsonl`` with the step.

    Faults: a step with a non-finite loss or gradient is skipped exactly and counted
    (``bad_steps`` in ``metrics.jsonl``); ``cfg.max_bad_steps`` in a row raise
    :class:`~mdtblocks.training.guard.NonFiniteSteps`. SIGTERM / SIGINT write a checkpoint
    at the next step boundary (the next logging step under several ranks, where the ranks
    agree on it) and return with ``stopped_by`` set. A failed checkpoint write raises
    :class:`~mdtblocks.training.checkpoint.CheckpointWriteError`.
    """
    out = Path(out)
    device = dist.device
    per_rank, micro, accum = cfg.split(dist.world_size)
    model.to(device).train()
    if isinstance(autoencoder, nn.Module):
        autoencoder.to(device).eval()
    # Value checks read tensors back: a host sync per forward on GPUs, a graph break under compile.
    model.check_values = device.type != "cuda" and not cfg.compile
    ema = make_ema(model)
    model_config = model_config_json(model)  # before FSDP renames the class
    if cfg.activation_checkpointing:
        enable_activation_checkpointing(model)
    # What the step calls: the backbone wrapped for distribution (DDP / FSDP), compile and precision.
    denoiser: nn.Module = wrap_model(model, ema, dist, cfg.strategy)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
    batches = BatchStream(
        dataset, per_rank, seed=cfg.seed, rank=dist.rank, world_size=dist.world_size,
        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
    )
    guard = NonFiniteGuard(device, cfg.max_bad_steps)
    start = resume(out, model, ema, optimizer, batches, cfg, dist, guard)
    if cfg.compile:
        denoiser = torch.compile(denoiser)  # type: ignore[assignment]
    if cfg.compile_blocks:  # after make_ema: the EMA copy that draws the sample grids stays eager
        compile_blocks(model)
    denoiser = AutocastForward(denoiser, device, cfg.precision)
    sample_shape = (model.config.in_channels, model.config.input_size, model.config.input_size)
    rows = local_rows(dist, per_rank)

    meter = Meter(device)
    metrics = MetricsWriter(out / "metrics.jsonl", enabled=dist.is_main)
    bar = progress_bar(cfg.steps, start, dist.is_main)
    log_start(cfg, dist, model_config["class"], model, per_rank, micro, accum, start, out)
    step, ckpt_dir = start, latest_checkpoint(out)
    with StopRequest() as stop:
        step, ckpt_dir, stopped_by = run_steps(
            cfg, step, ckpt_dir, stop, guard, model=model, denoiser=denoiser, ema=ema, criterion=criterion,
            optimizer=optimizer, batches=batches, autoencoder=autoencoder, dataset=dataset, dist=dist, out=out,
            model_config=model_config, sample_shape=sample_shape, rows=rows, micro=micro, accum=accum, meter=meter,
            metrics=metrics, bar=bar, sampler=sampler, sample_score=sample_score,
        )
    bar.close()
    dist.barrier()
    assert ckpt_dir is not None
    return TrainResult(step=step, checkpoint=ckpt_dir, resumed_from=start, stopped_by=stopped_by)


def run_steps(
    cfg: TrainConfig,
    step: int,
    ckpt_dir: Path | None,
    stop: StopRequest,
    guard: NonFiniteGuard,
    *,
    model: nn.Module,
    denoiser: AutocastForward,
    ema: nn.Module,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    batches: BatchStream,
    autoencoder: Autoencoder,
    dataset: Dataset,
    dist: Distributed,
    out: Path,
    model_config: dict[str, Any],
    sample_shape: tuple[int, int, int],
    rows: slice,
    micro: int,
    accum: int,
    meter: Meter,
    metrics: MetricsWriter,
    bar: Any,
    sampler: tuple[str, int] | None,
    sample_score: SampleScore | None = None,
) -> tuple[int, Path | None, int | None]:
    """The steps of :func:`train` from ``step`` to ``cfg.steps``; returns ``(step, last checkpoint, stopping signal)``."""
    device = dist.device
    skipped: int | None = None
    while step < cfg.steps:
        x, y, *stored = batches.next()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        targets = criterion.batch_targets(x, stored[0] if stored else None) if getattr(criterion, "extra_losses", ()) else None
        randomness = criterion.draw_step(
            model, streams=step_streams(cfg.seed, step), global_batch=cfg.global_batch_size,
            sample_shape=sample_shape, device=device,
        ).rows(rows)
        latents = encode(autoencoder, x, step_generator(cfg.seed, f"vae-rank{dist.rank}", step, device))
        losses, grad_norm = optimizer_step(
            denoiser, model, ema, criterion, optimizer, latents, y, randomness,
            micro=micro, accum=accum, grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay, guard=guard, step=step + 1,
            targets=targets,
        )
        step += 1
        meter.add(**losses, grad_norm=grad_norm)
        bar.update(1)

        logging_step = step % cfg.log_every == 0 or step == cfg.steps
        if logging_step:
            bad_steps = guard.check(step)
            record = {"step": step, "lr": optimizer.param_groups[0]["lr"], **meter.read(dist), "bad_steps": bad_steps}
            record["samples_per_s"] = record["steps_per_s"] * cfg.global_batch_size
            skipped = report_skipped(dataset, skipped, dist)
            if skipped is not None:
                record["skipped_images"] = skipped
            metrics.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
        stopped_by = stop_signal(stop, dist, logging_step)
        if step % cfg.ckpt_every == 0 or step == cfg.steps or stopped_by is not None:
            if not logging_step:
                guard.check(step, reset=False)  # never checkpoint past a run of bad steps that should have stopped
            ckpt_dir = save(out, step, model, model_config, ema, optimizer, batches, cfg, dist, guard.in_a_row_now())
            if sampler is not None and cfg.num_samples > 0 and stopped_by is None:
                images, labels = save_samples(
                    out / "samples" / f"{step:07d}.png", ema, criterion.objective, sampler, autoencoder, cfg, dist
                )
                if sample_score is not None and dist.is_main:
                    metrics.write({"step": step, **sample_score(images.float().cpu(), labels.cpu())})
        if stopped_by is not None:
            if dist.is_main:
                log.warning("signal %d: checkpointed step %d to %s and stopping; rerun the command to resume",
                            stopped_by, step, ckpt_dir)
            return step, ckpt_dir, stopped_by
    return step, ckpt_dir, None


def stop_signal(stop: StopRequest, dist: Distributed, logging_step: bool) -> int | None:
    """The signal to stop on after this step, agreed by every rank.

    One process looks at every step. Several ranks must stop at the same step (the
    checkpoint is a collective), so they agree at logging steps, where the metrics
    already take a host sync: the largest signal number any rank received wins.
    """
    if not dist.enabled:
        return stop.signum
    if not logging_step:
        return None
    flag = torch.tensor(float(stop.signum or 0), device=dist.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag.item()) or None


# --- helpers ------------------------------------------------------------------------------


def report_skipped(dataset: Dataset, before: int | None, dist: Distributed) -> int | None:
    """Unreadable images the dataset has skipped so far (``None`` if it cannot tell); logs new ones."""
    count = getattr(dataset, "num_skipped", None)
    if count is None:
        return None
    if dist.is_main and count > (before or 0):
        names = dataset.skipped_names() if hasattr(dataset, "skipped_names") else ""
        log.warning("skipped %d unreadable or corrupt image(s) so far (each replaced by the next readable one)%s",
                    count, f": {names}" if names else "")
    return int(count)


def local_rows(dist: Distributed, per_rank: int) -> slice:
    """Global batch positions of this rank's samples: ``rank + world_size * j`` (see :class:`BatchStream`).

    A slice, so that selecting them is a view of the step's draws: an index tensor made on
    the host would be copied to the GPU at every step, a host-device sync.
    """
    return slice(dist.rank, dist.rank + per_rank * dist.world_size, dist.world_size)


@torch.no_grad()
def encode(autoencoder: Autoencoder, x: Tensor, generator: torch.Generator) -> Tensor:
    """Images -> model space (identity in pixel space and for cached latents), in fp32."""
    return autoencoder.encode(x, generator=generator).float()


def accumulate_gradients(
    denoiser: AutocastForward,
    criterion: StepLoss,
    latents: Tensor,
    y: Tensor,
    randomness: StepRandomness,
    micro: int,
    accum: int,
    targets: Tensor | None = None,
) -> dict[str, Tensor]:
    """Forward and backward ``accum`` micro batches; returns this rank's mean loss terms (on device).

    Each micro loss is the mean over its samples divided by ``accum``, and DDP averages
    over ranks, so the summed gradient is that of the global-batch mean loss whatever
    the split. Gradients are synchronised only on the last micro batch. The terms are
    those the criterion logs (:meth:`~mdtblocks.criterion.Criterion.logged`): ``loss``
    and its token rule's per-pass terms.
    """
    totals: dict[str, Tensor] = {}
    for i in range(accum):
        part = slice(i * micro, (i + 1) * micro)
        sync = i == accum - 1
        rows = randomness.rows(part)  # views: no index tensor to copy to the device
        if rows.mask is not None:
            mark_kept_dynamic(rows.mask)  # one compiled graph for every kept-token count
        with contextlib.nullcontext() if sync else denoiser.no_sync():
            if targets is None:
                terms = criterion(denoiser, latents[part], y[part], rows)
            else:  # the extra losses' per-sample targets (REPA's encoder features)
                terms = criterion(denoiser, latents[part], y[part], rows, targets=targets[part])
            loss = terms["loss"].mean() / accum
            loss.backward()
        for name in criterion.logged(terms):
            value = terms[name].detach().mean() / accum
            totals[name] = totals[name] + value if name in totals else value
    return totals


def optimizer_step(
    denoiser: AutocastForward,
    model: nn.Module,
    ema: nn.Module | Sequence[tuple[nn.Module, float]],
    criterion: StepLoss,
    optimizer: torch.optim.Optimizer,
    latents: Tensor,
    y: Tensor,
    randomness: StepRandomness,
    *,
    micro: int,
    accum: int,
    grad_clip: float | None,
    ema_decay: float,
    guard: NonFiniteGuard | None = None,
    step: int = 0,
    targets: Tensor | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """One optimizer step, in the order of the official trainers: gradients, clip, update, EMA.

    Args:
        denoiser: what the criterion calls (``model`` wrapped for DDP / compile / autocast).
        model: the backbone whose parameters ``optimizer`` updates.
        ema: the EMA model, updated with ``ema_decay``; or ``[(ema_model, decay), ...]`` for
            several averages (the official ``--ema_rate 0.9999,0.9``).
        criterion: the loss (a :class:`~mdtblocks.criterion.Criterion`, or anything with its
            ``__call__`` and ``logged``).
        optimizer: built over ``model``'s trainable parameters.
        latents: this rank's clean batch.
        y: its labels, before dropout.
        randomness: the draws of these samples.
        micro: samples per forward.
        accum: forwards per step (gradient accumulation).
        grad_clip: global-norm clip (``None``: none).
        ema_decay: the decay of ``ema`` when it is one model.
        guard: skips the update (exactly) when the loss or gradient is not finite and counts
            it; ``None`` updates unconditionally.
        step: the number of this step (1-based), for the guard's warning.
        targets: per-sample targets of the extra losses (:meth:`Criterion.batch_targets
            <mdtblocks.criterion.Criterion.batch_targets>`), split with the micro batches; ``None``: none.

    Returns:
        ``(losses, grad_norm)``: the mean loss terms and the gradient norm before clipping, on device.
    """
    losses = accumulate_gradients(denoiser, criterion, latents, y, randomness, micro, accum, targets)
    grad_norm = clip_gradients(model, grad_clip)
    averages = [(ema, ema_decay)] if isinstance(ema, nn.Module) else list(ema)

    def update() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for average, decay in averages:
            update_ema(average, model, decay)

    if guard is None:
        update()
    else:
        finite = step_is_finite(losses["loss"], grad_norm)
        if dist_enabled():  # every rank must take the same decision (the loss is per rank)
            agreed = finite.float()
            torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN)
            finite = agreed.bool()
        guard.apply(finite, step, update, [model, *(a for a, _ in averages)], optimizer)
    return losses, grad_norm


def dist_enabled() -> bool:
    """A process group is running (the guard's flag must then agree over ranks)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def clip_gradients(model: nn.Module, max_norm: float | None) -> Tensor:
    """Clip to a global gradient norm (1.0 for MDTv2); returns the norm before clipping, on device."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm is None:
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def log_start(
    cfg: TrainConfig, dist: Distributed, name: str, model: nn.Module, per_rank: int, micro: int, accum: int, start: int, out: Path
) -> None:
    """Say what is being trained, where, and how the batch is split."""
    if not dist.is_main:
        return
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "training %s (%.2fM parameters) on %d x %s, %s, %s; global batch %d = %d ranks x %d micro x %d accumulation; "
        "steps %d -> %d; output %s",
        name, params / 1e6, dist.world_size, dist.device.type, cfg.precision, cfg.strategy,
        cfg.global_batch_size, dist.world_size, micro, accum, start, cfg.steps, out,
    )
