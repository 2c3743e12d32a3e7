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

The objective is flow matching (``--objective flow``, Linear path, velocity prediction).
Rerunning a command with the same ``--out`` resumes from its newest checkpoint.
"""

from __future__ import annotations

from typing import Any

from mdtblocks.training.recipe import DEMO, TrainRecipe

SAMPLING: dict[str, Any] = {
    "sampler": "sde_euler", "steps": 250, "cfg_scale": 1.8, "guidance_interval": (0.3, 1.0),
}
"""REPA's evaluation sampler in the library's convention (flow time 0 noise, 1 data)."""

PAPER: dict[str, Any] = dict(
    out="runs/repa_imagenet256", model="SiT-XL/2", objective="flow", flow_path="Linear", flow_prediction="velocity",
    lr=1e-4, weight_decay=0.0, global_batch_size=256, steps=400_000, grad_clip=1.0,
    align="repa", align_depth=8, align_coeff=0.5, align_projector_dim=2048, pipeline=False,
)
"""REPA's SiT-XL/2 run (``--align-encoder`` must name the DINOv2-B folder)."""


RECIPE = TrainRecipe(
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
