"""Labelled image folders (ImageNet class folders or ADM flat files), center-cropped, flips by index."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from .transforms import center_crop, pil_to_tensor

__all__ = [
    "IMAGE_EXTENSIONS", "ImageFolderDataset", "ImageFolderListing", "list_image_folder", "scan_image_folder",
    "upsampling_warning",
]

log = logging.getLogger("mdtblocks.data")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
"""File suffixes (lower-cased) that count as images."""

# What a broken file can raise while PIL opens and decodes it.
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def _images_under(directory: Path) -> list[Path]:
    """Every image file below ``directory`` (recursively), sorted for a stable order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in filenames if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
    return sorted(found)


@dataclass(frozen=True)
class ImageFolderListing:
    """What a labelled image folder holds, as :func:`scan_image_folder` read it.

    Attributes:
        files: the image paths, sorted.
        labels: their integer labels (indices into ``classes``).
        classes: the sorted class names.
        layout: ``"class folders"`` or ``"ADM flat files"``.
        skipped: top-level image files left out of a class-folder dataset (stray files
            such as a preview grid next to the class folders).
    """

    files: list[Path]
    labels: list[int]
    classes: list[str]
    layout: str
    skipped: list[Path] = field(default_factory=list)


def _names(paths: list[Path], limit: int = 5) -> str:
    shown = ", ".join(repr(p.name) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _adm_named(path: Path, classes: set[str]) -> bool:
    """``ClassID_ImgID.ext`` with a ``ClassID`` that is one of ``classes`` or a number (an ADM flat file)."""
    if "_" not in path.name:
        return False
    prefix = path.name.split("_", 1)[0]
    return prefix in classes or prefix.isdigit()


def scan_image_folder(root: str | os.PathLike) -> ImageFolderListing:
    """Decide the layout of a labelled image folder from what it holds, and list it.

    - Class folders (``torchvision.datasets.ImageFolder`` / ImageNet ``train/``):
      ``root/<class>/**/<image>``; classes sorted by folder name. They win whenever a
      subfolder holds images: image files at the top level are then skipped, with a
      warning that names them.
    - ADM flat files (``root/**/<ClassID>_<ImgID>.<ext>``, the layout ADM's
      ``image_datasets.py`` reads), when no subfolder holds images: the label is the
      text before the first underscore of the file name; classes sorted by that prefix.

    Args:
        root: the dataset folder.

    Returns:
        The files, labels, class names, the layout and the skipped top-level files.

    Raises:
        ValueError: a folder that mixes the two layouts (class folders and, at the top,
            ``ClassID_ImgID`` files whose ``ClassID`` is a class folder's name or a number),
            an empty class folder, a flat file without a class prefix, or no images at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a directory")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    top_files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    per_class = {sub: _images_under(sub) for sub in subdirs}
    files: list[Path] = []
    names: list[str] = []
    skipped: list[Path] = []
    if any(per_class.values()):
        layout = "class folders"
        folder_names = {sub.name for sub in subdirs}
        flat = [p for p in top_files if _adm_named(p, folder_names)]
        if flat:
            raise ValueError(
                f"{str(root)!r} mixes two layouts: {len(subdirs)} class folders and {len(flat)} ADM flat files "
                f"(ClassID_ImgID) at the top level ({_names(flat)}); keep one: move the files into their class "
                "folders, or the folders' images to the top level"
            )
        for sub, images in per_class.items():
            if not images:
                # An empty class would silently shift every later label and shrink num_classes.
                raise ValueError(
                    f"class folder {str(sub)!r} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                    "remove it or add its images"
                )
            files.extend(images)
            names.extend([sub.name] * len(images))
        skipped = top_files
        if skipped:
            log.warning(
                "%s: class folders found; skipping %d image file(s) at the top level, which belong to no class: %s",
                root, len(skipped), _names(skipped),
            )
    else:
        layout = "ADM flat files"
        for path in _images_under(root):
            if "_" not in path.name:
                raise ValueError(
                    f"{str(root)!r} looks like an ADM flat folder (images at the top level) but {path.name!r} has no "
                    "'<ClassID>_' prefix; use 'ClassID_ImgID.ext' names or one subfolder per class"
                )
            files.append(path)
            names.append(path.name.split("_", 1)[0])
    if not files:
        raise ValueError(
            f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {str(root)!r}; expected one subfolder "
            "per class, or ADM flat files named ClassID_ImgID.ext"
        )
    classes = sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    return ImageFolderListing(files, [index[n] for n in names], classes, layout, skipped)


def list_image_folder(root: str | os.PathLike) -> tuple[list[Path], list[int], list[str]]:
    """List a labelled image folder in either of the two common layouts (see :func:`scan_image_folder`).

    Args:
        root: the dataset folder.

    Returns:
        ``(files, labels, classes)``: sorted image paths, their integer labels
        (indices into ``classes``) and the sorted class names.
    """
    listing = scan_image_folder(root)
    return listing.files, listing.labels, listing.classes


def upsampling_warning(
    native_side: int | None, image_size: int, multiple: int = 1, flag: str = "--image-size"
) -> str | None:
    """A warning when ``image_size`` enlarges images of ``native_side`` pixels more than 2x, else ``None``.

    Args:
        native_side: the images' shorter side (``None``: unknown, no warning).
        image_size: the side they are cropped and resized to.
        multiple: what the suggested size must be a multiple of (VAE downsampling x patch size).
        flag: the flag that sets ``image_size``, for the message.
    """
    if native_side is None or image_size <= 2 * native_side:
        return None
    suggested = -(-native_side // multiple) * multiple
    return (
        f"the images are {native_side} px on their shorter side: {flag} {image_size} upsamples them "
        f"{image_size / native_side:.1f}x, which adds no detail and costs as much as {image_size} px images; "
        f"{flag} {suggested} keeps them about their own size"
    )


class ImageFolderDataset(Dataset):
    """Labelled images, ADM center-cropped to ``image_size``, as float32 RGB tensors in [-1, 1].

    With ``flip=True`` the dataset holds each image twice: index ``i`` for
    ``i < num_images`` is image ``i``, index ``num_images + i`` its horizontal
    mirror. Flips are therefore a function of the index (no random state in the
    dataset), so a resumed run that replays the sampler sees identical batches.

    A file that cannot be read or decoded is never fatal: the dataset returns
    the next readable image (same flip, wrapping around) instead, and marks the
    file as bad in a shared-memory table, so ``num_skipped`` counts the broken
    files seen by any DataLoader worker.

    Args:
        root: class-folder or ADM flat-file layout (see :func:`list_image_folder`).
        image_size: output side length.
        flip: add the mirrored copy of every image.

    Attributes:
        classes: class names, sorted; label ``i`` is ``classes[i]``.
        num_classes: ``len(classes)``.
        layout: ``"class folders"`` or ``"ADM flat files"`` (see :func:`scan_image_folder`).
        skipped_top_files: stray image files at the top of a class-folder dataset, left out.
        num_images: number of files (half the length when ``flip``).
    """

    def __init__(self, root: str | os.PathLike, image_size: int, flip: bool = True) -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.root = Path(root)
        self.image_size = image_size
        self.flip = flip
        listing = scan_image_folder(root)
        files, labels, self.classes = listing.files, listing.labels, listing.classes
        self.layout = listing.layout
        self.skipped_top_files = listing.skipped
        # Numpy arrays, not lists of Python objects: DataLoader workers forked from this process
        # would otherwise copy the pages of a million-entry list as they touch refcounts.
        self._paths = np.array([os.fsencode(f.relative_to(self.root)) for f in files], dtype=np.bytes_)
        self._labels = np.asarray(labels, dtype=np.int64)
        self.num_images = len(files)
        self.num_classes = len(self.classes)
        # Shared memory: DataLoader workers (fork or spawn) write into the same table.
        self._bad = torch.zeros(self.num_images, dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return 2 * self.num_images if self.flip else self.num_images

    def native_side(self, samples: int = 8) -> int | None:
        """The shorter side, in pixels, of the smallest of ``samples`` files spread over the dataset.

        Only the file headers are read. ``None`` when none of them can be opened.
        """
        count = min(samples, self.num_images)
        picks = sorted({round(i * (self.num_images - 1) / max(samples - 1, 1)) for i in range(count)})
        sides = []
        for i in picks:
            try:
                with Image.open(self.file(i)) as img:
                    sides.append(min(img.size))
            except _DECODE_ERRORS:
                continue
        return min(sides) if sides else None

    @property
    def files(self) -> list[Path]:
        """The image files, sorted (built on each call; use :meth:`file` for one)."""
        return [self.file(i) for i in range(self.num_images)]

    @property
    def labels(self) -> list[int]:
        """The class index of each file."""
        return self._labels.tolist()

    def file(self, file_index: int) -> Path:
        """The path of one image file.

        Args:
            file_index: position in the sorted file list.

        Returns:
            The file's path.
        """
        return self.root / os.fsdecode(self._paths[file_index])

    def label(self, file_index: int) -> int:
        """The class index of one image file.

        Args:
            file_index: position in the sorted file list.

        Returns:
            Its label in ``[0, num_classes)``.
        """
        return int(self._labels[file_index])

    @property
    def num_skipped(self) -> int:
        """Number of distinct files found unreadable so far (in this process or any worker)."""
        return int(self._bad.sum())

    @property
    def skipped_files(self) -> list[Path]:
        """The files found unreadable so far."""
        return [self.file(i) for i in torch.nonzero(self._bad).flatten().tolist()]

    def skipped_names(self, limit: int = 5) -> str:
        """The first ``limit`` unreadable files found so far (paths under ``root``), and how many more."""
        bad = torch.nonzero(self._bad).flatten().tolist()
        shown = ", ".join(repr(os.fsdecode(self._paths[i])) for i in bad[:limit])
        return shown + (f" and {len(bad) - limit} more" if len(bad) > limit else "")

    def split_index(self, index: int) -> tuple[int, bool]:
        """Map a dataset index to ``(file_index, mirrored)``.

        Args:
            index: an index in ``[0, len(self))``.

        Returns:
            The image file's position in ``self.files`` and whether it is the mirrored copy.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of length {len(self)}")
        return index % self.num_images, index >= self.num_images

    def load(self, file_index: int, mirrored: bool = False) -> Float[Tensor, "c hh ww"] | None:
        """Read, crop and normalise one file, or return ``None`` (and mark it bad) if it is unreadable.

        Args:
            file_index: position in ``self.files``.
            mirrored: return the horizontal mirror image.

        Returns:
            A ``(3, image_size, image_size)`` tensor in [-1, 1], or ``None``.
        """
        if self._bad[file_index]:
            return None
        try:
            with Image.open(self.file(file_index)) as img:
                img.load()
                image = center_crop(img.convert("RGB"), self.image_size)
        except _DECODE_ERRORS:
            self._bad[file_index] = True
            return None
        if mirrored:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return pil_to_tensor(image)

    def __getitem__(self, index: int) -> tuple[Float[Tensor, "c hh ww"], int]:
        file_index, mirrored = self.split_index(index)
        for offset in range(self.num_images):
            j = (file_index + offset) % self.num_images
            x = self.load(j, mirrored)
            if x is not None:
                return x, self.label(j)
        raise RuntimeError(f"none of the {self.num_images} images under {str(self.root)!r} could be read")
