"""A latent cache checked against the run's ``--vae`` and ``--image-size`` before training.

Latents only mean something to the VAE that encoded them: a run that trains on them and
decodes its sample grids and pipeline with another VAE makes wrong pictures without any
error. So the cache's ``meta.json`` decides the VAE and the image size; a flag given on the
command line that disagrees with it stops the run, and a default never does.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from ...data import Autoencoder, LatentDataset, autoencoder_fingerprint, load_autoencoder, recorded_vae_source, vae_mismatch

__all__ = ["cache_autoencoder", "check_cache_image_size", "flags_given"]


def _same_name(a: str, b: str) -> bool:
    """Two VAE names that surely mean the same VAE: equal, or the same existing folder."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


def _show(vae: str | None) -> str:
    return "none (pixel space)" if vae is None else repr(vae)


def cache_autoencoder(cache: LatentDataset, asked: str | None, given: bool) -> tuple[Autoencoder, str | None]:
    """The VAE that decodes a cache's latents, and its name: the recorded one, or ``asked`` if it is the same VAE.

    Args:
        cache: the latent cache.
        asked: the ``--vae`` value (``None``: pixel space).
        given: whether ``--vae`` was on the command line (its default is never held against the cache).

    Raises:
        ValueError: ``--vae`` names another VAE than the one that encoded the cache.
    """
    recorded, channels = cache.vae, cache.latent_shape[0]
    if not given or asked == recorded or (asked is not None and recorded is not None and _same_name(asked, recorded)):
        # The recorded absolute folder finds a VAE named by a path relative to where the cache was made.
        name = recorded_vae_source(recorded, cache.vae_provenance) if not given else asked
        autoencoder = load_autoencoder(name, channels=channels)
        changed = vae_mismatch(cache.vae_provenance, autoencoder) if cache.vae_provenance else []
        if changed:
            raise ValueError(
                f"the VAE {name!r} is not the one that encoded the latent cache {str(cache.root)!r}: its "
                f"{', '.join(changed)} (vae_provenance in its meta.json); put that VAE back there, or extract a new cache"
            )
        return autoencoder, name
    why = "they are different VAEs"
    if asked is not None and recorded is not None:
        # Another name may still be the same weights (a local save_pretrained copy of a hub VAE).
        autoencoder = load_autoencoder(asked, channels=channels)
        fingerprint, expected = autoencoder_fingerprint(autoencoder), cache.meta.get("vae_fingerprint")
        if expected is not None and fingerprint == expected:
            return autoencoder, asked
        why = "their weights differ" if expected is not None else "the cache records no weight fingerprint to compare"
    raise ValueError(
        f"the latent cache {str(cache.root)!r} was encoded with the VAE {_show(recorded)} (its meta.json) but --vae "
        f"asks for {_show(asked)} ({why}); the run would decode its samples with another VAE than the one that made "
        f"the latents. Drop --vae to use the cache's VAE, or extract a new cache with --vae {asked}"
    )


def check_cache_image_size(cache: LatentDataset, downsample: int, asked: int, given: bool) -> int:
    """The image side a cache was extracted at; checked against its latents and, if given, ``--image-size``.

    Args:
        cache: the latent cache.
        downsample: the decoding VAE's downsampling factor.
        asked: the ``--image-size`` value.
        given: whether ``--image-size`` was on the command line.

    Raises:
        ValueError: the recorded size and the latents disagree, or ``--image-size`` asks for another size.
    """
    c, h, w = cache.latent_shape
    side = h * downsample
    recorded = cache.meta.get("image_size")
    if recorded is not None and int(recorded) != side:
        raise ValueError(
            f"the latent cache {str(cache.root)!r} records image_size {recorded} but its latents {c}x{h}x{w} decode "
            f"to {side}x{side} pixels (VAE downsampling {downsample}); the cache is damaged or from another VAE"
        )
    if given and asked != side:
        raise ValueError(
            f"the latent cache {str(cache.root)!r} was extracted at image size {side} (its meta.json; latents "
            f"{c}x{h}x{w}) but --image-size asks for {asked}; drop --image-size to train at the cache's size, or "
            f"extract a new cache with --image-size {asked}"
        )
    return side


def flags_given(given: Collection[str] | None, cfg: object, defaults: object) -> set[str]:
    """Which of ``vae`` and ``image_size`` were given: from the parsed flags, or (``None``) those off the defaults."""
    if given is not None:
        return {n for n in ("vae", "image_size") if n in given}
    return {n for n in ("vae", "image_size") if getattr(cfg, n) != getattr(defaults, n)}
