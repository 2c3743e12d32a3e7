"""A latent cache on disk: encode a dataset once (both flips) and train from the stored latents.

Layout of a cache folder (what ``recipes/extract_latents.py`` writes)::

    meta.json                   format, latent_shape, scale_factor, vae, num_classes, classes, shards, ...
    shard-r00000-00000.npy      float32 (count, 2, c, h, w): [:, 0] the image's latent, [:, 1] its mirror's
    shard-r00000-00000-labels.npy   int64 (count,)
    shard-r00000-00001.npy      ...

``rNNNNN`` is the rank that wrote the shard (several processes encode disjoint
parts under torchrun). Plain ``.npy`` files are memory-mapped
(``allow_pickle=False``), so an ImageNet-size cache needs no RAM and loading never
runs pickled code. ``meta.json`` is written last: a folder without it is an
unfinished extraction.
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
from torch.utils.data import DataLoader, Dataset

from ..io import atomic_write, read_json, write_json
from .autoencoder import Autoencoder

__all__ = ["LATENT_FORMAT", "LatentDataset", "LatentWriter", "write_meta", "encode_dataset", "merge_parts"]

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
    _buffered: int = 0
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
    ) -> None:
        """Append a batch: the latents of the images, of their mirrors, and the labels.

        Args:
            latents: scaled latents of the images.
            mirrored: scaled latents of the horizontally flipped images.
            labels: integer class labels.
        """
        pair = torch.stack([latents, mirrored], dim=1).float().cpu().numpy()  # (b, 2, c, h, w)
        self._buffer.append(pair)
        self._labels.append(labels.cpu().numpy().astype(np.int64))
        self._buffered += len(pair)
        while self._buffered >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, count: int) -> None:
        data, labels = np.concatenate(self._buffer), np.concatenate(self._labels)
        stem = f"{self.prefix}{len(self.shards):05d}"
        _save_npy(self.root / f"{stem}.npy", np.ascontiguousarray(data[:count]))
        _save_npy(self.root / f"{stem}-labels.npy", np.ascontiguousarray(labels[:count]))
        self.shards.append({"file": f"{stem}.npy", "labels": f"{stem}-labels.npy", "count": int(count)})
        self._buffer = [data[count:]] if len(data) > count else []
        self._labels = [labels[count:]] if len(labels) > count else []
        self._buffered = len(data) - count

    def close(self) -> list[dict[str, Any]]:
        """Write the last, partial shard.

        Returns:
            One ``{"file", "labels", "count"}`` entry per shard written, in order.
        """
        if self._buffered:
            self._flush(self._buffered)
        return self.shards


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

    Attributes:
        num_classes: number of classes (labels are ``0..num_classes-1``).
        latent_shape: ``(c, h, w)`` of one latent.
        scale_factor: the scale already applied to the latents.
        vae: name or folder of the VAE that encoded them.
    """

    num_skipped = 0

    def __init__(self, root: str | os.PathLike, flip: bool = True) -> None:
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
        self._maps: dict[int, np.ndarray] = {}  # opened lazily, so each DataLoader worker maps its own

    def __len__(self) -> int:
        return 2 * self.num_images if self.flip else self.num_images

    def _shard(self, k: int) -> np.ndarray:
        if k not in self._maps:
            self._maps[k] = np.load(self._files[k], mmap_mode="r", allow_pickle=False)
        return self._maps[k]

    def __getitem__(self, index: int) -> tuple[Float[Tensor, "c hh ww"], int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of length {len(self)}")
        image, mirrored = index % self.num_images, index >= self.num_images
        k = bisect.bisect_right(self._starts, image) - 1
        latent = np.array(self._shard(k)[image - self._starts[k], int(mirrored)], dtype=np.float32)
        return torch.from_numpy(latent), int(self.labels[image])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}  # memory maps are not sent to worker processes


