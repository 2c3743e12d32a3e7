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
``OUT`` started with other flags is refused. A finished ``OUT`` is kept: the same command
says so and exits 0, another one is refused; ``--overwrite`` discards what ``OUT`` holds
and draws anew. Ctrl-C stops at once with one line (``interrupted at N of M images; the
same command resumes``) and exit code 130. One run at a time holds ``OUT`` (``OUT/.lock``).
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
from mdtblocks.criterion import read_criterion
from mdtblocks.data import grid_scale, load_autoencoder, recorded_vae_source, save_image_grid, to_uint8
from mdtblocks.folderlock import hold_output_folder
from mdtblocks.interrupt import exit_on_interrupt
from mdtblocks.io import atomic_write, read_json, write_json
from mdtblocks.progress import ProgressRecord, check_settings, settings_disagreement
from mdtblocks.sampling import check_sampler, sample
from mdtblocks.training import Distributed, latest_checkpoint, setup_distributed
from mdtblocks.training.randomness import derive_seed
from mdtblocks.training.recipe import exit_on_bad_input, flag, parse_flags, setup_logging
from mdtblocks.training.recipe.run_vae import check_run_vae

log = logging.getLogger("mdtblocks.sample")

# Our flag names -> mdtblocks.sampling.sample's sampler names.
SAMPLER_NAMES = {"ddpm": "ddpm", "ddim": "ddim", "dpm-solver": "dpm_solver++"}


