"""Train SiT with REPA on ImageNet 256x256 as Yu et al. (2024) do (official ``train.py``, MIT).

Paper setup: SiT-XL/2 on SD-VAE latents, the linear flow with velocity prediction and
uniform time weighting, AdamW (lr 1e-4, no weight decay, gradient clip 1), global batch
256, EMA 0.9999, label dropout 0.1, 400k steps; REPA on the output of block 8 with
coefficient 0.5 and a 3-layer projector of width 2048 to DINOv2-B's patch features.

    python recipes/repa_imagenet256.py                  # built-in demo: digits on CPU, the offline Inception encoder
    python recipes/extract_latents.py --data /data/imagenet/train --out latents/in256 --align-encoder /models/dinov2-vit-b
    torchrun --nproc-per-node 8 recipes/repa_imagenet256.py --latents latents/in256 --align-encoder /models/dinov2-vit-b

``--align-encoder`` is a local folder of ``transformers``' ``Dinov2Model`` (nothing is
downloaded); with ``--latents`` the cache must store that encoder's features. Any other
``--align*`` flag applies as in every recipe (``--align-pass`` for MDT backbones).

Evaluation sampling (REPA's ``generate.py`` settings): :data:`SAMPLING`: the Euler-Maruyama
SDE with 250 steps, guidance scale 1.8 applied only for REPA's ``t <= 0.7``. REPA counts
time from data (0) to noise (1); the library's flow time runs from noise (0) to data (1),
so the interval is ``t >= 0.3`` here: ``guidance_interval=(0.3, 1.0)``.

The objective: until the recipes take ``--objective flow``, this module builds the flow
criterion itself (see :func:`flow_criterion`). Rerunning a command with the same ``--out``
resumes from its newest checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

from mdtblocks.criterion import Criterion, LabelDropout, rule_of_model
from mdtblocks.models import SiT
from mdtblocks.objectives.flow import FlowMatching
from mdtblocks.training.recipe import DEMO, TrainRecipe
from mdtblocks.training.recipe import train as recipe_train

SAMPLING: dict[str, Any] = {
    "sampler": "sde_euler", "steps": 250, "cfg_scale": 1.8, "guidance_interval": (0.3, 1.0),
}
"""REPA's evaluation sampler in the library's convention (flow time 0 noise, 1 data)."""

PAPER: dict[str, Any] = dict(
    out="runs/repa_imagenet256", model="SiT-XL/2", lr=1e-4, global_batch_size=256, steps=400_000, grad_clip=1.0,
    align="repa", align_depth=8, align_coeff=0.5, align_projector_dim=2048, pipeline=False,
)
"""REPA's SiT-XL/2 run (``--align-encoder`` must name the DINOv2-B folder)."""


def flow_criterion(model: Any, *, snr_gamma: float | None = None, masked_draws: str = "independent") -> Criterion:
    """REPA's loss besides the alignment: the linear flow, velocity prediction, uniform weighting, label dropout."""
    if snr_gamma is not None:
        raise ValueError("--snr-gamma weights the Gaussian diffusion loss; REPA's flow loss is unweighted")
    return Criterion(FlowMatching(path="Linear", prediction="velocity"), rule_of_model(model, masked_draws),
                     LabelDropout.of_model(model))


@contextlib.contextmanager
def flow_objective() -> Iterator[None]:
    """The shared recipe with SiT models and the flow criterion (no sample grids during training)."""
    saved = recipe_train.build_criterion, recipe_train.train, dict(recipe_train._MODEL_CLASSES)
    loop = recipe_train.train

    def train(*args: Any, sampler: tuple[str, int] | None = None, **kwargs: Any) -> Any:
        # No sample grids yet: the loop's grid sampler passes DDPM-only options (the flow wiring of the recipes adds them).
        return loop(*args, sampler=None, **kwargs)

    recipe_train.build_criterion, recipe_train.train = flow_criterion, train  # type: ignore[assignment]
    recipe_train._MODEL_CLASSES["SiT"] = SiT
    try:
        yield
    finally:
        recipe_train.build_criterion, recipe_train.train = saved[0], saved[1]
        recipe_train._MODEL_CLASSES.clear()
        recipe_train._MODEL_CLASSES.update(saved[2])


@dataclasses.dataclass(frozen=True)
class RepaRecipe(TrainRecipe):
    """The shared recipe, trained with the flow objective (REPA's SiT)."""

    def main(self, argv: Sequence[str] | None = None) -> None:
        """Train as :meth:`TrainRecipe.main`, with the flow criterion."""
        with flow_objective():
            super().main(argv)


RECIPE = RepaRecipe(
    script="recipes/repa_imagenet256.py",
    family="SiT",
    paper=PAPER,
    builtin={**DEMO, "model": "SiT-S/2", "align_encoder": "inception", "align_depth": None, "grad_clip": 1.0},
    real_run="torchrun --nproc-per-node 8 recipes/repa_imagenet256.py --latents latents/in256 --align-encoder DINOV2_DIR",
    description=__doc__,
)
main = RECIPE.main

if __name__ == "__main__":
    main()
