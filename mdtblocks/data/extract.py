"""Encoding a dataset into a latent cache, resumable after a kill: shards are recorded once complete.

Each process (rank) keeps ``progress-rNNNNN.json``: the settings of the extraction and
each shard whose two files are written, with the batch to restart from. Batch ``k`` of
rank ``r`` draws its posterior noise from a generator seeded with ``(seed, "extract", r, k)``,
so a rerun that restarts at a shard boundary encodes exactly what the killed run would have.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..io import read_json, write_json
from ..progress import ProgressRecord, check_settings
from .autoencoder import Autoencoder, autoencoder_fingerprint
from .vae_provenance import vae_provenance
from .latents import LatentWriter, shard_is_complete, write_meta

__all__ = ["encode_dataset", "merge_parts", "batch_generator"]


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


def _progress_path(root: Path, rank: int) -> Path:
    return root / f"progress-r{rank:05d}.json"


def batch_generator(seed: int, rank: int, batch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The posterior noise of batch ``batch`` of rank ``rank``: its own stream, so a resumed run redraws it."""
    from ..training.randomness import derive_seed  # here: mdtblocks.training imports mdtblocks.data

    return torch.Generator(device=device).manual_seed(derive_seed(seed, "extract", rank, batch))


def _continue(root: Path, rank: int, settings: dict[str, Any]) -> ProgressRecord:
    """This rank's progress record, checked against every rank's settings and trimmed to intact shards."""
    for other in sorted(root.glob("progress-r*.json")):
        check_settings(other, settings, "latent extraction")
    for tmp in root.glob(f".shard-r{rank:05d}-*.tmp"):  # half-written by a killed run: never a shard
        tmp.unlink(missing_ok=True)
    progress = ProgressRecord.open(_progress_path(root, rank), settings, "latent extraction")
    intact = 0
    while intact < len(progress.done) and shard_is_complete(root, progress.done[intact]):
        intact += 1
    progress.keep(intact)
    return progress


def encode_dataset(
    dataset: Dataset,
    autoencoder: Autoencoder,
    out: str | os.PathLike,
    *,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    shard_size: int = 4096,
    rank: int = 0,
    world_size: int = 1,
    extra_meta: dict[str, Any] | None = None,
    align_encoder: Any = None,
) -> dict[str, Any]:
    """Encode every readable image of ``dataset`` and its mirror into a latent cache at ``out``.

    As fast-DiT does, each image is encoded once in both orientations, drawing
    one posterior sample each, so training needs no VAE at all. Unreadable files
    are left out (``meta["num_skipped"]`` counts them).

    A folder left part-done by a killed run (shards but no ``meta.json``) is continued
    from its last recorded shard, giving the same files as an uninterrupted run; if it
    was started with other settings, ``ValueError`` names them.

    With ``world_size > 1`` rank ``r`` encodes the contiguous ``r``-th part of the
    files and records its shards in ``part-rNNNNN.json``; once every rank is done
    (a barrier), rank 0 calls :func:`merge_parts` to write ``meta.json``.

    Args:
        dataset: an :class:`ImageFolderDataset` or :class:`DigitsDataset` (its
            ``flip`` setting is ignored: both orientations are always stored).
        autoencoder: from :func:`load_autoencoder`, already on ``device``.
        out: the cache folder (new, or part-done by the same settings).
        batch_size: images per encoder call (each call also encodes the mirrors).
        seed: seed of the posterior noise (batch ``k`` of rank ``r``: :func:`batch_generator`).
        device: where the images are encoded.
        num_workers: DataLoader worker processes for decoding the images.
        shard_size: images per shard file.
        rank: this process's rank.
        world_size: number of processes encoding parts of the dataset.
        extra_meta: more fields to record in ``meta.json`` (e.g. the image size); they are
            settings too: a part-done folder is continued only with the same values.
        align_encoder: a frozen alignment encoder (:class:`~mdtblocks.alignment.FrozenEncoder`,
            on ``device``): its feature maps of each image and its mirror are stored beside
            the latents, and its ``record()`` in ``meta["align_encoder"]``.

    Returns:
        The metadata written to ``meta.json`` (one process), or this rank's part record.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    root = Path(out)
    vae = getattr(autoencoder, "name", None)
    align = None if align_encoder is None else align_encoder.record()
    settings = {**(extra_meta or {}), "vae": vae, "seed": seed, "batch_size": batch_size, "shard_size": shard_size,
                "world_size": world_size, **({"align_encoder": align} if align else {})}
    writer = LatentWriter(root, shard_size=shard_size, prefix=f"shard-r{rank:05d}-")  # refuses a finished cache
    progress = _continue(root, rank, settings)
    if world_size > 1 and _part_path(root, rank).is_file():
        return read_json(_part_path(root, rank))  # this rank finished before the kill
    writer.shards = list(progress.done)
    last = progress.done[-1] if progress.done else {"resume": {"batch": 0, "skip": 0}, "skipped": 0}
    first, skip, skipped = last["resume"]["batch"], last["resume"]["skip"], last["skipped"]

    n = dataset.num_images
    part = range(rank * n // world_size, (rank + 1) * n // world_size)  # contiguous: the cache keeps file order
    todo = _ReadableImages(dataset, part[first * batch_size :])
    loader = DataLoader(todo, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for k, (x, y, ok) in enumerate(loader, start=first):
        before, skipped = skipped, skipped + int((~ok).sum())
        if not ok.any():
            continue
        x, y = x[ok].to(device), y[ok]
        z = autoencoder.encode(torch.cat([x, x.flip(-1)]), generator=batch_generator(seed, rank, k, device))
        plain, mirrored = z[: len(x)], z[len(x) :]
        features = None
        if align_encoder is not None:  # (b, 2, e, fh, fw): the image's features, then its mirror's
            f = align_encoder.feature_maps(torch.cat([x, x.flip(-1)]))
            features = torch.stack([f[: len(x)], f[len(x) :]], dim=1)
        if k == first and skip:  # the start of this batch is in the last recorded shard already
            plain, mirrored, y = plain[skip:], mirrored[skip:], y[skip:]
            features = None if features is None else features[skip:]
        for entry in writer.add(plain, mirrored, y, batch=k, features=features):
            # Unreadable files up to the resume point: all of batch k's if it restarts after it.
            progress.add({**entry, "skipped": skipped if entry["resume"]["batch"] > k else before})
    fingerprint = autoencoder_fingerprint(autoencoder)
    meta = {
        **(extra_meta or {}),
        "scale_factor": float(autoencoder.scale),
        "vae": vae,
        "vae_fingerprint": fingerprint,
        "vae_provenance": vae_provenance(autoencoder, fingerprint),  # folder and config: the run's pipeline loads it
        "num_classes": int(dataset.num_classes),
        "classes": list(dataset.classes),
        **({"align_encoder": align} if align else {}),
    }
    record = {"rank": rank, "shards": writer.close(), "num_skipped": skipped, "meta": meta}
    if world_size == 1:
        meta = write_meta(root, record["shards"], **meta, num_skipped=record["num_skipped"])
        progress.path.unlink(missing_ok=True)  # meta.json completes the cache; the record is not needed any more
        return meta
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
        _progress_path(root, r).unlink(missing_ok=True)
    return meta
