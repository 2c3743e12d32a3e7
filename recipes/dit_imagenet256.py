"""Train DiT on ImageNet 256x256 as Peebles and Xie (2023) do (official ``train.py``).

Paper setup: DiT-XL/2 on SD-VAE latents, AdamW (lr 1e-4, no weight decay, no clipping),
global batch 256, EMA 0.9999, no masking, learned sigma, 1000 linear steps.

    python recipes/dit_imagenet256.py                          # built-in demo: digits on CPU
    torchrun --nproc-per-node 8 recipes/dit_imagenet256.py --data /data/imagenet/train

Rerunning a command with the same ``--out`` resumes from its newest checkpoint.
"""

from mdtblocks.training.recipe import DEMO, TrainRecipe

RECIPE = TrainRecipe(
    script="recipes/dit_imagenet256.py",
    family="DiT",
    paper=dict(out="runs/dit_imagenet256", model="DiT-XL/2", lr=1e-4, global_batch_size=256, steps=7_000_000),
    builtin={**DEMO, "model": "DiT-S/4"},
    real_run="torchrun --nproc-per-node 8 recipes/dit_imagenet256.py --data /path/to/imagenet/train",
    description=__doc__,
)
main = RECIPE.main

if __name__ == "__main__":
    main()
