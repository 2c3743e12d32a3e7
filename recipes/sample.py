"""Sample a trained checkpoint into an ADM-evaluator ``.npz`` (uint8 NHWC ``arr_0``, labels ``arr_1``) and a PNG grid.

Usage::

    python recipes/sample.py --ckpt runs/mdtv2/checkpoints/0400000 --num-samples 50000 \\
        --sampler ddpm --steps 250 --cfg-scale 3.8 --scale-pow 4
    torchrun --nproc-per-node 8 recipes/sample.py --ckpt ... --num-samples 50000

The run's recipe config (``CKPT/../../config.json``) tells the VAE (``null``: pixel
space) and image size; flags override it. Its criterion record tells the objective the
model was trained with (a run without one was trained with the Gaussian diffusion), which
decides the sampling math: the objective declares its samplers, their defaults and the
flags of their options (``--ckpt RUN --help`` lists that run's; its ``sampling`` spec,
:mod:`mdtblocks.objectives.sampling_spec`). A sampler or an option flag of another
objective is refused. Samples are drawn in global batches of
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

import argparse
import contextlib
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
from mdtblocks.objectives import OBJECTIVES, SamplingSpec, sampling_spec
from mdtblocks.progress import ProgressRecord, check_settings, settings_disagreement
from mdtblocks.sampling import check_sampler, sample
from mdtblocks.training import Distributed, latest_checkpoint, setup_distributed
from mdtblocks.training.randomness import derive_seed
from mdtblocks.training.recipe import build_parser, exit_on_bad_input, flag, setup_logging
from mdtblocks.training.recipe.cli import add_flags
from mdtblocks.training.recipe.run_vae import check_run_vae

log = logging.getLogger("mdtblocks.sample")


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
        None, "sampler, one of the samplers of the objective the run records (listed below with their options); none: "
        "that objective's default"
    )
    steps: int | None = flag(None, "sampling steps; none: the default of the objective the run records (listed below)")
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
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.scale_pow < 0:
            raise ValueError(f"--scale-pow must be non-negative, got {self.scale_pow}")


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


HELP = ("-h", "--help")


@dataclass(frozen=True)
class Command:
    """A parsed command: the flags every run has, the objective the checkpoint records, and its samplers' options.

    Attributes:
        cfg: the common flags, ``sampler`` and ``steps`` resolved (the objective's defaults where not given).
        objective: the objective the run was trained with (its record in the run's ``config.json``).
        spec: what that objective offers a sampling command (:func:`~mdtblocks.objectives.sampling_spec`).
        options: every option of its samplers by name (given or default), as the flags give them.
    """

    cfg: SampleConfig
    objective: Any
    spec: SamplingSpec
    options: dict[str, Any]

    @property
    def sampler(self) -> str:
        """The objective's name of the chosen sampler (``--sampler`` is its flag name)."""
        return self.spec.sampler_flags(tuple(self.objective.samplers))[self.cfg.sampler]

    def keywords(self) -> dict[str, Any]:
        """What the options set in :func:`mdtblocks.sampling.sample` for the chosen sampler."""
        return self.spec.keywords(self.sampler, self.options)


def run_objective(cfg: SampleConfig) -> Any:
    """The objective that trained the checkpoint: the run's record (or, for a bare checkpoint, the model's own config)."""
    return read_criterion({"model_config": read_json(Path(cfg.ckpt) / "config.json"), **run_settings(cfg)}).objective


def options_class(objective: Any, spec: SamplingSpec) -> type:
    """A dataclass with one flag per option of ``objective``'s samplers (for :func:`add_flags`)."""
    common = {f.name for f in dataclasses.fields(SampleConfig)}
    clash = [o.flag for o in spec.options if o.name in common]
    if clash:
        raise ValueError(f"the {objective.kind!r} objective declares sampler options {', '.join(clash)}, flags that "
                         "recipes/sample.py has for every run; rename them in its sampling spec")
    fields = [(o.name, o.type, flag(o.default, o.help)) for o in spec.options]
    return dataclasses.make_dataclass(f"{type(objective).__name__}Options", fields, frozen=True)


def known_specs() -> dict[str, tuple[Any, SamplingSpec]]:
    """``kind -> (objective, spec)`` of every registered objective that builds from its bare kind (its defaults)."""
    known = {}
    for kind in sorted(OBJECTIVES):
        try:
            objective = OBJECTIVES.build({"kind": kind})
        except (ValueError, TypeError, KeyError):
            continue  # needs options to be built: its flags show with --ckpt of such a run
        known[kind] = (objective, sampling_spec(objective))
    return known


def add_option_group(parser: argparse.ArgumentParser, objective: Any, spec: SamplingSpec, skip: set[str]) -> None:
    """The objective's samplers, defaults and option flags as a group of ``parser``'s help (those in ``skip`` left out)."""
    samplers = ", ".join(spec.sampler_flags(tuple(objective.samplers)))
    default = spec.default_sampler_flag(tuple(objective.samplers))
    shared = [o.flag for o in spec.options if o.name in skip]
    group = parser.add_argument_group(
        f"runs of the {objective.kind!r} objective",
        f"--sampler {samplers} (default: {default}, {spec.default_steps} steps)"
        + (f"; also {', '.join(shared)} as above" if shared else ""),
    )
    cls = options_class(objective, spec)
    kept = [f for f in dataclasses.fields(cls) if f.name not in skip]
    add_flags(group, dataclasses.make_dataclass(cls.__name__, [(f.name, f.type, f) for f in kept], frozen=True))
    skip.update(f.name for f in kept)


def print_help(given: dict[str, Any]) -> None:
    """``--help``: the common flags, then the samplers and options of the run's objective (``--ckpt``) or of each known one."""
    parser = build_parser(SampleConfig, __doc__)
    objective = None
    if "ckpt" in given:
        with contextlib.suppress(ValueError, FileNotFoundError):
            objective = run_objective(SampleConfig(**given))
    groups = {objective.kind: (objective, sampling_spec(objective))} if objective is not None else known_specs()
    skip: set[str] = set()
    for objective, spec in groups.values():
        add_option_group(parser, objective, spec, skip)
    parser.print_help()


def foreign_flags(rest: list[str], objective: Any, cfg: SampleConfig) -> None:
    """Refuse option flags of another objective's samplers, naming the run's objective.

    Raises:
        ValueError: ``rest`` (what the run's flags left) holds such a flag.
    """
    names = {token[2:].split("=")[0].replace("-", "_") for token in rest if token.startswith("--")}
    theirs = {
        option.flag: kind for kind, (_, spec) in known_specs().items() if kind != objective.kind
        for option in spec.options if option.name in names
    }
    if theirs:
        kinds = ", ".join(repr(k) for k in sorted(set(theirs.values())))
        raise ValueError(f"{', '.join(theirs)} apply to runs of the {kinds} objective; {cfg.ckpt} was trained with the "
                         f"{objective.kind!r} objective (its config.json), whose samplers take none of them")


def parse_command(argv: list[str] | None) -> Command:
    """The command line, read in two passes: the common flags (``--ckpt`` among them), then those of the run's objective.

    Raises:
        SystemExit: after ``--help`` (0), or for an unknown flag or a bad value (2, argparse's message).
        ValueError: bad input: a flag of another objective, a sampler it does not have, an option value it refuses.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    common = build_parser(SampleConfig, __doc__)
    known, _ = common.parse_known_args([a for a in argv if a not in HELP])
    given = _tuples(vars(known))
    if any(a in HELP for a in argv):
        print_help(given)
        raise SystemExit(0)
    cfg = SampleConfig(**given)
    objective = run_objective(cfg)
    spec = sampling_spec(objective)
    options_cls = options_class(objective, spec)
    parser = build_parser(SampleConfig, __doc__)
    add_flags(parser.add_argument_group(f"runs of the {objective.kind!r} objective"), options_cls)
    namespace, rest = parser.parse_known_args(argv)
    if rest:
        foreign_flags(rest, objective, cfg)
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    given = _tuples(vars(namespace))
    options = {**spec.defaults(), **{k: v for k, v in given.items() if k in spec.defaults()}}
    cfg = SampleConfig(**{k: v for k, v in given.items() if k not in options})  # as the second pass read them
    cfg = dataclasses.replace(cfg, sampler=choose_sampler(cfg, objective, spec),
                              steps=cfg.steps if cfg.steps is not None else spec.default_steps)
    problems = spec.problems(options, {**dataclasses.asdict(cfg), **options})
    if problems:
        raise ValueError("; ".join(problems))
    return Command(cfg, objective, spec, options)


def _tuples(given: dict[str, Any]) -> dict[str, Any]:
    """Flags of several values as tuples (argparse gives lists)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}


def choose_sampler(cfg: SampleConfig, objective: Any, spec: SamplingSpec) -> str:
    """The ``--sampler`` value for the checkpoint's objective: the flag, checked against its samplers, or its default.

    Raises:
        ValueError: a sampler the objective the run records does not have.
    """
    samplers = tuple(objective.samplers)
    if cfg.sampler is None:
        return spec.default_sampler_flag(samplers)
    names = list(spec.sampler_flags(samplers))
    if cfg.sampler not in names:
        raise ValueError(
            f"--sampler {cfg.sampler} does not fit {cfg.ckpt}: sampler {cfg.sampler!r} does not belong to the "
            f"{objective.kind!r} objective its run was trained with (its config.json), whose samplers are {', '.join(names)}"
        )
    return cfg.sampler


def run_settings(cfg: SampleConfig) -> dict[str, Any]:
    """The run's recipe config (``CKPT/../../config.json``) if present, else ``{}``."""
    path = Path(cfg.ckpt) / ".." / ".." / "config.json"
    return read_json(path) if path.is_file() else {}


def default_out(cfg: SampleConfig) -> Path:
    """``RUN/samples/<ckpt>-<weights>-<sampler><steps>-cfg<scale>[-pow<p>]-seed<seed>`` (``CKPT/samples/...`` without a run).

    A ``cfg`` without ``sampler`` or ``steps`` takes the defaults of the objective the run records.
    """
    ckpt = Path(cfg.ckpt).resolve()
    pow_tag = f"-pow{cfg.scale_pow:g}" if cfg.scale_pow else ""
    sampler, steps = cfg.sampler, cfg.steps
    if sampler is None or steps is None:
        objective = read_criterion(run_settings(cfg)).objective
        spec = sampling_spec(objective)
        sampler = sampler or spec.default_sampler_flag(tuple(objective.samplers))
        steps = steps or spec.default_steps
    tag = f"{ckpt.name}-{cfg.weights}-{sampler}{steps}-cfg{cfg.cfg_scale:g}{pow_tag}-seed{cfg.seed}"
    run = ckpt.parent.parent
    return (run / "samples" / tag) if (run / "config.json").is_file() else (ckpt / "samples" / tag)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an uncompressed ``.npz`` atomically (what ADM's evaluator reads)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez(path) would append ".npz" to the temp name
            np.savez(f, **arrays)

    atomic_write(path, write)


def output_settings(command: Command, vae: str | None, image_size: int) -> dict[str, Any]:
    """What decides the samples: every flag but ``--out``, ``--device`` and ``--progress`` (the objective's
    sampler options included), with the resolved VAE.

    The number of processes is left out on purpose: batch ``j`` does not depend on it, so a
    killed 8-GPU run may be finished on one.
    """
    cfg = command.cfg
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "device", "progress", "overwrite")}
    settings.update(option_values(command))
    return {**settings, "ckpt": str(Path(cfg.ckpt).resolve()), "vae": vae, "image_size": image_size}


