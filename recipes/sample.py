"""Sample a trained checkpoint into an ADM-evaluator ``.npz`` (uint8 NHWC ``arr_0``, labels ``arr_1``) and a PNG grid.

Usage::

    python recipes/sample.py --ckpt runs/mdtv2/checkpoints/0400000 --num-samples 50000 \\
        --sampler ddpm --steps 250 --cfg-scale 3.8 --scale-pow 4
    torchrun --nproc-per-node 8 recipes/sample.py --ckpt ... --num-samples 50000

The run's recipe config (``CKPT/../../config.json``) tells the VAE (``null``: pixel
space) and image size; flags override it. Its criterion record tells the objective the
model was trained with (a run without one was trained with the Gaussian diffusion), which
decides the sampling math; a sampler of another objective is refused. Samples are drawn in global batches of
``--batch-size``; batch ``j`` uses a generator seeded from ``(--seed, j)`` and rank
``r`` of ``W`` draws batches ``r, r + W, ...``. Every rank thus draws different seeds,
the gathered set has no duplicates, and the result does not depend on the number of processes.

Each finished batch is written at once (atomically) to ``OUT/.batches/``, so a killed run
resumes: rerun the same command and only the missing batches are drawn, giving the same
``samples.npz`` as an uninterrupted run (with any number of processes). A part-done
``OUT`` started with other flags is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mdtblocks import load_pretrained
from mdtblocks.blocks import compile_blocks
from mdtblocks.data import grid_scale, load_autoencoder, recorded_vae_source, save_image_grid, to_uint8
from mdtblocks.io import atomic_write, read_json, write_json
from mdtblocks.progress import ProgressRecord, check_settings
from mdtblocks.criterion import read_criterion
from mdtblocks.sampling import check_sampler, sample
from mdtblocks.training import setup_distributed
from mdtblocks.training.randomness import derive_seed
from mdtblocks.training.recipe import exit_on_bad_input, flag, parse_flags, setup_logging
from mdtblocks.training.recipe.run_vae import check_run_vae

log = logging.getLogger("mdtblocks.sample")

# Our flag names -> mdtblocks.sampling.sample's sampler names.
SAMPLER_NAMES = {"ddpm": "ddpm", "ddim": "ddim", "dpm-solver": "dpm_solver++"}


@dataclass(frozen=True)
class SampleConfig:
    """Every field is a ``--flag`` (``python recipes/sample.py --help``)."""

    ckpt: str = flag("", "checkpoint folder (OUT/checkpoints/NNNNNNN) or any save_pretrained folder")
    out: str | None = flag(
        None, "output folder; none: RUN/samples/<ckpt>-<weights>-<sampler><steps>-cfg<scale>[-pow<p>]-seed<seed> "
        "(RUN: the checkpoint's run folder; CKPT/samples/... for a folder outside a run)"
    )
    num_samples: int = flag(64, "images to generate over all processes (50000 for FID)")
    sampler: str | None = flag(
        None, "one of the recorded objective's samplers (gaussian: ddpm, ddim, dpm-solver; edm: heun, euler); "
        "none: its first (gaussian: ddpm, the papers' with 250 steps; edm: heun)"
    )
    steps: int = flag(250, "sampling steps")
    cfg_scale: float = flag(1.0, "classifier-free guidance scale; 1 disables guidance")
    scale_pow: float = flag(0.0, "MDT's power-cosine guidance schedule power (MDT: 4); 0: constant scale (DiT)")
    guided_channels: int | None = flag(None, "output channels to guide; none: all (3 reproduces the official eval)")
    weights: Literal["ema", "model"] = flag("ema", "which weights of the checkpoint to sample")
    batch_size: int = flag(32, "images per batch (per process)")
    labels: str | None = flag(None, "comma-separated class labels, cycled; none: uniform random labels")
    seed: int = flag(0, "seed; each batch's generator derives from (seed, batch index)")
    device: Literal["auto", "cpu", "cuda"] = flag("auto", "sampling device")
    vae: str | None = flag(
        None, "VAE name or folder; none: the run config's (pixel space if it has none); refused if its latents differ from the run's"
    )
    image_size: int | None = flag(None, "image side, a check only: it must equal model input size x VAE downsampling")
    progress: bool = flag(True, "show a progress bar per batch on rank 0")
    compile_blocks: bool = flag(
        False, "torch.compile each transformer block: a compile first (seconds to a minute), then faster steps (the same function)"
    )

    def __post_init__(self) -> None:
        if not self.ckpt:
            raise ValueError("--ckpt is required (a checkpoint folder such as runs/x/checkpoints/0000100)")
        ckpt = Path(self.ckpt)
        if not ckpt.is_dir() or not (ckpt / "config.json").is_file():
            raise ValueError(
                f"--ckpt {self.ckpt!r} is not a checkpoint: expected a folder with config.json and "
                f"{self.weights}.safetensors (such as runs/x/checkpoints/0000100)"
            )
        if not self.cfg_scale >= 1.0:
            raise ValueError(f"--cfg-scale {self.cfg_scale} is below 1; allowed: at least 1 (1 disables guidance)")
        if self.seed < 0:
            raise ValueError(f"--seed {self.seed} is negative; allowed: a non-negative integer")
        for name in ("num_samples", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.scale_pow < 0:
            raise ValueError(f"--scale-pow must be non-negative, got {self.scale_pow}")
        if self.sampler is None:  # the recorded objective's first sampler (checked against it in main)
            run = run_settings(self)
            first = read_criterion(run).objective.samplers[0] if "criterion" in run else "ddpm"
            object.__setattr__(self, "sampler", {v: k for k, v in SAMPLER_NAMES.items()}.get(first, first))


def parse_labels(text: str | None, num_classes: int) -> list[int] | None:
    """Parse ``--labels`` ("3,7,7") and check every label is a real class.

    Args:
        text: the flag's value, or ``None``.
        num_classes: classes the model knows.

    Returns:
        The labels, or ``None`` for random labels.
    """
    if text is None:
        return None
    try:
        labels = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--labels must be comma-separated integers, got {text!r}") from None
    bad = [y for y in labels if not 0 <= y < num_classes]
    if not labels or bad:
        raise ValueError(f"--labels {text!r}: need labels in [0, {num_classes}), got {bad or 'none'}")
    return labels


def run_settings(cfg: SampleConfig) -> dict[str, Any]:
    """The run's recipe config (``CKPT/../../config.json``) if present, else ``{}``."""
    path = Path(cfg.ckpt) / ".." / ".." / "config.json"
    return read_json(path) if path.is_file() else {}


