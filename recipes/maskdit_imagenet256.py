"""Train MaskDiT on ImageNet 256x256 as Zheng et al. (TMLR 2024) do: pre-training with half the tokens dropped, then an unmasked fine-tune.

Official setup (Anima-Lab/MaskDiT configs, as data in ``mdtblocks.masking.maskdit``):
MaskDiT-XL/2 on SD-VAE latents, EDM objective (P_mean -1.2, P_std 1.2, sigma_data 0.5),
AdamW without weight decay, EMA 0.9999, label dropout 0.1.

- ``--phase pretrain`` (default): 50% of the tokens dropped from the encoder, loss on the
  visible patches plus 0.1 x MAE on the dropped ones; lr 1e-4, global batch 1024,
  2M steps, mixed precision (bf16 here; the official run uses fp16 AMP).
- ``--phase finetune``: no dropping (the mask token unused), lr 5e-5, global batch 512,
  100k steps, fp32; a new run (own ``--out``) that starts from the EMA weights of
  ``--init-from`` (default: the pre-training run's newest checkpoint).

Each phase is an ordinary run: rerunning a command with the same ``--out`` resumes from
its newest checkpoint (a resumed fine-tune ignores ``--init-from``). Sample grids and
``recipes/sample.py`` use EDM's Heun sampler (official evaluation: 40 levels, guidance 1.5;
``recipes/sample.py`` takes 40 levels by default, and EDM's churn as ``--churn`` flags).

    python recipes/maskdit_imagenet256.py                                   # built-in demo: digits on CPU
    python recipes/maskdit_imagenet256.py --phase finetune                  # demo fine-tune of the demo run
    torchrun --nproc-per-node 8 recipes/maskdit_imagenet256.py --latents latents/in256
    torchrun --nproc-per-node 8 recipes/maskdit_imagenet256.py --latents latents/in256 --phase finetune
"""

import argparse
import sys
from collections.abc import Sequence

from mdtblocks.masking.maskdit import MASKDIT_IMAGENET256, MASKDIT_IMAGENET256_SAMPLING
from mdtblocks.training.recipe import DEMO, TrainRecipe

PRETRAIN, FINETUNE = MASKDIT_IMAGENET256
OUT = "runs/maskdit_imagenet256"


def stage_flags(stage, out: str) -> dict:
    """The recipe flags of one official stage."""
    return dict(
        out=out, model="MaskDiT-XL/2", objective="edm", lr=stage.lr, global_batch_size=stage.global_batch_size,
        steps=stage.steps, ema_decay=stage.ema_decay, precision="bf16" if stage.mixed_precision else "fp32",
        mask_ratio=stage.mask_ratio, sample_steps=MASKDIT_IMAGENET256_SAMPLING["num_steps"],
        sample_cfg_scale=MASKDIT_IMAGENET256_SAMPLING["cfg_scale"],
    )


_DEMO = {**DEMO, "model": "MaskDiT-S/4", "precision": "fp32", "sample_steps": 18}

RECIPES = {
    "pretrain": TrainRecipe(
        script="recipes/maskdit_imagenet256.py",
        family="MaskDiT",
        paper=stage_flags(PRETRAIN, OUT),
        builtin=_DEMO,
        real_run="torchrun --nproc-per-node 8 recipes/maskdit_imagenet256.py --latents /path/to/latents",
        description=__doc__,
    ),
    "finetune": TrainRecipe(
        script="recipes/maskdit_imagenet256.py --phase finetune",
        family="MaskDiT",
        paper={**stage_flags(FINETUNE, OUT + "_finetune"), "init_from": OUT},
        builtin={**_DEMO, "steps": 300, "lr": 1e-3},
        real_run="torchrun --nproc-per-node 8 recipes/maskdit_imagenet256.py --latents /path/to/latents --phase finetune",
        description=__doc__,
    ),
}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the phase ``--phase`` names (``pretrain`` or ``finetune``) with the other flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    phase = argparse.ArgumentParser(add_help=False)
    phase.add_argument("--phase", choices=sorted(RECIPES), default="pretrain")
    known, rest = phase.parse_known_args(argv)
    RECIPES[known.phase].main(rest)


if __name__ == "__main__":
    main()