@dataclass(frozen=True)
class SampleConfig:
    """Every field is a ``--flag`` (``python recipes/sample.py --help``)."""

    ckpt: str = flag("", "checkpoint folder (OUT/checkpoints/NNNNNNN), a run folder OUT (its newest checkpoint) or any save_pretrained folder")
    out: str | None = flag(
        None, "output folder; none: RUN/samples/<ckpt>-<weights>-<sampler><steps>-cfg<scale>[-pow<p>]-seed<seed> "
        "(RUN: the checkpoint's run folder; CKPT/samples/... for a folder outside a run)"
    )
    num_samples: int = flag(64, "images to generate over all processes (50000 for FID)")
    sampler: str | None = flag(
        None, "sampler, one of the run's objective's samplers (Gaussian: ddpm, ddim, dpm-solver; flow: euler, heun, "
        "dopri5, sde_euler, sde_heun; edm: heun, euler); none: ddpm for a Gaussian run, sde_euler for a flow run (the "
        "papers' 250-step evaluations), heun for an EDM run"
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
    overwrite: bool = flag(False, "discard what --out holds (finished samples or a part-done draw) and draw anew")
    # --- flow-matching runs only (--objective flow, recipes/sit_imagenet256.py) -----------------------------
    atol: float = flag(1e-6, "dopri5 absolute tolerance (flow runs)")
    rtol: float = flag(1e-3, "dopri5 relative tolerance (flow runs)")
    last_step: Literal["Mean", "Tweedie", "Euler", "none"] = flag("Mean", "last step of the SDE samplers (flow runs)")
    last_step_size: float = flag(0.04, "length in time of the SDE's last step (flow runs)")
    sde_noise: Literal["code", "paper"] = flag(
        "code", "SDE noise scale: sqrt(2 w dt) as SiT's code (reproduces its numbers) or sqrt(w dt) as its paper (flow runs)"
    )
    time_shift: float | None = flag(None, "shift of the flow time grid towards noise (SD3, LightningDiT); none: no shift (flow runs)")
    guidance_interval: tuple[float, ...] = flag(
        (), "guide only for flow times t in [LO, HI] (0 noise, 1 data), e.g. 0.1 1.0; none given: every step (flow runs)"
    )

    def __post_init__(self) -> None:
        if not self.ckpt:
            raise ValueError("--ckpt is required (a checkpoint folder such as runs/x/checkpoints/0000100)")
        ckpt = Path(self.ckpt)
        if (ckpt / "checkpoints").is_dir():  # a run folder: its newest complete checkpoint
            newest = latest_checkpoint(ckpt)
            if newest is None:
                raise ValueError(f"--ckpt {self.ckpt!r} is a run folder without a complete checkpoint under checkpoints/")
            object.__setattr__(self, "ckpt", str(newest))
            ckpt = newest
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
        if self.guidance_interval:
            lo_hi = self.guidance_interval
            if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= 1 or not 0 <= lo_hi[1] <= 1:
                raise ValueError(f"--guidance-interval {' '.join(map(str, lo_hi))}: expected two flow times LO HI in [0, 1]")
            if lo_hi[0] > lo_hi[1]:
                raise ValueError(f"--guidance-interval {lo_hi[0]} {lo_hi[1]} is reversed: expected LO <= HI")
            if self.scale_pow:
                raise ValueError("--guidance-interval and --scale-pow are two guidance schedules; give one")
        if not (self.atol > 0 and self.rtol > 0 and 0 <= self.last_step_size < 1):
            raise ValueError(f"--atol {self.atol} and --rtol {self.rtol} must be positive, --last-step-size "
                             f"{self.last_step_size} in [0, 1)")
        if self.time_shift is not None and not self.time_shift > 0:
            raise ValueError(f"--time-shift must be positive, got {self.time_shift}")


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


FLOW_ONLY = ("atol", "rtol", "last_step", "last_step_size", "sde_noise", "time_shift", "guidance_interval")
"""Flags of the flow samplers: refused for a Gaussian run."""


def choose_sampler(cfg: SampleConfig, objective: Any, given: dict[str, Any]) -> str:
    """The sampler flag for the checkpoint's objective: ``--sampler``, checked against its samplers, or its default.

    Raises:
        ValueError: a sampler or flow flag of another objective than the one the run records.
    """
    kind = objective.kind
    if kind != "flow":
        stray = [f"--{n.replace('_', '-')}" for n in FLOW_ONLY if n in given]
        if stray:
            raise ValueError(f"{', '.join(stray)} apply to flow-matching runs; {cfg.ckpt} was trained with the {kind!r} objective")
    if cfg.sampler is None:
        return default_sampler(objective)
    names = [name for name, ours in SAMPLER_NAMES.items() if ours in objective.samplers] if kind == "gaussian" else list(objective.samplers)
    if kind in ("gaussian", "flow") and cfg.sampler not in names:
        raise ValueError(
            f"--sampler {cfg.sampler} does not fit {cfg.ckpt}: its run was trained with the {kind!r} objective "
            f"(its config.json), whose samplers are {', '.join(names)}"
        )
    return cfg.sampler


def default_sampler(objective: Any) -> str:
    """The sampler without ``--sampler``: ``sde_euler`` for flow matching (SiT's evaluation), ``ddpm`` otherwise (the papers')."""
    if objective.kind == "flow":
        return "sde_euler"
    return "ddpm" if objective.kind == "gaussian" else objective.samplers[0]


def flow_options(cfg: SampleConfig) -> dict[str, Any]:
    """The flow samplers' options from the flags (:meth:`~mdtblocks.objectives.flow.FlowMatching.sample`)."""
    options: dict[str, Any] = {"shift": cfg.time_shift}
    if cfg.sampler == "dopri5":
        options.update(atol=cfg.atol, rtol=cfg.rtol)
    if cfg.sampler in ("sde_euler", "sde_heun"):
        options.update(last_step=None if cfg.last_step == "none" else cfg.last_step, last_step_size=cfg.last_step_size,
                       noise_form=cfg.sde_noise)
    return options


def run_settings(cfg: SampleConfig) -> dict[str, Any]:
    """The run's recipe config (``CKPT/../../config.json``) if present, else ``{}``."""
    path = Path(cfg.ckpt) / ".." / ".." / "config.json"
    return read_json(path) if path.is_file() else {}


def default_out(cfg: SampleConfig) -> Path:
    """``RUN/samples/<ckpt>-<weights>-<sampler><steps>-cfg<scale>[-pow<p>]-seed<seed>`` (``CKPT/samples/...`` without a run)."""
    ckpt = Path(cfg.ckpt).resolve()
    pow_tag = f"-pow{cfg.scale_pow:g}" if cfg.scale_pow else ""
    sampler = cfg.sampler or default_sampler(read_criterion(run_settings(cfg)).objective)
    tag = f"{ckpt.name}-{cfg.weights}-{sampler}{cfg.steps}-cfg{cfg.cfg_scale:g}{pow_tag}-seed{cfg.seed}"
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
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "device", "progress", "overwrite")}
    settings["guidance_interval"] = list(cfg.guidance_interval)  # as JSON reads it back
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
    given = parse_flags(SampleConfig, argv, description=__doc__)
    cfg = SampleConfig(**given)
    dist = setup_distributed(cfg.device)
    setup_logging(dist)
    run = run_settings(cfg)
    vae = cfg.vae if cfg.vae is not None else recorded_vae_source(run.get("vae"), run.get("vae_provenance"))
    # What trained the checkpoint: the run's record (or, for a bare checkpoint, the model's own config).
    objective = read_criterion({"model_config": read_json(Path(cfg.ckpt) / "config.json"), **run}).objective
    cfg = dataclasses.replace(cfg, sampler=choose_sampler(cfg, objective, given))
    out = Path(cfg.out) if cfg.out is not None else default_out(cfg)
    with exit_on_interrupt(lambda signum: report_interrupt(out, cfg, dist)), hold_output_folder(out, dist):
        if keep_finished(out, cfg, vae, dist):
            dist.close()
            return out
        return draw(cfg, dist, run, vae, out, objective)