def default_out(cfg: SampleConfig) -> Path:
    """``RUN/samples/<ckpt>-<weights>-<sampler><steps>-cfg<scale>[-pow<p>]-seed<seed>`` (``CKPT/samples/...`` without a run)."""
    ckpt = Path(cfg.ckpt).resolve()
    pow_tag = f"-pow{cfg.scale_pow:g}" if cfg.scale_pow else ""
    tag = f"{ckpt.name}-{cfg.weights}-{cfg.sampler}{cfg.steps}-cfg{cfg.cfg_scale:g}{pow_tag}-seed{cfg.seed}"
    run = ckpt.parent.parent
    return (run / "samples" / tag) if (run / "config.json").is_file() else (ckpt / "samples" / tag)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an uncompressed ``.npz`` atomically (what ADM's evaluator reads)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez(path) would append ".npz" to the temp name
            np.savez(f, **arrays)

    atomic_write(path, write)


def output_settings(cfg: SampleConfig, vae: str | None, image_size: int) -> dict[str, Any]:
    """What decides the samples: every flag but ``--out``, ``--device`` and ``--progress``, with the resolved VAE.

    The number of processes is left out on purpose: batch ``j`` does not depend on it, so a
    killed 8-GPU run may be finished on one.
    """
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "device", "progress")}
    return {**settings, "ckpt": str(Path(cfg.ckpt).resolve()), "vae": vae, "image_size": image_size}


