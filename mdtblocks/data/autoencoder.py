"""One interface for the space diffusion runs in: pixels (identity) or a diffusers AutoencoderKL."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor, nn

__all__ = ["DEFAULT_VAE", "Autoencoder", "PixelSpace", "KLAutoencoder", "load_autoencoder", "autoencoder_fingerprint"]

DEFAULT_VAE = "stabilityai/sd-vae-ft-ema"
"""The VAE that MDT, MDTv2 and DiT were trained with (Stable Diffusion's, EMA-finetuned decoder)."""


@runtime_checkable
class Autoencoder(Protocol):
    """Maps images in [-1, 1] to the (scaled) latents a diffusion model is trained on, and back.

    Attributes:
        latent_channels: channels of the latents.
        downsample: spatial factor between images and latents (8 for SD-VAE, 1 for pixels).
        scale: factor the raw latents are multiplied by (the VAE config's ``scaling_factor``).
    """

    latent_channels: int
    downsample: int
    scale: float

    def encode(
        self, images: Float[Tensor, "b c hh ww"], generator: torch.Generator | None = None
    ) -> Float[Tensor, "b c2 h2 w2"]:
        """Map images to scaled latents.

        Args:
            images: a batch in [-1, 1].
            generator: noise source for sampling the posterior (VAEs), explicit for reproducibility.

        Returns:
            The latents the diffusion model works on.
        """
        ...

    def decode(self, latents: Float[Tensor, "b c2 h2 w2"]) -> Float[Tensor, "b c hh ww"]:
        """Map scaled latents back to images.

        Args:
            latents: as :meth:`encode` returns, or generated.

        Returns:
            Images in [-1, 1].
        """
        ...


class PixelSpace(nn.Module):
    """The identity autoencoder: diffusion directly on pixels (the built-in digits default).

    Args:
        channels: image channels (1 for grey digits, 3 for RGB).
    """

    downsample = 1
    scale = 1.0

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.latent_channels = channels

    def encode(
        self, images: Float[Tensor, "b c hh ww"], generator: torch.Generator | None = None
    ) -> Float[Tensor, "b c hh ww"]:
        """Return the images unchanged (``generator`` is unused; kept for the shared interface).

        Args:
            images: a batch in [-1, 1].
            generator: ignored.

        Returns:
            ``images``.
        """
        return images

    def decode(self, latents: Float[Tensor, "b c hh ww"]) -> Float[Tensor, "b c hh ww"]:
        """Clip samples to the image range [-1, 1].

        Args:
            latents: generated pixels.

        Returns:
            The pixels clipped to [-1, 1].
        """
        return latents.clamp(-1.0, 1.0)


class KLAutoencoder(nn.Module):
    """A diffusers ``AutoencoderKL`` behind the :class:`Autoencoder` interface.

    Latents are ``(z - shift) * scale`` with ``scale`` the config's
    ``scaling_factor`` (0.18215 for SD-VAE) and ``shift`` its ``shift_factor``
    (absent, i.e. 0, for SD-VAE), so no magic number lives outside the VAE's own config.

    Args:
        vae: a ``diffusers.AutoencoderKL``; it is frozen and put in eval mode.
        name: where it came from (recorded in latent caches and run configs).
    """

    def __init__(self, vae: nn.Module, name: str = "") -> None:
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.name = name
        config = vae.config
        self.latent_channels = int(config.latent_channels)
        self.downsample = 2 ** (len(config.block_out_channels) - 1)
        self.scale = float(config.scaling_factor)
        self.shift = float(getattr(config, "shift_factor", None) or 0.0)

    @torch.no_grad()
    def encode(
        self, images: Float[Tensor, "b c hh ww"], generator: torch.Generator | None = None
    ) -> Float[Tensor, "b c2 h2 w2"]:
        """Encode images and draw one sample of the posterior, scaled.

        Args:
            images: RGB batch in [-1, 1], sides divisible by ``downsample``.
            generator: the posterior noise source (on the VAE's device).

        Returns:
            Scaled latents, ``(b, latent_channels, H / downsample, W / downsample)``.
        """
        if images.shape[-1] % self.downsample or images.shape[-2] % self.downsample:
            raise ValueError(
                f"image size {tuple(images.shape[-2:])} is not divisible by the VAE's downsampling {self.downsample}"
            )
        posterior = self.vae.encode(images).latent_dist
        return (posterior.sample(generator=generator) - self.shift) * self.scale

    @torch.no_grad()
    def decode(self, latents: Float[Tensor, "b c2 h2 w2"]) -> Float[Tensor, "b c hh ww"]:
        """Decode scaled latents to images.

        Args:
            latents: scaled latents, as :meth:`encode` returns.

        Returns:
            Images clipped to [-1, 1].
        """
        return self.vae.decode(latents / self.scale + self.shift).sample.clamp(-1.0, 1.0)


def _has_accelerate() -> bool:
    """``accelerate`` is installed: diffusers may load weights lazily. Saying so up front keeps diffusers
    from printing its notice that it is missing (it would load the same way)."""
    return importlib.util.find_spec("accelerate") is not None


def load_autoencoder(
    name_or_dir: str | os.PathLike | None, *, channels: int = 3, local_files_only: bool = False
) -> Autoencoder:
    """Load the autoencoder a recipe names: ``None`` for pixel space, else a diffusers AutoencoderKL.

    The module is returned on the CPU in eval mode; the caller moves it to a device.

    Args:
        name_or_dir: ``None`` (pixel space), a local folder written by
            ``AutoencoderKL.save_pretrained``, or a Hugging Face name such as
            ``"stabilityai/sd-vae-ft-ema"`` (resolved through the local HF cache).
        channels: image channels for pixel space.
        local_files_only: never touch the network (also implied by ``HF_HUB_OFFLINE=1``).

    Returns:
        A :class:`PixelSpace` or :class:`KLAutoencoder`.
    """
    if name_or_dir is None:
        return PixelSpace(channels)
    from diffusers import AutoencoderKL  # deferred: importing diffusers is slow

    name = str(name_or_dir)
    if name.strip().lower() in ("none", "null", ""):
        raise ValueError(f"VAE {name!r} names no VAE; pass None (not a string) for pixel space, or a VAE name or folder")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"VAE folder {name!r} has no config.json (write it with AutoencoderKL.save_pretrained)")
        return KLAutoencoder(AutoencoderKL.from_pretrained(str(path), low_cpu_mem_usage=_has_accelerate()), name=name)
    if path.exists() or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"VAE {name!r} is not a folder with an AutoencoderKL (config.json + weights)")
    try:
        vae = AutoencoderKL.from_pretrained(name, local_files_only=local_files_only, low_cpu_mem_usage=_has_accelerate())
    except Exception as err:  # diffusers raises OSError, EnvironmentError or hub errors depending on version
        raise FileNotFoundError(
            f"could not load the VAE {name!r} from the Hugging Face cache or hub ({type(err).__name__}: {err}). "
            f"Without network access, download it elsewhere with AutoencoderKL.from_pretrained({name!r})"
            ".save_pretrained(DIR), copy DIR here and pass '--vae DIR', or train from pre-extracted latents "
            "with '--latents DIR'"
        ) from err
    return KLAutoencoder(vae, name=name)


def autoencoder_fingerprint(autoencoder: Autoencoder) -> str | None:
    """A hash of a VAE's weights and scaling (``None`` in pixel space), recorded in latent caches.

    Two names for one VAE (the hub name and a local ``save_pretrained`` copy of it) get the
    same fingerprint, so a cache can be checked against the VAE a run asks for by content.
    """
    vae = getattr(autoencoder, "vae", None)
    if not isinstance(vae, nn.Module):
        return None
    digest = hashlib.sha256(repr((float(autoencoder.scale), float(getattr(autoencoder, "shift", 0.0)))).encode())
    for key, tensor in sorted(vae.state_dict().items()):
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]

