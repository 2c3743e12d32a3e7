"""A latent cache on disk: encode a dataset once (both flips) and train from the stored latents.

Layout of a cache folder (what ``recipes/extract_latents.py`` writes)::

    meta.json                   format, latent_shape, scale_factor, vae, vae_provenance, num_classes, shards, ...
    shard-r00000-00000.npy      float32 (count, 2, c, h, w): [:, 0] the image's latent, [:, 1] its mirror's
    shard-r00000-00000-labels.npy   int64 (count,)
    shard-r00000-00000-align.npy    float16 (count, 2, e, fh, fw): an alignment encoder's feature maps of
                                    the image and its mirror (only when extracted with one; meta ``align_encoder``)
    shard-r00000-00001.npy      ...

``rNNNNN`` is the rank that wrote the shard (several processes encode disjoint
parts under torchrun). Plain ``.npy`` files are memory-mapped
(``allow_pickle=False``), so an ImageNet-size cache needs no RAM and loading never
runs pickled code. ``meta.json`` is written last: a folder without it is an
unfinished extraction (see :mod:`~mdtblocks.data.extract` for how it resumes).
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.utils.data import Dataset

from ..io import atomic_write, read_json, write_json

__all__ = ["LATENT_FORMAT", "LatentDataset", "LatentWriter", "write_meta", "shard_is_complete"]

LATENT_FORMAT = "mdtblocks-latents-v1"
"""Value of ``meta.json["format"]`` for caches this module reads and writes."""


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save(path) would append ".npy" to the temp name
            np.save(f, array, allow_pickle=False)

    atomic_write(path, write)


@dataclass
class LatentWriter:
    """Accumulate latents and write them in fixed-size shards (each with its labels).

    Args:
        root: output folder (created).
        shard_size: images per shard file.
        prefix: shard file name prefix (distinct per rank when several processes write).
    """

    root: Path
    shard_size: int = 4096
    prefix: str = "shard-r00000-"
    _buffer: list[np.ndarray] = field(default_factory=list, repr=False)
    _labels: list[np.ndarray] = field(default_factory=list, repr=False)
    _features: list[np.ndarray] = field(default_factory=list, repr=False)
    _buffered: int = 0
    _batch: tuple[int, int] = (0, 0)
    shards: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.shard_size <= 0:
            raise ValueError(f"shard_size must be positive, got {self.shard_size}")
        if (self.root / "meta.json").exists():
            raise FileExistsError(f"{str(self.root)!r} already holds a latent cache (meta.json); choose another --out")
        self.root.mkdir(parents=True, exist_ok=True)

    def add(
        self,
        latents: Float[Tensor, "b c hh ww"],
        mirrored: Float[Tensor, "b c hh ww"],
        labels: Int[Tensor, "b"],
        batch: int = 0,
        features: Float[Tensor, "b 2 e fh fw"] | None = None,
    ) -> list[dict[str, Any]]:
        """Append a batch: the latents of the images, of their mirrors, and the labels.

        Args:
            latents: scaled latents of the images.
            mirrored: scaled latents of the horizontally flipped images.
            labels: integer class labels.
            batch: the batch's index, for the resume point recorded with each shard.
            features: an alignment encoder's feature maps of the images and their mirrors
                (stored as float16 beside the latents); give them with every batch or never.

        Returns:
            The entries of the shards this batch completed (their files are written).
        """
        pair = torch.stack([latents, mirrored], dim=1).float().cpu().numpy()  # (b, 2, c, h, w)
        self._buffer.append(pair)
        self._labels.append(labels.cpu().numpy().astype(np.int64))
        if features is not None:
            self._features.append(features.to(torch.float16).cpu().numpy())
        self._buffered += len(pair)
        self._batch = (batch, len(pair))
        written = []
        while self._buffered >= self.shard_size:
            written.append(self._flush(self.shard_size))
        return written

    def _flush(self, count: int) -> dict[str, Any]:
        data, labels = np.concatenate(self._buffer), np.concatenate(self._labels)
        stem = f"{self.prefix}{len(self.shards):05d}"
        _save_npy(self.root / f"{stem}.npy", np.ascontiguousarray(data[:count]))
        _save_npy(self.root / f"{stem}-labels.npy", np.ascontiguousarray(labels[:count]))
        features = np.concatenate(self._features) if self._features else None
        if features is not None:
            if len(features) != len(data):
                raise ValueError(f"features were given for {len(features)} of {len(data)} buffered images: give them with every batch")
            _save_npy(self.root / f"{stem}-align.npy", np.ascontiguousarray(features[:count]))
        # Where the data after this shard starts: every leftover latent comes from the newest batch
        # (the buffer held fewer than shard_size before it), so re-encoding that batch and dropping
        # its first `skip` latents rebuilds the buffer exactly.
        batch, size = self._batch
        left = len(data) - count
        resume = {"batch": batch, "skip": size - left} if left else {"batch": batch + 1, "skip": 0}
        entry = {"file": f"{stem}.npy", "labels": f"{stem}-labels.npy", "count": int(count), "resume": resume}
        if features is not None:
            entry["align"] = f"{stem}-align.npy"
            self._features = [features[count:]] if left else []
        self.shards.append(entry)
        self._buffer = [data[count:]] if left else []
        self._labels = [labels[count:]] if left else []
        self._buffered = left
        return entry

    def close(self) -> list[dict[str, Any]]:
        """Write the last, partial shard.

        Returns:
            One ``{"file", "labels", "count"}`` entry per shard written, in order.
        """
        if self._buffered:
            self._flush(self._buffered)
        return [{k: s[k] for k in ("file", "labels", "count", "align") if k in s} for s in self.shards]


def shard_is_complete(root: str | os.PathLike, entry: dict[str, Any], latent_shape: tuple[int, ...] | None = None) -> bool:
    """Whether a shard's two files are there and hold ``entry["count"]`` items (headers only are read)."""
    root = Path(root)
    try:
        data = np.load(root / entry["file"], mmap_mode="r", allow_pickle=False)
        labels = np.load(root / entry["labels"], mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    count = int(entry["count"])
    shape_ok = latent_shape is None or tuple(data.shape[2:]) == tuple(latent_shape)
    if "align" in entry:
        try:
            features = np.load(root / entry["align"], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return False
        shape_ok = shape_ok and features.ndim == 5 and features.shape[:2] == (count, 2)
    return data.ndim == 5 and data.shape[:2] == (count, 2) and shape_ok and labels.shape == (count,)


def write_meta(root: str | os.PathLike, shards: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    """Finish a cache: write ``meta.json`` listing ``shards`` (which completes the folder).

    Args:
        root: the cache folder.
        shards: shard entries from :meth:`LatentWriter.close`, in dataset order.
        **meta: fields recorded as well (``scale_factor``, ``vae``, ``num_classes``, ...).

    Returns:
        The metadata written.
    """
    root = Path(root)
    if not shards:
        raise ValueError(f"no latents were written to {str(root)!r} (no readable images?)")
    first = np.load(root / shards[0]["file"], mmap_mode="r", allow_pickle=False)
    full = {
        **meta,
        "format": LATENT_FORMAT,
        "latent_shape": list(first.shape[2:]),
        "num_images": int(sum(s["count"] for s in shards)),
        "dtype": str(first.dtype),
        "shards": shards,
    }
    write_json(root / "meta.json", full)
    return full


class LatentDataset(Dataset):
    """Training pairs ``(latent, label)`` read from a cache written by :func:`encode_dataset`.

    Indexing follows the image datasets: with ``flip=True`` the length is
    ``2 * num_images`` and index ``num_images + i`` is the latent of image ``i``'s mirror.

    Args:
        root: the cache folder.
        flip: use the mirrored latents too.
        align_encoder: the ``record()`` of the alignment encoder training expects
            (e.g. ``Dinov2Encoder(...).record()``): items become ``(latent, label,
            features)`` with the stored ``(e, fh, fw)`` float32 feature map of that image
            (or of its mirror). A cache made without features, or with another encoder,
            is refused.

    Attributes:
        num_classes: number of classes (labels are ``0..num_classes-1``).
        latent_shape: ``(c, h, w)`` of one latent.
        scale_factor: the scale already applied to the latents.
        vae: name or folder of the VAE that encoded them.
        vae_provenance: that VAE's record (:func:`~mdtblocks.data.vae_provenance`), ``None`` in older caches.
    """

    num_skipped = 0

    def __init__(self, root: str | os.PathLike, flip: bool = True, align_encoder: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{str(self.root)!r} has no meta.json: not a latent cache, or its extraction did not finish"
            )
        self.meta = read_json(meta_path)
        if self.meta.get("format") != LATENT_FORMAT:
            raise ValueError(f"{str(meta_path)!r} has format {self.meta.get('format')!r}, expected {LATENT_FORMAT!r}")
        self.flip = flip
        self.latent_shape = tuple(int(s) for s in self.meta["latent_shape"])
        self.num_classes = int(self.meta["num_classes"])
        self.classes = list(self.meta.get("classes") or [str(i) for i in range(self.num_classes)])
        self.scale_factor = float(self.meta["scale_factor"])
        self.vae = self.meta.get("vae")
        self.vae_provenance = self.meta.get("vae_provenance")  # None in caches written before it was recorded
        self.num_images = int(self.meta["num_images"])
        self._files = [self.root / s["file"] for s in self.meta["shards"]]
        self._starts = np.cumsum([0] + [int(s["count"]) for s in self.meta["shards"]]).tolist()
        if self._starts[-1] != self.num_images:
            raise ValueError(f"{str(meta_path)!r}: shards hold {self._starts[-1]} images but num_images is {self.num_images}")
        self.labels = np.concatenate(
            [np.load(self.root / s["labels"], allow_pickle=False) for s in self.meta["shards"]]
        ).astype(np.int64)
        if self.labels.shape != (self.num_images,):
            raise ValueError(f"{str(self.root)!r}: the shards hold {len(self.labels)} labels for {self.num_images} images")
        for shard, path in zip(self.meta["shards"], self._files):
            expected = (int(shard["count"]), 2, *self.latent_shape)  # [:, 0] the latent, [:, 1] its mirror's
            try:
                shape = np.load(path, mmap_mode="r", allow_pickle=False).shape  # reads the header only
            except (OSError, ValueError) as err:
                raise ValueError(f"latent shard {str(path)!r} is missing or unreadable ({err})") from err
            if tuple(shape) != expected:
                raise ValueError(
                    f"latent shard {str(path)!r} holds an array of shape {tuple(shape)} but meta.json says {expected}; "
                    "the cache is damaged (re-extract it)"
                )
        self.align_encoder = align_encoder
        if align_encoder is not None:
            stored = self.meta.get("align_encoder")
            if stored is None or any("align" not in s for s in self.meta["shards"]):
                raise ValueError(f"{str(self.root)!r} stores no alignment features; extract it with the encoder {align_encoder}")
            if stored != align_encoder:
                raise ValueError(f"{str(self.root)!r} stores features of the encoder {stored}, not of {align_encoder}")
        self._maps: dict[int, np.ndarray] = {}  # opened lazily, so each DataLoader worker maps its own
        self._align_maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return 2 * self.num_images if self.flip else self.num_images

    def _shard(self, k: int) -> np.ndarray:
        if k not in self._maps:
            self._maps[k] = np.load(self._files[k], mmap_mode="r", allow_pickle=False)
        return self._maps[k]

    def __getitem__(self, index: int) -> tuple[Float[Tensor, "c hh ww"], int] | tuple[Float[Tensor, "c hh ww"], int, Float[Tensor, "e fh fw"]]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of length {len(self)}")
        image, mirrored = index % self.num_images, index >= self.num_images
        k = bisect.bisect_right(self._starts, image) - 1
        latent = np.array(self._shard(k)[image - self._starts[k], int(mirrored)], dtype=np.float32)
        if self.align_encoder is None:
            return torch.from_numpy(latent), int(self.labels[image])
        if k not in self._align_maps:
            self._align_maps[k] = np.load(self.root / self.meta["shards"][k]["align"], mmap_mode="r", allow_pickle=False)
        features = np.array(self._align_maps[k][image - self._starts[k], int(mirrored)], dtype=np.float32)
        return torch.from_numpy(latent), int(self.labels[image]), torch.from_numpy(features)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}, "_align_maps": {}}  # memory maps are not sent to worker processes