def draw(cfg: SampleConfig, dist: Distributed, run: dict[str, Any], vae: str | None, out: Path, objective: Any) -> Path:
    """The sampling of :func:`main` while ``out`` is held: load, draw the missing batches, write the outputs."""
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
    sampler = SAMPLER_NAMES.get(cfg.sampler, cfg.sampler)
    check_sampler(objective, sampler)
    options = flow_options(cfg) if objective.kind == "flow" else {}

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
                guidance_interval=tuple(cfg.guidance_interval) or None, **options,
            )
            x = autoencoder.decode(z).float()
        u8 = to_uint8(x)
        if u8.shape[-1] == 1:  # grey (the digits demo): the evaluator's Inception network wants RGB
            u8 = u8.expand(-1, -1, -1, 3)
        save_npz(batch_path(batches, j), images=u8.numpy(), labels=y.cpu().numpy().astype(np.int64),
                 channels=np.asarray(x.shape[1]))
        drawn += 1
    earlier = f"; {len(mine) - drawn} were finished by an earlier run of this command" if drawn < len(mine) else ""
    log.info("rank %d drew %d of its %d batches in %.1fs%s", dist.rank, drawn, len(mine), time.perf_counter() - start,
             earlier)

    dist.barrier()
    if dist.is_main:
        all_images, all_labels, channels = gather_batches(batches, cfg, image_size)
        save_npz(out / "samples.npz", arr_0=all_images, arr_1=all_labels)
        # Back from uint8 to [-1, 1] (+0.5: the centre of each level, so the grid's own conversion is exact).
        grid = torch.from_numpy(all_images[:64, ..., :channels]).permute(0, 3, 1, 2).float()
        save_image_grid((grid + 0.5) / 127.5 - 1.0, out / "grid.png", scale=grid_scale(image_size))  # small ones enlarged
        write_json(out / "sample_config.json", {**dataclasses.asdict(cfg), "vae": vae, "image_size": image_size,
                                                "objective": objective.to_record(),
                                                "world_size": dist.world_size, "settings": command_settings(cfg, vae)})
        shutil.rmtree(batches, ignore_errors=True)  # the outputs are complete: the batch files are not needed
        log.info("wrote %s (arr_0 %s uint8, arr_1 labels) and %s", out / "samples.npz", all_images.shape, out / "grid.png")
    dist.barrier()
    dist.close()
    return out


def command_settings(cfg: SampleConfig, vae: str | None) -> dict[str, Any]:
    """What decides the samples, known before the model is loaded: :func:`output_settings` less the image size."""
    settings = output_settings(cfg, vae, 0)
    del settings["image_size"]  # follows from the checkpoint and the VAE
    return settings


OUTPUTS = ("samples.npz", "grid.png", "sample_config.json", ".batches")
"""What a sampling run writes into ``--out`` (``sample_config.json`` last: the mark of a finished run)."""


def keep_finished(out: Path, cfg: SampleConfig, vae: str | None, dist: Distributed) -> bool:
    """Whether ``out`` holds this command's finished samples, which are kept (``--overwrite``: cleared first).

    Raises:
        ValueError: ``out`` holds the finished samples of another command (and no ``--overwrite``).
    """
    if cfg.overwrite:
        dist.barrier()
        if dist.is_main:
            for name in OUTPUTS:
                if (out / name).is_dir():
                    shutil.rmtree(out / name)
                else:
                    (out / name).unlink(missing_ok=True)
        dist.barrier()
        return False
    record = out / "sample_config.json"
    if not (record.is_file() and (out / "samples.npz").is_file()):
        return False  # new, or part-done: the batches resume
    recorded = read_json(record)
    mine = command_settings(cfg, vae)
    if "settings" in recorded:
        diff = settings_disagreement(recorded["settings"], mine)
    else:  # written before the settings were recorded: compare the flags it has
        same_keys = [k for k in mine if k in recorded and k not in ("ckpt", "vae")]
        diff = settings_disagreement({k: recorded[k] for k in same_keys}, {k: mine[k] for k in same_keys})
    if diff:
        raise ValueError(
            f"{str(out)!r} holds the finished samples of another command: {diff}; choose another --out for a new "
            f"draw, or give --overwrite to replace them"
        )
    log.info("%s already holds the %d samples of this command (samples.npz, grid.png): kept, nothing drawn; "
             "for a new draw choose another --out or give --overwrite", out, cfg.num_samples)
    return True


def images_done(out: Path, cfg: SampleConfig) -> int:
    """How many of the ``--num-samples`` images ``out`` holds in finished form (batch files or ``samples.npz``)."""
    batches = out / ".batches"
    if not batches.is_dir():
        return cfg.num_samples if (out / "sample_config.json").is_file() else 0
    num_batches = math.ceil(cfg.num_samples / cfg.batch_size)
    return sum(min(cfg.batch_size, cfg.num_samples - j * cfg.batch_size)
               for j in range(num_batches) if batch_path(batches, j).is_file())


def report_interrupt(out: Path, cfg: SampleConfig, dist: Distributed) -> None:
    """The one line of an interrupted job (rank 0 prints it; finished batches are on disk for the resume)."""
    if dist.is_main:
        again = "the same command without --overwrite resumes" if cfg.overwrite else "the same command resumes"
        print(f"interrupted at {images_done(out, cfg)} of {cfg.num_samples} images; {again}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(exit_on_bad_input(main))
