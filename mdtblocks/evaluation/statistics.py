"""Feature statistics of an image set (FID / sFID Gaussians, raw pool features), their ``.npz`` files, and image sources.

An image set is read from an ``.npz`` with ``arr_0`` (uint8 ``(n, h, w, 3)``, the format of
ADM's reference batches and of ``recipes/sample.py``) or from a folder of image files; a
statistics ``.npz`` (``mu``, ``sigma`` and optionally ``mu_s``, ``sigma_s``, ``pool``,
``logits``: ADM's key names, extended) stands in for a set whose features were computed before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data import IMAGE_EXTENSIONS
from ..io import atomic_write
from .frechet import feature_statistics
from .inception import InceptionFeatures

__all__ = [
    "InceptionStatistics",
    "compute_statistics",
    "extract_features",
    "is_statistics_file",
    "iter_image_batches",
    "iter_image_folder",
    "load_image_array",
    "log_stage",
]

log = logging.getLogger("mdtblocks.evaluation")


@contextlib.contextmanager
def log_stage(name: str, detail: str) -> Iterator[None]:
    """Log that a long evaluation stage starts (``name: detail``) and when it is done (with its seconds).

    Args:
        name: the stage (``"FID"``, ``"precision and recall"``).
        detail: what it computes, with its sizes.
    """
    log.info("%s: %s ...", name, detail)
    start = time.perf_counter()
    yield
    log.info("%s done in %.1fs", name, time.perf_counter() - start)

_STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s", "pool", "logits")


@dataclass(frozen=True)
class InceptionStatistics:
    """What the metrics need of one image set.

    Attributes:
        mu: ``(d,)`` mean of the pool features.
        sigma: ``(d, d)`` their covariance.
        mu_spatial: ``(2023,)`` mean of the sFID spatial features, or ``None``.
        sigma_spatial: their covariance, or ``None``.
        pool: ``(n, d)`` raw pool features (precision and recall need them), or ``None``
            for statistics loaded from a file that only holds means and covariances.
        logits: ``(n, classes)`` classifier logits (Inception Score), or ``None``.
    """

    mu: np.ndarray
    sigma: np.ndarray
    mu_spatial: np.ndarray | None = None
    sigma_spatial: np.ndarray | None = None
    pool: np.ndarray | None = None
    logits: np.ndarray | None = None

    def __post_init__(self) -> None:
        d = self.mu.shape[0] if self.mu.ndim == 1 else -1
        if self.mu.ndim != 1 or self.sigma.shape != (d, d):
            raise ValueError(f"mu must be (d,) and sigma (d, d), got {self.mu.shape} and {self.sigma.shape}")
        if (self.mu_spatial is None) != (self.sigma_spatial is None):
            raise ValueError("mu_spatial and sigma_spatial must be given together")
        if self.pool is not None and (self.pool.ndim != 2 or self.pool.shape[1] != d):
            raise ValueError(f"pool features must be (n, {d}) to match mu, got {self.pool.shape}")

    @property
    def num_images(self) -> int | None:
        """Images the statistics were computed from, if the raw features are kept."""
        return None if self.pool is None else int(self.pool.shape[0])

    @classmethod
    def from_features(cls, features: dict[str, np.ndarray]) -> InceptionStatistics:
        """Statistics of extracted features (``{"pool": ..., "spatial"?: ..., "logits"?: ...}``)."""
        mu, sigma = feature_statistics(features["pool"])
        mu_s = sigma_s = None
        if "spatial" in features:
            mu_s, sigma_s = feature_statistics(features["spatial"])
        pool = np.asarray(features["pool"], dtype=np.float32)
        logits = np.asarray(features["logits"], dtype=np.float32) if "logits" in features else None
        return cls(mu=mu, sigma=sigma, mu_spatial=mu_s, sigma_spatial=sigma_s, pool=pool, logits=logits)

    def save(self, path: str | os.PathLike) -> Path:
        """Write an uncompressed ``.npz`` atomically (keys ``mu``, ``sigma`` and those present of ``mu_s``,
        ``sigma_s``, ``pool``, ``logits``).

        Args:
            path: the output file.

        Returns:
            The written path.
        """
        arrays = {"mu": self.mu, "sigma": self.sigma}
        optional = {"mu_s": self.mu_spatial, "sigma_s": self.sigma_spatial, "pool": self.pool, "logits": self.logits}
        arrays.update({k: v for k, v in optional.items() if v is not None})

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez(path) would append ".npz" to the temp name
                np.savez(f, **arrays)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> InceptionStatistics:
        """Read a statistics ``.npz`` (ours, or ADM's ``mu``/``sigma``/``mu_s``/``sigma_s``).

        Args:
            path: the file.

        Returns:
            The statistics (``pool`` is ``None`` if the file has no raw features).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"statistics file {str(path)!r} does not exist")
        with np.load(path, allow_pickle=False) as f:
            if "mu" not in f or "sigma" not in f:
                raise ValueError(f"{str(path)!r} has keys {sorted(f.files)}; a statistics .npz needs 'mu' and 'sigma'")
            arrays = {k: f[k] for k in _STAT_KEYS if k in f}
        return cls(
            mu=arrays["mu"].astype(np.float64),
            sigma=arrays["sigma"].astype(np.float64),
            mu_spatial=arrays.get("mu_s"),
            sigma_spatial=arrays.get("sigma_s"),
            pool=arrays.get("pool"),
            logits=arrays.get("logits"),
        )


