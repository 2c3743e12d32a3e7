"""Train SiT on ImageNet 256x256 as Ma et al. (2024) do (official ``train.py``).

Paper setup: SiT-XL/2 on SD-VAE latents, the Linear path with velocity prediction (flow
matching, ``--objective flow``), uniform times, AdamW (lr 1e-4, no weight decay), global
batch 256, EMA 0.9999.

    python recipes/sit_imagenet256.py                          # built-in demo: digits on CPU
    torchrun --nproc-per-node 8 recipes/sit_imagenet256.py --data /data/imagenet/train

Sampling: ``recipes/sample.py`` reads the objective from the run, and its defaults for a
flow run are SiT's reported evaluation: the SDE with Euler-Maruyama, 250 steps, last step
Mean of length 0.04 (add ``--cfg-scale 1.5 --guided-channels 3`` for SiT's guided numbers);
``--sampler dopri5 --atol 1e-6 --rtol 1e-3`` is the ODE alternative.

Rerunning a command with the same ``--out`` resumes from its newest checkpoint.
"""

from mdtblocks.training.recipe import DEMO, TrainRecipe

RECIPE = TrainRecipe(
    script="recipes/sit_imagenet256.py",
    family="SiT",
    paper=dict(
        out="runs/sit_imagenet256", model="SiT-XL/2", objective="flow", flow_path="Linear", flow_prediction="velocity",
        lr=1e-4, weight_decay=0.0, global_batch_size=256, ema_decay=0.9999, steps=7_000_000,
    ),
    builtin={**DEMO, "model": "SiT-S/4"},
    real_run="torchrun --nproc-per-node 8 recipes/sit_imagenet256.py --data /path/to/imagenet/train",
    description=__doc__,
)
main = RECIPE.main

if __name__ == "__main__":
    main()