def batch_path(batches: Path, j: int) -> Path:
    """The file of finished batch ``j``."""
    return batches / f"batch-{j:06d}.npz"


def read_batch(path: Path, size: int, side: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    """``(images, labels, channels)`` of a finished batch file, or ``None`` if it is missing or not that batch."""
    try:
        with np.load(path, allow_pickle=False) as f:
            images, labels, channels = f["images"], f["labels"], int(f["channels"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    if images.shape != (size, side, side, 3) or images.dtype != np.uint8 or labels.shape != (size,):
        return None
    return images, labels, channels


def start_batches(out: Path, settings: dict[str, Any], dist: Any) -> Path:
    """``OUT/.batches``, its progress record checked against ``settings`` (every rank) or written (rank 0).

    The flags are recorded before any batch is drawn, so a batch file always belongs to the recorded run.
    """
    batches = out / ".batches"
    if (batches / "progress.json").is_file():
        check_settings(batches / "progress.json", settings, "sampling run")
    dist.barrier()
    if dist.is_main:
        ProgressRecord.open(batches / "progress.json", settings, "sampling run")
    dist.barrier()
    return batches


def gather_batches(batches: Path, cfg: SampleConfig, image_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Every batch file in order: ``(images, labels, channels)`` of the whole sample set."""
    parts = []
    for j in range(math.ceil(cfg.num_samples / cfg.batch_size)):
        part = read_batch(batch_path(batches, j), min(cfg.batch_size, cfg.num_samples - j * cfg.batch_size), image_size)
        if part is None:
            raise RuntimeError(f"batch {j} is missing from {batches} after every rank finished")
        parts.append(part)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), parts[0][2]


def main(argv: list[str] | None = None) -> Path:
    """Generate the samples; rank 0 writes ``samples.npz``, ``grid.png`` and ``sample_config.json``.

    Args:
        argv: command-line arguments (``None``: ``sys.argv``).

    Returns:
        The output folder.
    """
    cfg = SampleConfig(**parse_flags(SampleConfig, argv, description=__doc__))
    dist = setup_distributed(cfg.device)
    setup_logging(dist)
    run = run_settings(cfg)
    vae = cfg.vae if cfg.vae is not None else recorded_vae_source(run.get("vae"), run.get("vae_provenance"))
    out = Path(cfg.out) if cfg.out is not None else default_out(cfg)

    model = load_pretrained(cfg.ckpt, weights_name=f"{cfg.weights}.safetensors").to(dist.device).eval()
    if cfg.compile_blocks:
        compile_blocks(model)
    mc = model.config
    autoencoder = load_autoencoder(vae, channels=mc.in_channels)
    # Another VAE than the run's decodes its latents into wrong pictures: refused unless its latents are the same kind.
    warning = check_run_vae(autoencoder, cfg.vae, run)
    if warning:
        log.warning("%s", warning)
    autoencoder = autoencoder.to(dist.device)
    if autoencoder.latent_channels != mc.in_channels:
        raise ValueError(f"the model takes {mc.in_channels} channels but the VAE {vae!r} makes {autoencoder.latent_channels}")
    # The model and the VAE fix the image size; --image-size and the run config can only confirm it.
    image_size = mc.input_size * autoencoder.downsample
    if cfg.image_size is not None and cfg.image_size != image_size:
        raise ValueError(
            f"--image-size {cfg.image_size} does not match the model's input {mc.input_size} x the VAE's "
            f"downsampling {autoencoder.downsample} = {image_size}"
        )
    if run.get("image_size") not in (None, image_size):
        log.warning("the run config says image_size=%s; sampling %dx%d (model input x VAE downsampling)",
                    run["image_size"], image_size, image_size)
    if cfg.cfg_scale != 1.0 and getattr(mc, "class_dropout_prob", 0.0) <= 0:
        raise ValueError(f"--cfg-scale {cfg.cfg_scale} needs a model trained with label dropout (it has no null class)")
    fixed_labels = parse_labels(cfg.labels, mc.num_classes)
    # What trained the checkpoint: the run's record (or, for a bare checkpoint, the model's own config).
    objective = read_criterion({"model_config": mc.to_dict(), **run}).objective
    sampler = SAMPLER_NAMES.get(cfg.sampler, cfg.sampler)
    check_sampler(objective, sampler)

    num_batches = math.ceil(cfg.num_samples / cfg.batch_size)
    mine = list(range(dist.rank, num_batches, dist.world_size))
    log.info(
        "sampling %d images of %dx%d (%s, %d steps, cfg %g, pow %g) in %d batches on %d process(es) -> %s",
        cfg.num_samples, image_size, image_size, cfg.sampler, cfg.steps, cfg.cfg_scale, cfg.scale_pow,
        num_batches, dist.world_size, out,
    )
    batches = start_batches(out, output_settings(cfg, vae, image_size), dist)

    start = time.perf_counter()
    drawn = 0
    for j in mine:
        first = j * cfg.batch_size
        b = min(cfg.batch_size, cfg.num_samples - first)
        if read_batch(batch_path(batches, j), b, image_size) is not None:
            continue  # finished before a kill
        gen = torch.Generator(device=dist.device).manual_seed(derive_seed(cfg.seed, "sample", j))
        if fixed_labels is None:
            y = torch.randint(mc.num_classes, (b,), generator=gen, device=dist.device)
        else:
            y = torch.tensor([fixed_labels[(first + i) % len(fixed_labels)] for i in range(b)], device=dist.device)
        with torch.no_grad():
            z = sample(
                model, y, sampler=sampler, num_steps=cfg.steps, cfg_scale=cfg.cfg_scale,
                scale_pow=cfg.scale_pow or None, guided_channels=cfg.guided_channels, generator=gen,
                progress=cfg.progress and dist.is_main, objective=objective,
            )
            x = autoencoder.decode(z).float()
        u8 = to_uint8(x)
        if u8.shape[-1] == 1:  # grey (the digits demo): the evaluator's Inception network wants RGB
            u8 = u8.expand(-1, -1, -1, 3)
        save_npz(batch_path(batches, j), images=u8.numpy(), labels=y.cpu().numpy().astype(np.int64),
                 channels=np.asarray(x.shape[1]))
        drawn += 1
    log.info("rank %d drew %d of its %d batches in %.1fs (the rest were done before)", dist.rank, drawn, len(mine),
             time.perf_counter() - start)

    dist.barrier()
    if dist.is_main:
        all_images, all_labels, channels = gather_batches(batches, cfg, image_size)
        save_npz(out / "samples.npz", arr_0=all_images, arr_1=all_labels)
        # Back from uint8 to [-1, 1] (+0.5: the centre of each level, so the grid's own conversion is exact).
        grid = torch.from_numpy(all_images[:64, ..., :channels]).permute(0, 3, 1, 2).float()
        save_image_grid((grid + 0.5) / 127.5 - 1.0, out / "grid.png", scale=grid_scale(image_size))  # small ones enlarged
        write_json(out / "sample_config.json", {**dataclasses.asdict(cfg), "vae": vae, "image_size": image_size,
                                                "objective": objective.to_record(),
                                                "world_size": dist.world_size})
        shutil.rmtree(batches, ignore_errors=True)  # the outputs are complete: the batch files are not needed
        log.info("wrote %s (arr_0 %s uint8, arr_1 labels) and %s", out / "samples.npz", all_images.shape, out / "grid.png")
    dist.barrier()
    dist.close()
    return out


if __name__ == "__main__":
    sys.exit(exit_on_bad_input(main))