def option_values(command: Command) -> dict[str, Any]:
    """The objective's sampler options by name, as JSON reads them back (several values as a list)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in command.options.items()}


def as_recorded(settings: dict[str, Any], recorded: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as the command that wrote ``recorded`` would have recorded them: its flags that this
    command no longer has (an earlier version's) at their recorded values, options it did not have yet
    (``defaults``: this objective's) left out where they are at their defaults."""
    older = {k: v for k, v in recorded.items() if k not in settings}
    newer = {k for k in defaults if k not in recorded and settings.get(k) == _json(defaults[k])}
    return {**{k: v for k, v in settings.items() if k not in newer}, **older}


def _json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


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


def start_batches(out: Path, settings: dict[str, Any], dist: Any, defaults: dict[str, Any] | None = None) -> Path:
    """``OUT/.batches``, its progress record checked against ``settings`` (every rank) or written (rank 0).

    ``defaults``: the objective's sampler options at their defaults (see :func:`as_recorded`).

    The flags are recorded before any batch is drawn, so a batch file always belongs to the recorded run.
    """
    batches = out / ".batches"
    if (batches / "progress.json").is_file():
        settings = as_recorded(settings, read_json(batches / "progress.json").get("settings", {}), defaults or {})
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
    command = parse_command(argv)
    cfg = command.cfg
    dist = setup_distributed(cfg.device)
    setup_logging(dist)
    run = run_settings(cfg)
    vae = cfg.vae if cfg.vae is not None else recorded_vae_source(run.get("vae"), run.get("vae_provenance"))
    out = Path(cfg.out) if cfg.out is not None else default_out(cfg)
    with exit_on_interrupt(lambda signum: report_interrupt(out, cfg, dist)), hold_output_folder(out, dist):
        if keep_finished(out, command, vae, dist):
            dist.close()
            return out
        return draw(command, dist, run, vae, out)