class _ReadableImages(Dataset):
    """Chosen files of an image dataset (no flip), with a flag instead of a substitute when unreadable."""

    def __init__(self, dataset: Dataset, indices: range) -> None:
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[Tensor, int, bool]:
        index = self.indices[position]
        load = getattr(self.dataset, "load", None)
        if load is None:
            x, y = self.dataset[index]
            return x, y, True
        x = load(index)
        if x is None:
            size = self.dataset.image_size
            return torch.zeros(3, size, size), -1, False
        return x, self.dataset.label(index), True


def _part_path(root: Path, rank: int) -> Path:
    return root / f"part-r{rank:05d}.json"


def encode_dataset(
    dataset: Dataset,
    autoencoder: Autoencoder,
    out: str | os.PathLike,
    *,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    shard_size: int = 4096,
    rank: int = 0,
    world_size: int = 1,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Encode every readable image of ``dataset`` and its mirror into a latent cache at ``out``.

    As fast-DiT does, each image is encoded once in both orientations, drawing
    one posterior sample each, so training needs no VAE at all. Unreadable files
    are left out (``meta["num_skipped"]`` counts them).

    With ``world_size > 1`` rank ``r`` encodes the contiguous ``r``-th part of the
    files and records its shards in ``part-rNNNNN.json``; once every rank is done
    (a barrier), rank 0 calls :func:`merge_parts` to write ``meta.json``.

    Args:
        dataset: an :class:`ImageFolderDataset` or :class:`DigitsDataset` (its
            ``flip`` setting is ignored: both orientations are always stored).
        autoencoder: from :func:`load_autoencoder`, already on ``device``.
        out: new cache folder.
        batch_size: images per encoder call (each call also encodes the mirrors).
        generator: posterior noise source on ``device``; one stream for this rank.
        device: where the images are encoded.
        num_workers: DataLoader worker processes for decoding the images.
        shard_size: images per shard file.
        rank: this process's rank.
        world_size: number of processes encoding parts of the dataset.
        extra_meta: more fields to record in ``meta.json`` (e.g. the image size).

    Returns:
        The metadata written to ``meta.json`` (one process), or this rank's part record.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    root = Path(out)
    n = dataset.num_images
    part = range(rank * n // world_size, (rank + 1) * n // world_size)  # contiguous: the cache keeps file order
    writer = LatentWriter(root, shard_size=shard_size, prefix=f"shard-r{rank:05d}-")
    loader = DataLoader(_ReadableImages(dataset, part), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for x, y, ok in loader:
        if not ok.any():
            continue
        x = x[ok].to(device)
        z = autoencoder.encode(torch.cat([x, x.flip(-1)]), generator=generator)
        writer.add(z[: len(x)], z[len(x) :], y[ok])
    meta = {
        **(extra_meta or {}),
        "scale_factor": float(autoencoder.scale),
        "vae": getattr(autoencoder, "name", None),
        "num_classes": int(dataset.num_classes),
        "classes": list(dataset.classes),
    }
    record = {"rank": rank, "shards": writer.close(), "num_skipped": int(getattr(dataset, "num_skipped", 0)), "meta": meta}
    if world_size == 1:
        return write_meta(root, record["shards"], **meta, num_skipped=record["num_skipped"])
    write_json(_part_path(root, rank), record)
    return record


def merge_parts(out: str | os.PathLike, world_size: int) -> dict[str, Any]:
    """Write ``meta.json`` of a cache encoded by ``world_size`` processes (rank 0, after a barrier).

    Args:
        out: the cache folder.
        world_size: number of processes that wrote ``part-rNNNNN.json`` records.

    Returns:
        The metadata written.
    """
    root = Path(out)
    records = [read_json(_part_path(root, r)) for r in range(world_size)]
    shards = [s for rec in records for s in rec["shards"]]
    skipped = sum(int(rec["num_skipped"]) for rec in records)
    meta = write_meta(root, shards, **records[0]["meta"], num_skipped=skipped)
    for r in range(world_size):
        _part_path(root, r).unlink()
    return meta
