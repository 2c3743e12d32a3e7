"""Encode an image dataset once (both flips) into a latent cache, so training needs no VAE.

Usage::

    python recipes/extract_latents.py --data /data/imagenet/train --out latents/in256 \\
        --vae stabilityai/sd-vae-ft-ema --image-size 256

    torchrun --nproc-per-node 8 recipes/extract_latents.py --data /data/imagenet/train --out latents/in256

then train with ``--latents latents/in256``. With ``--align-encoder DIR|inception`` the
encoder's features of both flips are stored too, for ``--align repa`` training. Under torchrun each process encodes a
contiguous part of the (sorted) files; batch ``k`` of rank ``r`` draws its posterior
noise from ``(--seed, r, k)``. Rank 0 writes ``meta.json`` when all are done. A killed
extraction resumes: rerun the same command and it continues after the last complete
shard (other flags on a part-done folder are refused). One extraction at a time holds
``OUT`` (``OUT/.lock``): a second one exits 2 at once. With no ``--data`` the built-in
digits dataset (RGB, upscaled) is encoded, which is only useful for tests.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Literal

from mdtblocks.data import (
    DEFAULT_VAE, DigitsDataset, ImageFolderDataset, encode_dataset, load_autoencoder, merge_parts, upsampling_warning,
)
from mdtblocks.folderlock import hold_output_folder
from mdtblocks.io import read_json
from mdtblocks.training import Distributed, setup_distributed
from mdtblocks.training.recipe import exit_on_bad_input, flag, parse_flags
from mdtblocks.training.recipe.cli import default_num_workers
from mdtblocks.training.recipe.data import describe


@dataclass(frozen=True)
class ExtractConfig:
    """Every field is a ``--flag`` (``python recipes/extract_latents.py --help``)."""

    out: str = flag("", "folder for the latent cache: new, or part-done by the same command (required)")
    data: str | None = flag(None, "image folder (class subfolders or ADM ClassID_ImgID.ext files); none: built-in digits")
    vae: str = flag(DEFAULT_VAE, "diffusers AutoencoderKL name or local folder (a VAE is required: the cache holds its latents)")
    image_size: int = flag(256, "side of the ADM center crop, in pixels")
    batch_size: int = flag(64, "images per encoder call (their mirrors are encoded in the same call)")
    seed: int = flag(0, "seed of the posterior samples")
    device: Literal["auto", "cpu", "cuda"] = flag("auto", "encoding device")
    num_workers: int = flag(default_num_workers(), "image-decoding worker processes (by default the cores available to it)")
    shard_size: int = flag(4096, "images per shard file")
    align_encoder: str | None = flag(
        None, "also store this alignment encoder's features of both flips (REPA's targets): a local DINOv2 folder, "
        "or 'inception'", metavar="DIR"
    )

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("--out is required (a new folder for the latent cache)")
        if self.vae.strip().lower() in ("none", "null", ""):
            raise ValueError(
                f"--vae {self.vae!r}: a latent cache needs a VAE (a diffusers AutoencoderKL name or folder); "
                "to train in pixel space, skip extraction and give the training recipe --data DIR --vae none"
            )
        for name in ("image_size", "batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"--num-workers must be non-negative, got {self.num_workers}")
        if self.seed < 0:
            raise ValueError(f"--seed {self.seed} is negative; allowed: a non-negative integer")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the extraction.

    Args:
        argv: command-line arguments (``None``: ``sys.argv``).

    Returns:
        The cache's metadata (as written to ``OUT/meta.json``).
    """
    cfg = ExtractConfig(**parse_flags(ExtractConfig, argv, description=__doc__))
    dist = setup_distributed(cfg.device)
    with hold_output_folder(cfg.out, dist):  # one extraction per --out; a second one stops here, on every rank
        return extract(cfg, dist)


def extract(cfg: ExtractConfig, dist: Distributed) -> dict[str, Any]:
    """The extraction of :func:`main` while ``cfg.out`` is held; returns the cache's metadata."""
    if cfg.data is None:
        dataset = DigitsDataset(image_size=cfg.image_size, channels=3, flip=False)
    else:
        dataset = ImageFolderDataset(cfg.data, cfg.image_size, flip=False)
    autoencoder = load_autoencoder(cfg.vae).to(dist.device)
    if cfg.image_size % autoencoder.downsample:
        raise ValueError(f"--image-size {cfg.image_size} is not divisible by the VAE's downsampling {autoencoder.downsample}")
    layout = getattr(dataset, "layout", "built-in digits")
    if dist.is_main:
        native = dataset.native_side() if isinstance(dataset, ImageFolderDataset) else None
        side = cfg.image_size // autoencoder.downsample
        source = f"{cfg.data} ({layout})" if cfg.data else "the built-in digits"
        shape = (autoencoder.latent_channels, side)
        print(describe(source, dataset.num_classes, dataset.num_images, cfg.image_size, shape, native, "latents"),
              file=sys.stderr)
        warning = upsampling_warning(native, cfg.image_size, autoencoder.downsample)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    align = None
    if cfg.align_encoder is not None:  # the features training with --align repa reads instead of running the encoder
        from mdtblocks.training.recipe.align import load_align_encoder

        align = load_align_encoder(cfg.align_encoder).to(dist.device)
    start = time.perf_counter()
    meta = encode_dataset(
        dataset,
        autoencoder,
        cfg.out,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        device=dist.device,
        num_workers=cfg.num_workers,
        shard_size=cfg.shard_size,
        rank=dist.rank,
        world_size=dist.world_size,
        align_encoder=align,
        extra_meta={"image_size": cfg.image_size, "data": cfg.data, "layout": layout, "seed": cfg.seed,
                    "world_size": dist.world_size},
    )
    if dist.enabled:
        dist.barrier()
        if dist.is_main:
            meta = merge_parts(cfg.out, dist.world_size)
        dist.barrier()
        meta = read_json(Path(cfg.out) / "meta.json")
    if dist.is_main:
        named = dataset.skipped_names() if isinstance(dataset, ImageFolderDataset) else ""
        print(
            f"encoded {meta['num_images']} images (x2 flips) of {meta['num_classes']} classes to {cfg.out} "
            f"in {time.perf_counter() - start:.1f}s on {dist.world_size} process(es); latent shape "
            f"{tuple(meta['latent_shape'])}, scale {meta['scale_factor']}; skipped {meta['num_skipped']} unreadable files"
            + (f" (this process: {named})" if named else ""),
            file=sys.stderr,
        )
    dist.close()
    return meta


if __name__ == "__main__":
    sys.exit(exit_on_bad_input(main))