def draw(command: Command, dist: Distributed, run: dict[str, Any], vae: str | None, out: Path) -> Path:
    """The sampling of :func:`main` while ``out`` is held: load, draw the missing batches, write the outputs."""
    cfg, objective = command.cfg, command.objective
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
    sampler = command.sampler
    check_sampler(objective, sampler)
    keywords = command.keywords()  # the options that this sampler reads, as sample()'s keywords

    num_batches = math.ceil(cfg.num_samples / cfg.batch_size)
    mine = list(range(dist.rank, num_batches, dist.world_size))
    log.info(
        "sampling %d images of %dx%d (%s, %d steps, cfg %g, pow %g) in %d batches on %d process(es) -> %s",
        cfg.num_samples, image_size, image_size, cfg.sampler, cfg.steps, cfg.cfg_scale, cfg.scale_pow,
        num_batches, dist.world_size, out,
    )
    batches = start_batches(out, output_settings(command, vae, image_size), dist, command.spec.defaults())

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
                progress=cfg.progress and dist.is_main, objective=objective, **keywords,
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
        write_json(out / "sample_config.json", {**dataclasses.asdict(cfg), **option_values(command), "vae": vae,
                                                "image_size": image_size, "objective": objective.to_record(),
                                                "world_size": dist.world_size, "settings": command_settings(command, vae)})
        shutil.rmtree(batches, ignore_errors=True)  # the outputs are complete: the batch files are not needed
        log.info("wrote %s (arr_0 %s uint8, arr_1 labels) and %s", out / "samples.npz", all_images.shape, out / "grid.png")
    dist.barrier()
    dist.close()
    return out


def command_settings(command: Command, vae: str | None) -> dict[str, Any]:
    """What decides the samples, known before the model is loaded: :func:`output_settings` less the image size."""
    settings = output_settings(command, vae, 0)
    del settings["image_size"]  # follows from the checkpoint and the VAE
    return settings


OUTPUTS = ("samples.npz", "grid.png", "sample_config.json", ".batches")
"""What a sampling run writes into ``--out`` (``sample_config.json`` last: the mark of a finished run)."""


def keep_finished(out: Path, command: Command, vae: str | None, dist: Distributed) -> bool:
    """Whether ``out`` holds this command's finished samples, which are kept (``--overwrite``: cleared first).

    Raises:
        ValueError: ``out`` holds the finished samples of another command (and no ``--overwrite``).
    """
    cfg = command.cfg
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
    mine = command_settings(command, vae)
    if "settings" in recorded:
        diff = settings_disagreement(recorded["settings"], as_recorded(mine, recorded["settings"], command.spec.defaults()))
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
