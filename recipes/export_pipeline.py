"""Write a run's sampling pipeline (``OUT/pipeline``): its EMA weights and, for a latent run, its VAE.

Usage::

    python recipes/export_pipeline.py --run runs/mdtv2
    python recipes/export_pipeline.py --run runs/mdtv2 --vae vae/sd-vae-ft-ema

The training recipes write ``OUT/pipeline`` at the end of a run; this writes it again
(from the newest checkpoint, or the one ``--run`` names), e.g. when the run's VAE could not
be found at the end of training. Without ``--vae`` the VAE is the one the run's
``config.json`` records (its name, or the absolute folder of ``vae_provenance``); a
``--vae`` whose latent channels, scaling or downsampling differ from the recorded ones is
refused. The folder is replaced whole, so a reader sees the old pipeline or the new one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mdtblocks.training.recipe import exit_on_bad_input, flag, parse_flags
from mdtblocks.training.recipe.train import write_pipeline


@dataclass(frozen=True)
class ExportConfig:
    """Every field is a ``--flag`` (``python recipes/export_pipeline.py --help``)."""

    run: str = flag("", "run folder OUT (its newest checkpoint) or a checkpoint folder OUT/checkpoints/NNNNNNN")
    vae: str | None = flag(None, "AutoencoderKL folder or name; none: the VAE the run's config.json records")
    out: str | None = flag(None, "pipeline folder to write; none: RUN/pipeline")
    weights: Literal["ema", "model"] = flag("ema", "which weights of the checkpoint to export")

    def __post_init__(self) -> None:
        if not self.run:
            raise ValueError("--run is required (a run folder such as runs/x, or one of its checkpoints)")
        if not Path(self.run).is_dir():
            raise FileNotFoundError(f"--run {self.run!r} is not a folder (expected a run folder or a checkpoint folder)")


def main(argv: list[str] | None = None) -> Path:
    """Write the pipeline folder.

    Args:
        argv: command-line arguments (``None``: ``sys.argv``).

    Returns:
        The pipeline folder.
    """
    cfg = ExportConfig(**parse_flags(ExportConfig, argv, description=__doc__))
    run = Path(cfg.run)
    if cfg.out is not None:
        out = Path(cfg.out)
    elif run.parent.name == "checkpoints":
        out = run.parent.parent / "pipeline"
    else:
        out = run / "pipeline"
    folder = write_pipeline(run, out, cfg.vae, weights_name=f"{cfg.weights}.safetensors")
    print(f"wrote the pipeline of {cfg.run} ({cfg.weights} weights) to {folder}", file=sys.stderr)
    return folder


if __name__ == "__main__":
    sys.exit(exit_on_bad_input(main))
