"""Which VAE made a latent cache or a run's latents: the record kept in ``meta.json`` and the run's ``config.json``.

Latents mean something only to the VAE that encoded them. A cache records that VAE's
provenance (where it was loaded from and the config that fixes its latent space), a run
copies it into its ``config.json``, and every later step (the exported pipeline,
``recipes/sample.py``) finds the VAE again from it and compares another VAE with it::

    {"name": "vae/tiny", "folder": "/abs/path/vae/tiny", "class": "AutoencoderKL",
     "latent_channels": 4, "scaling_factor": 0.18215, "shift_factor": 0.0, "downsample": 8,
     "config": {...}, "config_hash": "3f1c...", "fingerprint": "9ab0..."}

Caches and runs written before the record existed have none (``None``); they keep only the
name (``vae``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .autoencoder import Autoencoder, autoencoder_fingerprint

__all__ = ["LATENT_SPACE_KEYS", "vae_provenance", "vae_mismatch", "recorded_vae_source"]

LATENT_SPACE_KEYS = ("latent_channels", "scaling_factor", "shift_factor", "downsample")
"""The fields of a record that fix the meaning of a latent: two VAEs that differ in one make incompatible latents."""


def _latent_space(autoencoder: Autoencoder) -> dict[str, Any]:
    return {
        "latent_channels": int(autoencoder.latent_channels),
        "scaling_factor": float(autoencoder.scale),
        "shift_factor": float(getattr(autoencoder, "shift", 0.0)),
        "downsample": int(autoencoder.downsample),
    }


def vae_provenance(autoencoder: Autoencoder, fingerprint: str | None = None) -> dict[str, Any] | None:
    """The record of a VAE (``None`` in pixel space): where it came from, its config, a hash of its weights.

    Args:
        autoencoder: a :class:`~mdtblocks.data.KLAutoencoder` (its ``name`` is where it was loaded from).
        fingerprint: :func:`~mdtblocks.data.autoencoder_fingerprint` of it, if already computed.

    Returns:
        ``name`` (as given), ``folder`` (absolute, for a local folder; ``None`` for a hub name),
        ``class``, the :data:`LATENT_SPACE_KEYS`, ``config`` (the diffusers config without its
        private ``_`` keys), ``config_hash`` and ``fingerprint``.
    """
    vae = getattr(autoencoder, "vae", None)
    if vae is None or not hasattr(vae, "config"):
        return None
    name = str(getattr(autoencoder, "name", "") or "")
    path = Path(name).expanduser() if name else None
    folder = str(path.resolve()) if path is not None and path.is_dir() else None
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    config = json.loads(json.dumps(config, default=str))  # tuples -> lists: what meta.json will hold
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "name": name or None,
        "folder": folder,
        "class": type(vae).__name__,
        **_latent_space(autoencoder),
        "config": config,
        "config_hash": config_hash,
        "fingerprint": fingerprint if fingerprint is not None else autoencoder_fingerprint(autoencoder),
    }


def vae_mismatch(record: dict[str, Any], autoencoder: Autoencoder) -> list[str]:
    """How ``autoencoder``'s latent space differs from a record's (empty: the same channels, scaling and downsampling).

    Args:
        record: a :func:`vae_provenance` record.
        autoencoder: the VAE to compare.

    Returns:
        One ``"latent_channels 8 (recorded: 4)"`` entry per differing field of :data:`LATENT_SPACE_KEYS`.
    """
    mine = _latent_space(autoencoder)
    problems = []
    for key in LATENT_SPACE_KEYS:
        recorded = record.get(key)
        if recorded is not None and float(recorded) != float(mine[key]):
            problems.append(f"{key} {mine[key]} (recorded: {recorded})")
    return problems


def recorded_vae_source(name: str | None, record: dict[str, Any] | None) -> str | None:
    """Where to load a recorded VAE from: its name, or the recorded absolute folder when the name does not lead to it.

    A cache made with ``--vae vae/tiny`` names a folder relative to where it was extracted;
    the absolute ``folder`` of its record still finds it from anywhere.

    Args:
        name: the recorded name (``vae`` of ``meta.json`` or ``config.json``).
        record: the recorded :func:`vae_provenance`, or ``None``.

    Returns:
        ``name``, or the record's ``folder`` if ``name`` is not an existing folder and ``folder`` is.
    """
    folder = (record or {}).get("folder")
    if name is not None and Path(name).expanduser().is_dir():
        return name
    if folder and Path(folder).is_dir():
        return str(folder)
    return name if name is not None else folder
