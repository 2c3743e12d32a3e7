"""The VAE a sampling command decodes with, checked against the one its training run recorded.

A model's latents mean something only to the VAE it was trained on. ``recipes/sample.py
--vae`` may name another copy of that VAE (another path, a local copy of a hub VAE), but a
VAE with other latent channels, scaling or downsampling decodes them into wrong pictures
without any error; it is refused. Where the run records no ``vae_provenance`` (runs written
before it was recorded, or a checkpoint without its run folder) the two cannot be compared,
and a warning says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...data import Autoencoder, autoencoder_fingerprint, vae_mismatch

__all__ = ["check_run_vae"]


def _same(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return a == b or (pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve())


def check_run_vae(autoencoder: Autoencoder, asked: str | None, settings: dict[str, Any]) -> str | None:
    """Check the VAE a sampling run decodes with against its training run's record.

    Args:
        autoencoder: the loaded VAE (from ``--vae``, or from the run's record).
        asked: the ``--vae`` value; ``None``: the run's own VAE was loaded.
        settings: the training run's ``config.json`` (``{}`` when there is none).

    Returns:
        A warning to print when the VAEs cannot be compared or are other VAEs with the same
        latent space; ``None`` when nothing needs saying.

    Raises:
        ValueError: the VAE makes other latents than the run's (or the run works in pixel space).
    """
    recorded, record = settings.get("vae"), settings.get("vae_provenance")
    changed = vae_mismatch(record, autoencoder) if record else []
    if asked is None:
        if changed:
            raise ValueError(
                f"the run's VAE {recorded!r} is not the one it trained with any more: its {', '.join(changed)} "
                "(vae_provenance in the run's config.json); put that VAE back, or pass it with --vae DIR"
            )
        return None
    if "vae" not in settings:
        return (
            f"cannot compare --vae {asked!r} with the VAE the model was trained on: no run config.json next to "
            "the checkpoint (CKPT/../../config.json); make sure it is that VAE, or its samples are wrong pictures"
        )
    if recorded is None:
        raise ValueError(
            f"--vae {asked!r}: the run trained in pixel space (vae null in its config.json), so its samples are "
            "images, not latents; drop --vae"
        )
    if changed:
        raise ValueError(
            f"--vae {asked!r} makes other latents than the run's VAE {recorded!r}: its {', '.join(changed)} "
            "(vae_provenance in the run's config.json); drop --vae to decode with the run's VAE"
        )
    if record is None:
        if _same(asked, recorded):
            return None
        return (
            f"cannot compare --vae {asked!r} with the run's VAE {recorded!r}: the run's config.json records no "
            "vae_provenance (latent channels, scaling); make sure it makes the same latents, or its samples are wrong"
        )
    if record.get("fingerprint") is not None and record["fingerprint"] == autoencoder_fingerprint(autoencoder):
        return None  # the same weights under another name (a local copy of the run's VAE)
    return (
        f"--vae {asked!r} is another VAE than the run's {recorded!r} (the same latent channels and scaling, other "
        f"weights); decoding with {asked!r}"
    )
