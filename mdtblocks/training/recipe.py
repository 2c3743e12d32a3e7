"""What every recipe shares: a typed config whose fields are command-line flags, data and autoencoder
selection (ImageNet folder, latent cache, or the built-in digits), run folder and logging setup."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data import DEFAULT_VAE, Autoencoder, DigitsDataset, ImageFolderDataset, LatentDataset, load_autoencoder
from ..io import write_json
from ..models import PRESETS
from .config import TrainConfig
from .distributed import Distributed

__all__ = [
    "flag",
    "presets_of",
    "RecipeConfig",
    "parse_flags",
    "choose_config",
    "announce_builtin",
    "build_parser",
    "RunData",
    "load_run_data",
    "CachedLatents",
    "train_config",
    "model_overrides",
    "write_run_config",
    "setup_logging",
]

C = TypeVar("C")
log = logging.getLogger("mdtblocks.recipe")


def flag(default: Any, help: str, choices: Sequence[str] | None = None, metavar: str | None = None) -> Any:  # noqa: A002
    """A dataclass field that is also a documented command-line flag (``choices`` restricts its values)."""
    return field(
        default=default, metadata={"help": help, "choices": list(choices) if choices else None, "metavar": metavar}
    )


def presets_of(family: str) -> list[str]:
    """Preset names of one family (``"MDTv2"``, ``"MDT"``, ``"DiT"``), for a recipe's ``--model`` choices."""
    return [name for name in PRESETS if name.split("-")[0] == family]


@dataclass(frozen=True)
class RecipeConfig:
    """Flags every recipe has (``--data``, ``--out``, ``--model``, ...). Recipes subclass it."""

    data: str | None = flag(
        None, "ImageNet-style train folder (class subfolders); none: the built-in digits demo", metavar="DIR"
    )
    latents: str | None = flag(
        None, "latent cache folder (recipes/extract_latents.py) to train from instead of --data", metavar="DIR"
    )
    out: str = flag("runs/run", "run folder; rerunning with the same --out resumes from its newest checkpoint", metavar="DIR")
    model: str = flag("MDTv2-XL/2", "model preset name (mdtblocks.PRESETS)")
    depth: int | None = flag(None, "override the preset's depth")
    hidden_size: int | None = flag(None, "override the preset's width")
    num_heads: int | None = flag(None, "override the preset's attention heads")
    image_size: int = flag(256, "image side in pixels")
    num_classes: int | None = flag(None, "classes; none: taken from the dataset")
    vae: str | None = flag(
        DEFAULT_VAE, "diffusers AutoencoderKL name or folder; 'none' trains in pixel space", metavar="NAME_OR_DIR"
    )
    steps: int = flag(400_000, "optimizer steps")
    global_batch_size: int = flag(256, "samples per optimizer step over all processes")
    micro_batch_size: int | None = flag(None, "samples per process per forward (gradient accumulation); none: no accumulation")
    lr: float = flag(1e-4, "learning rate (constant)")
    weight_decay: float = flag(0.0, "weight decay")
    grad_clip: float | None = flag(None, "global gradient-norm clip; none: no clipping")
    ema_decay: float = flag(0.9999, "EMA decay per step")
    seed: int = flag(0, "seed of every random draw")
    ckpt_every: int = flag(10_000, "checkpoint and sample grid every N steps")
    log_every: int = flag(100, "log metrics every N steps")
    precision: Literal["fp32", "bf16"] = flag("fp32", "bf16 autocasts the model forward (fp32 weights and diffusion math)")
    device: Literal["auto", "cpu", "cuda"] = flag("auto", "training device")
    fsdp: bool = flag(False, "shard parameters with FSDP (fully_shard) instead of DDP, for XL models")
    compile: bool = flag(False, "torch.compile the model")
    activation_checkpointing: bool = flag(False, "recompute block activations in backward to save memory")
    num_workers: int = flag(4, "DataLoader workers per process")
    num_samples: int = flag(16, "images in each checkpoint's sample grid")
    sample_steps: int = flag(50, "DDIM steps for the sample grids")
    sample_cfg_scale: float = flag(4.0, "classifier-free guidance scale of the sample grids (1: none)")

    @property
    def builtin(self) -> bool:
        """No ``--data`` and no ``--latents``: the built-in digits demo."""
        return self.data is None and self.latents is None


