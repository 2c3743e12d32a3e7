"""Image preprocessing shared by every dataset: ADM center crop, [-1, 1] tensors, uint8 export."""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, UInt8
from PIL import Image
from torch import Tensor

__all__ = ["center_crop", "pil_to_tensor", "to_uint8"]


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize and crop a PIL image to ``size x size`` the way ADM and DiT preprocess ImageNet.

    The ADM recipe (Dhariwal & Nichol 2021, ``center_crop_arr``): halve the image
    with a BOX filter while its shorter side is at least ``2 * size`` (cheap,
    alias-free downsampling of large photos), then one BICUBIC resize so the
    shorter side is exactly ``size``, then a centred crop of the longer side.

    Args:
        image: any PIL image (converted to RGB or kept as L by the caller).
        size: output side length in pixels.

    Returns:
        A ``size x size`` PIL image of the same mode.
    """
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    while min(image.size) >= 2 * size:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), resample=Image.BICUBIC)
    left = (image.width - size) // 2
    top = (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def pil_to_tensor(image: Image.Image) -> Float[Tensor, "c hh ww"]:
    """Convert an 8-bit PIL image to a float32 channels-first tensor in [-1, 1].

    Args:
        image: an ``L`` or ``RGB`` PIL image.

    Returns:
        The pixels mapped by ``v / 127.5 - 1`` (ADM's normalisation), shape ``(c, h, w)``.
    """
    arr = np.asarray(image, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()
    return tensor / 127.5 - 1.0


def to_uint8(images: Float[Tensor, "b c hh ww"]) -> UInt8[Tensor, "b hh ww c"]:
    """Convert generated images in [-1, 1] to uint8 NHWC, as the ADM evaluation suite expects.

    Uses ADM's conversion ``clamp((x + 1) * 127.5, 0, 255)`` truncated to integers.

    Args:
        images: a batch in [-1, 1] (values outside are clipped).

    Returns:
        The batch as uint8, channels last, on the CPU.
    """
    out = ((images.detach().float().cpu() + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous()
