"""Encode an image dataset once (both flips) into a latent cache, so training needs no VAE.

Usage::

    python recipes/extract_latents.py --data /data/imagenet/train --out latents/in256 \
        --vae stabilityai/sd-vae-ft-ema --image-size 256

then train with ``--latents latents/in256``. With no ``--data`` the built-in
digits dataset (RGB, upscaled) is encoded, which is only useful for tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import Any, get_type_hints

import torch

from mdtblocks.data import DEFAULT_VAE, DigitsDataset, ImageFolderDataset, encode_dataset, load_autoencoder


@dataclass(frozen=True)
class ExtractConfig:
    """What to encode and how.

    Attributes:
        data: image folder (class folders or ADM ``ClassID_ImgID.ext`` files); ``None`` for the built-in digits.
        out: new folder for the cache.
        vae: diffusers AutoencoderKL name or local folder.
        image_size: side of the ADM center crop, in pixels.
        batch_size: images per encoder call.
        seed: seed of the posterior samples.
        device: ``auto``, ``cpu`` or ``cuda``.
        num_workers: image-decoding worker processes.
        shard_size: images per shard file.
    """

    out: str
    data: str | None = None
    vae: str = DEFAULT_VAE
    image_size: int = 256
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    num_workers: int = 4
    shard_size: int = 4096

    def __post_init__(self) -> None:
        for name in ("image_size", "batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be non-negative, got {self.num_workers}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device {self.device!r} is not one of 'auto', 'cpu', 'cuda'")


def parse_config(argv: list[str] | None = None) -> ExtractConfig:
    """Build the config from command-line flags (one ``--flag`` per field).

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The validated config.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    hints = get_type_hints(ExtractConfig)
    for f in dataclasses.fields(ExtractConfig):
        kind = hints[f.name]
        convert = int if kind is int else str
        required = f.default is dataclasses.MISSING
        parser.add_argument(
            "--" + f.name.replace("_", "-"), type=convert, required=required, default=None if required else f.default
        )
    return ExtractConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the extraction.

    Args:
        argv: command-line arguments (``None``: ``sys.argv``).

    Returns:
        The cache's metadata (as written to ``OUT/meta.json``).
    """
    cfg = parse_config(argv)
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if cfg.data is None:
        dataset = DigitsDataset(image_size=cfg.image_size, channels=3, flip=False)
    else:
        dataset = ImageFolderDataset(cfg.data, cfg.image_size, flip=False)
    autoencoder = load_autoencoder(cfg.vae).to(device)
    if cfg.image_size % autoencoder.downsample:
        raise ValueError(f"--image-size {cfg.image_size} is not divisible by the VAE's downsampling {autoencoder.downsample}")
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    start = time.perf_counter()
    meta = encode_dataset(
        dataset,
        autoencoder,
        cfg.out,
        batch_size=cfg.batch_size,
        generator=generator,
        device=device,
        num_workers=cfg.num_workers,
        shard_size=cfg.shard_size,
        extra_meta={"image_size": cfg.image_size, "data": cfg.data, "seed": cfg.seed},
    )
    print(
        f"encoded {meta['num_images']} images (x2 flips) of {meta['num_classes']} classes to {cfg.out} "
        f"in {time.perf_counter() - start:.1f}s; latent shape {tuple(meta['latent_shape'])}, "
        f"scale {meta['scale_factor']}; skipped {meta['num_skipped']} unreadable files",
        file=sys.stderr,
    )
    return meta


if __name__ == "__main__":
    main()