def is_statistics_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ``.npz`` of precomputed statistics (``mu`` and ``sigma``, no ``arr_0`` images)."""
    path = Path(path)
    if not (path.is_file() and path.suffix == ".npz"):
        return False
    with np.load(path, allow_pickle=False) as f:
        return "arr_0" not in f.files and "mu" in f.files and "sigma" in f.files


def load_image_array(path: str | os.PathLike) -> np.ndarray:
    """Read ``arr_0`` of an image ``.npz``: uint8 ``(n, h, w, c)``, ``c`` 1 or 3.

    Args:
        path: the file (ADM reference batch or ``recipes/sample.py``'s ``samples.npz``).

    Returns:
        The images (loaded into memory).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    if path.suffix != ".npz":
        raise ValueError(f"{str(path)!r} is not an .npz file (expected an .npz with uint8 NHWC 'arr_0')")
    with np.load(path, allow_pickle=False) as f:
        if "arr_0" not in f.files:
            raise ValueError(f"{str(path)!r} has keys {sorted(f.files)}; expected 'arr_0' with uint8 (n, h, w, 3) images")
        images = f["arr_0"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(
            f"'arr_0' of {str(path)!r} is {images.dtype} with shape {images.shape}; expected uint8 (n, h, w, 3) "
            "images, n >= 1, channels last (as ADM reference batches and recipes/sample.py store them)"
        )
    return images


def iter_image_folder(root: str | os.PathLike, batch_size: int) -> Iterator[np.ndarray]:
    """Read every image file below ``root`` (recursively, sorted) as RGB, in uint8 ``(b, h, w, 3)`` batches.

    Labels and layout do not matter here (unlike :func:`mdtblocks.data.list_image_folder`,
    flat folders of ``000001.png`` files are fine). A batch holds images of one size: a
    new size starts a new batch. Images are not cropped; the extractor resizes them.

    Args:
        root: the folder.
        batch_size: images per batch (at most).

    Yields:
        uint8 arrays ``(b, h, w, 3)``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {str(root)!r}")
    batch: list[np.ndarray] = []
    for path in files:
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as err:
            raise ValueError(f"cannot read image {str(path)!r}: {err}") from err
        if batch and (len(batch) == batch_size or array.shape != batch[0].shape):
            yield np.stack(batch)
            batch = []
        batch.append(array)
    yield np.stack(batch)


def iter_image_batches(images: np.ndarray | torch.Tensor, batch_size: int) -> Iterator[Any]:
    """Consecutive slices of ``batch_size`` images of an in-memory batch."""
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size]


def extract_features(
    batches: Iterable[Any], extractor: InceptionFeatures, progress: bool = False
) -> dict[str, np.ndarray]:
    """Run the extractor over image batches and concatenate the features.

    Args:
        batches: image batches as :meth:`InceptionFeatures.forward` takes them.
        extractor: the feature extractor.
        progress: show a tqdm bar.

    Returns:
        ``{"pool": (n, d), ...}`` float32 numpy arrays, with the keys the extractor returns.
    """
    log.info("features: running the network over the images ...")
    start = time.perf_counter()
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="features", unit="batch")
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for key, value in extractor(batch).items():
            parts.setdefault(key, []).append(value.cpu().numpy())
    if not parts:
        raise ValueError("no images to extract features from")
    features = {key: np.concatenate(values) for key, values in parts.items()}
    log.info("features of %d images done in %.1fs", len(features["pool"]), time.perf_counter() - start)
    return features


def compute_statistics(
    source: str | os.PathLike | np.ndarray | torch.Tensor,
    extractor: InceptionFeatures,
    batch_size: int = 50,
    progress: bool = False,
) -> InceptionStatistics:
    """Statistics of an image set: a folder, an image ``.npz`` (``arr_0``), a statistics ``.npz``, or an array.

    A statistics ``.npz`` is loaded, not recomputed; its means and covariances serve FID
    and sFID only, unless it also holds the raw ``pool`` features (precision, recall).

    Args:
        source: the image set (arrays: as :meth:`InceptionFeatures.forward` takes them).
        extractor: the feature extractor.
        batch_size: images per forward pass.
        progress: show a progress bar.

    Returns:
        The statistics.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(source, (np.ndarray, torch.Tensor)):
        if source.ndim != 4 or source.shape[0] == 0:
            raise ValueError(f"an image array must be a non-empty 4-D batch, got shape {tuple(source.shape)}")
        batches: Iterable[Any] = iter_image_batches(source, batch_size)
    elif not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or an image array, got {type(source).__name__}")
    else:
        path = Path(source)
        if path.is_dir():
            batches = iter_image_folder(path, batch_size)
        elif not path.exists():
            raise FileNotFoundError(f"{str(path)!r} does not exist (expected an image folder or an .npz)")
        elif path.suffix != ".npz":
            raise ValueError(
                f"{str(path)!r} is neither a folder nor an .npz (expected an image folder, an .npz with uint8 "
                "'arr_0' images, or a statistics .npz with 'mu' and 'sigma')"
            )
        elif is_statistics_file(path):
            return InceptionStatistics.load(path)
        else:
            batches = iter_image_batches(load_image_array(path), batch_size)
    features = extract_features(batches, extractor, progress)
    n, d = features["pool"].shape
    spatial = f" and {features['spatial'].shape[1]}" if "spatial" in features else ""
    with log_stage("statistics", f"means and covariances of {n} images' {d}{spatial}-dimensional features"):
        return InceptionStatistics.from_features(features)