# --- config <-> command line ----------------------------------------------------------------


def _kind(tp: Any) -> tuple[Any, bool]:
    """``(base type, optional)`` of a field annotation such as ``int | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), type(None) in typing.get_args(tp)
    return tp, False


def _converter(base: Any, optional: bool, name: str) -> Any:
    def convert(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name}: expected {base.__name__}, got {text!r}") from None

    return convert


def build_parser(cls: type, description: str = "") -> argparse.ArgumentParser:
    """An ``argparse`` parser with one ``--kebab-case`` flag per field of the dataclass ``cls``.

    Defaults are suppressed so that :func:`parse_flags` can tell given flags from defaults;
    the help text shows each field's default. Optional fields accept ``none``.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f.name.replace("_", "-")
        base, optional = _kind(hints[f.name])
        help_text = f"{f.metadata.get('help', '')} (default: {f.default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(base) is Literal:
            parser.add_argument(f"--{name}", choices=list(typing.get_args(base)), **kwargs)
        elif typing.get_origin(base) is tuple:
            item = typing.get_args(base)[0]
            parser.add_argument(f"--{name}", nargs="+", type=item, metavar=item.__name__.upper(), **kwargs)
        elif f.metadata.get("choices"):
            parser.add_argument(f"--{name}", choices=f.metadata["choices"], **kwargs)
        else:
            metavar = f.metadata.get("metavar") or base.__name__.upper()
            parser.add_argument(f"--{name}", type=_converter(base, optional, name), metavar=metavar, **kwargs)
    return parser


def parse_flags(cls: type[C], argv: Sequence[str] | None = None, description: str = "") -> dict[str, Any]:
    """The fields given on the command line, as ``{field: value}`` (defaults left out)."""
    namespace = build_parser(cls, description).parse_args(argv)
    given = vars(namespace)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given and isinstance(given[f.name], list):
            given[f.name] = tuple(given[f.name])
    return given


def choose_config(cls: type[C], builtin: C, argv: Sequence[str] | None = None, description: str = "") -> tuple[C, bool]:
    """Parse the command line into ``cls``; without ``--data`` and ``--latents`` start from ``builtin``.

    Flags given on the command line always win; the built-in demo only changes the
    defaults (dataset, model size, steps), never the code path.

    Returns:
        ``(config, is_builtin)``.
    """
    given = parse_flags(cls, argv, description)
    if "data" in given or "latents" in given:
        return cls(**given), False
    return dataclasses.replace(builtin, **given), True  # type: ignore[type-var]


def announce_builtin(script: str, real_run: str) -> None:
    """Log that the built-in demo runs, and how to run the real thing."""
    log.info(
        "no --data or --latents: training a small model on the built-in digits (scikit-learn, upscaled) in pixel "
        "space, sized for a CPU (about 5 minutes on 2 cores) -- the same code path as the real run. "
        "The real run: %s (or --latents DIR, from recipes/extract_latents.py). python %s --help lists every flag.",
        real_run, script,
    )


def train_config(cfg: RecipeConfig) -> TrainConfig:
    """The loop settings of a recipe config."""
    return TrainConfig(
        steps=cfg.steps,
        global_batch_size=cfg.global_batch_size,
        micro_batch_size=cfg.micro_batch_size,
        seed=cfg.seed,
        ema_decay=cfg.ema_decay,
        grad_clip=cfg.grad_clip,
        ckpt_every=cfg.ckpt_every,
        log_every=cfg.log_every,
        precision=cfg.precision,
        strategy="fsdp" if cfg.fsdp else "ddp",
        compile=cfg.compile,
        activation_checkpointing=cfg.activation_checkpointing,
        num_workers=cfg.num_workers,
        num_samples=cfg.num_samples,
        sample_cfg_scale=cfg.sample_cfg_scale,
    )


def model_overrides(cfg: Any, names: Sequence[str]) -> dict[str, Any]:
    """The model fields the config overrides (those not ``None``)."""
    return {n: getattr(cfg, n) for n in names if getattr(cfg, n) is not None}


# --- data -------------------------------------------------------------------------------------


