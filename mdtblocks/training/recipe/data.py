"""Recipe data: the dataset and the space the model works in (ImageNet folder, latent cache, or the built-in digits)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.utils.data import Dataset

from ...data import Autoencoder, DigitsDataset, ImageFolderDataset, LatentDataset, load_autoencoder, upsampling_warning, vae_provenance
from ...models import PRESETS
from .cli import RecipeConfig
from .latent_cache import cache_autoencoder, check_cache_image_size, flags_given

__all__ = ["CachedLatents", "RunData", "load_run_data", "describe"]


class CachedLatents(nn.Module):
    """The autoencoder of a latent-cache run: items are latents already (encode is the identity);
    samples are decoded with the VAE that made the cache."""

    def __init__(self, vae: Autoencoder) -> None:
        super().__init__()
        self.vae = vae
        self.latent_channels = vae.latent_channels
        self.downsample = vae.downsample
        self.scale = vae.scale

    def encode(
        self, images: Float[Tensor, "b c2 h2 w2"], generator: torch.Generator | None = None
    ) -> Float[Tensor, "b c2 h2 w2"]:
        """Return the cached latents unchanged (``generator`` unused).

        Args:
            images: ``(b, c2, h2, w2)`` items of the cache, already scaled latents.
            generator: ignored (kept for the :class:`~mdtblocks.data.Autoencoder` interface).

        Returns:
            ``(b, c2, h2, w2)``: ``images``.
        """
        return images

    def decode(self, latents: Float[Tensor, "b c2 h2 w2"]) -> Float[Tensor, "b c hh ww"]:
        """Decode latents to images in [-1, 1] with the VAE.

        Args:
            latents: ``(b, c2, h2, w2)`` scaled latents, as cached or generated.

        Returns:
            ``(b, c, hh, ww)`` images in [-1, 1] (``hh = h2 * downsample``).
        """
        return self.vae.decode(latents)


@dataclass(frozen=True)
class RunData:
    """The dataset and the space the model works in.

    Attributes:
        dataset: ``(x, y)`` pairs (images, or latents for a latent cache).
        autoencoder: images -> model space and back (identity for pixels).
        num_classes: classes of the dataset.
        latent_shape: ``(channels, side)`` of the model's input.
        vae: the VAE's name or folder, ``None`` in pixel space.
        image_size: side of the images in pixels (for a latent cache, the size it was
            extracted at, not the ``--image-size`` flag).
        vae_provenance: the VAE's record (:func:`~mdtblocks.data.vae_provenance`: folder,
            config, weights hash), ``None`` in pixel space; the run's ``config.json`` keeps it.
        summary: one sentence for the start of the log: the source and its layout, classes,
            images, image size and the model's input shape.
        warnings: what the user should hear about the data (e.g. images upsampled more than 2x).
    """

    dataset: Dataset
    autoencoder: Autoencoder
    num_classes: int
    latent_shape: tuple[int, int]
    vae: str | None
    image_size: int
    vae_provenance: dict | None = None
    summary: str = ""
    warnings: tuple[str, ...] = ()


def load_run_data(cfg: RecipeConfig, builtin_channels: int = 1, given: Collection[str] | None = None) -> RunData:
    """Dataset and autoencoder for ``--latents``, ``--data`` or (neither) the built-in digits in pixel space.

    Args:
        cfg: the run's config.
        builtin_channels: channels of the built-in digits.
        given: the flags on the command line; with a latent cache, a given ``--vae`` or
            ``--image-size`` must agree with its ``meta.json``. ``None``: those that differ
            from the :class:`RecipeConfig` defaults count as given.
    """
    if cfg.latents is not None:
        dataset = LatentDataset(cfg.latents, flip=cfg.flip)
        c, h, w = dataset.latent_shape
        if h != w:
            raise ValueError(f"latents in {cfg.latents} are {h}x{w}; the models take square inputs")
        explicit = flags_given(given, cfg, RecipeConfig())
        # The VAE that made the cache decodes the samples; a --vae that names another one is refused.
        vae, vae_name = cache_autoencoder(dataset, cfg.vae, "vae" in explicit)
        ae = CachedLatents(vae)
        if ae.latent_channels != c:
            raise ValueError(f"latents in {cfg.latents} have {c} channels but the VAE {vae_name!r} makes {ae.latent_channels}")
        image_size = check_cache_image_size(dataset, ae.downsample, cfg.image_size, "image_size" in explicit)
        layout = dataset.meta.get("layout")
        source = f"latent cache {cfg.latents}" + (f" (of {layout})" if layout else "")
        summary = describe(source, dataset.num_classes, dataset.num_images, image_size, (c, h), flip=cfg.flip)
        return RunData(dataset, ae, dataset.num_classes, (c, h), vae_name, image_size,
                       vae_provenance=vae_provenance(vae), summary=summary)
    if cfg.data is not None:
        dataset = ImageFolderDataset(cfg.data, cfg.image_size, flip=cfg.flip)
        ae = load_autoencoder(cfg.vae)
        if cfg.image_size % ae.downsample:
            raise ValueError(f"--image-size {cfg.image_size} is not divisible by the VAE's downsampling {ae.downsample}")
        latent_shape = (ae.latent_channels, cfg.image_size // ae.downsample)
        native = dataset.native_side()
        summary = describe(f"{cfg.data} ({dataset.layout})", dataset.num_classes, dataset.num_images, cfg.image_size,
                           latent_shape, native, flip=cfg.flip)
        multiple = ae.downsample * int(PRESETS[cfg.model][1].get("patch_size", 1)) if cfg.model in PRESETS else ae.downsample
        warning = upsampling_warning(native, cfg.image_size, multiple)
        return RunData(dataset, ae, dataset.num_classes, latent_shape, cfg.vae, cfg.image_size,
                       vae_provenance=vae_provenance(ae), summary=summary, warnings=(warning,) if warning else ())
    dataset = DigitsDataset(image_size=cfg.image_size, channels=builtin_channels, flip=cfg.flip)
    ae = load_autoencoder(None, channels=builtin_channels)
    latent_shape = (builtin_channels, cfg.image_size)
    summary = describe("the built-in digits", dataset.num_classes, dataset.num_images, cfg.image_size, latent_shape,
                       flip=cfg.flip)
    return RunData(dataset, ae, dataset.num_classes, latent_shape, None, cfg.image_size, summary=summary)


def describe(
    source: str,
    num_classes: int,
    num_images: int,
    image_size: int,
    shape: tuple[int, int],
    native: int | None = None,
    shape_name: str = "model input",
    flip: bool = True,
) -> str:
    """The data sentence of the start of a run's log.

    Args:
        source: where the data comes from, with its layout.
        num_classes: classes.
        num_images: images (before flips).
        image_size: the side the images are cropped to.
        shape: ``(channels, side)`` of the model input.
        native: the images' own shorter side, when known.
        shape_name: what ``shape`` is called (``"latents"`` for an extraction).
        flip: whether mirrored copies double the images (``"x2 with flips"``) or not (``"no flips"``).
    """
    own = f" ({native} px on disk)" if native is not None and native != image_size else ""
    c, side = shape
    return (
        f"data: {source}: {num_classes} classes, {num_images} images ({'x2 with flips' if flip else 'no flips'}); "
        f"images {image_size}x{image_size}"
        f"{own}; {shape_name} {c}x{side}x{side}"
    )


