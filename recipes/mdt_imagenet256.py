"""Train MDT v1 on ImageNet 256x256 as the ICCV 2023 paper does (Gao et al., official ``run.sh`` of the first release).

Paper setup: MDT-XL/2 on SD-VAE latents, AdamW (lr 3e-4 as the official mdtv1 ``image_train.py``, no weight decay, no clipping),
global batch 256 (32 per GPU on 8 GPUs), EMA 0.9999, fixed mask ratio 0.3,
``decode_layer`` 2, learned sigma, 1000 linear steps, no loss weighting.

    python recipes/mdt_imagenet256.py                          # built-in demo: digits on CPU
    torchrun --nproc-per-node 8 recipes/mdt_imagenet256.py --data /data/imagenet/train

Rerunning a command with the same ``--out`` resumes from its newest checkpoint.
"""

from mdtblocks.training.recipe import DEMO, TrainRecipe

RECIPE = TrainRecipe(
    script="recipes/mdt_imagenet256.py",
    family="MDT",
    paper=dict(out="runs/mdt_imagenet256", model="MDT-XL/2", lr=3e-4, global_batch_size=256, steps=2_000_000),
    builtin={**DEMO, "model": "MDT-S/4"},
    real_run="torchrun --nproc-per-node 8 recipes/mdt_imagenet256.py --data /path/to/imagenet/train",
    description=__doc__,
)
main = RECIPE.main

if __name__ == "__main__":
    main()