class CachedLatents(nn.Module):
    """The autoencoder of a latent-cache run: items are latents already (encode is the identity);
    samples are decoded with the VAE that made the cache."""

    def __init__(self, vae: Autoencoder) -> None:
        super().__init__()
        self.vae = vae
        self.latent_channels = vae.latent_channels
        self.downsample = vae.downsample
        self.scale = vae.scale

    def encode(
        self, images: Float[Tensor, "b c2 h2 w2"], generator: torch.Generator | None = None
    ) -> Float[Tensor, "b c2 h2 w2"]:
        """Return the cached latents unchanged (``generator`` unused).

        Args:
            images: ``(b, c2, h2, w2)`` items of the cache, already scaled latents.
            generator: ignored (kept for the :class:`~mdtblocks.data.Autoencoder` interface).

        Returns:
            ``(b, c2, h2, w2)``: ``images``.
        """
        return images

    def decode(self, latents: Float[Tensor, "b c2 h2 w2"]) -> Float[Tensor, "b c hh ww"]:
        """Decode latents to images in [-1, 1] with the VAE.

        Args:
            latents: ``(b, c2, h2, w2)`` scaled latents, as cached or generated.

        Returns:
            ``(b, c, hh, ww)`` images in [-1, 1] (``hh = h2 * downsample``).
        """
        return self.vae.decode(latents)


@dataclass(frozen=True)
class RunData:
    """The dataset and the space the model works in.

    Attributes:
        dataset: ``(x, y)`` pairs (images, or latents for a latent cache).
        autoencoder: images -> model space and back (identity for pixels).
        num_classes: classes of the dataset.
        latent_shape: ``(channels, side)`` of the model's input.
        vae: the VAE's name or folder, ``None`` in pixel space.
        image_size: side of the images in pixels (for a latent cache, the size it was
            extracted at, not the ``--image-size`` flag).
    """

    dataset: Dataset
    autoencoder: Autoencoder
    num_classes: int
    latent_shape: tuple[int, int]
    vae: str | None
    image_size: int


def load_run_data(cfg: RecipeConfig, builtin_channels: int = 1) -> RunData:
    """Dataset and autoencoder for ``--latents``, ``--data`` or (neither) the built-in digits in pixel space."""
    if cfg.latents is not None:
        dataset = LatentDataset(cfg.latents)
        # The VAE that made the cache decodes the samples, unless --vae names another one.
        vae_name = cfg.vae if cfg.vae not in (None, DEFAULT_VAE) else (dataset.vae or cfg.vae)
        c, h, w = dataset.latent_shape
        if h != w:
            raise ValueError(f"latents in {cfg.latents} are {h}x{w}; the models take square inputs")
        ae = CachedLatents(load_autoencoder(vae_name))
        if ae.latent_channels != c:
            raise ValueError(f"latents in {cfg.latents} have {c} channels but the VAE {vae_name!r} makes {ae.latent_channels}")
        image_size = int(dataset.meta.get("image_size") or h * ae.downsample)
        return RunData(dataset, ae, dataset.num_classes, (c, h), vae_name, image_size)
    if cfg.data is not None:
        dataset = ImageFolderDataset(cfg.data, cfg.image_size)
        ae = load_autoencoder(cfg.vae)
        if cfg.image_size % ae.downsample:
            raise ValueError(f"--image-size {cfg.image_size} is not divisible by the VAE's downsampling {ae.downsample}")
        latent_shape = (ae.latent_channels, cfg.image_size // ae.downsample)
        return RunData(dataset, ae, dataset.num_classes, latent_shape, cfg.vae, cfg.image_size)
    dataset = DigitsDataset(image_size=cfg.image_size, channels=builtin_channels)
    ae = load_autoencoder(None, channels=builtin_channels)
    return RunData(dataset, ae, dataset.num_classes, (builtin_channels, cfg.image_size), None, cfg.image_size)


# --- run folder and logs ------------------------------------------------------------------------


def write_run_config(out: str | Path, cfg: Any, dist: Distributed, **extra: Any) -> None:
    """``OUT/config.json``: every recipe field plus ``extra`` (resolved sizes, model fields), on rank 0."""
    if dist.is_main:
        write_json(Path(out) / "config.json", {**dataclasses.asdict(cfg), **extra, "world_size": dist.world_size})


def setup_logging(dist: Distributed) -> None:
    """INFO logs with timestamps on rank 0, warnings only elsewhere."""
    logging.basicConfig(
        level=logging.INFO if dist.is_main else logging.WARNING,
        format=f"%(asctime)s [rank {dist.rank}] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
