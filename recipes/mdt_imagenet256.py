"""Train MDT v1 on ImageNet 256x256 as the ICCV 2023 paper does (Gao et al., official ``run.sh`` of the first release).

Paper setup: MDT-XL/2 on SD-VAE latents, AdamW (lr 3e-4 as the official mdtv1 ``image_train.py``, no weight decay, no clipping),
global batch 256 (32 per GPU on 8 GPUs), EMA 0.9999, fixed mask ratio 0.3,
``decode_layer`` 2, learned sigma, 1000 linear steps, no loss weighting.

    python recipes/mdt_imagenet256.py                          # built-in demo: digits on CPU
    torchrun --nproc-per-node 8 recipes/mdt_imagenet256.py --data /data/imagenet/train

Rerunning a command with the same ``--out`` resumes from its newest checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from mdtblocks import MaskedDiffusionObjective, MaskedDiffusionTransformer, create_diffusion
from mdtblocks.training import setup_distributed, train
from mdtblocks.training.recipe import (
    RecipeConfig,
    announce_builtin,
    choose_config,
    flag,
    load_run_data,
    model_overrides,
    presets_of,
    setup_logging,
    train_config,
    write_run_config,
)

log = logging.getLogger("mdt")


@dataclass(frozen=True)
class MDTConfig(RecipeConfig):
    """MDT v1 on ImageNet 256: every field is a ``--flag`` (``python recipes/mdt_imagenet256.py --help``)."""

    out: str = flag("runs/mdt_imagenet256", "run folder; rerunning with the same --out resumes", metavar="DIR")
    model: str = flag("MDT-XL/2", "MDT preset", choices=presets_of("MDT"))
    lr: float = flag(3e-4, "constant AdamW learning rate")
    global_batch_size: int = flag(256, "samples per step over all processes")
    steps: int = flag(2_000_000, "optimizer steps")
    decode_layer: int | None = flag(None, "override the preset's decoder blocks (preset: 2)")
    mask_ratio: float | None = flag(None, "override the mask ratio (preset: 0.3)")


# The built-in demo: digits in pixel space, a CPU-sized MDT, about 5 minutes on 2 cores.
BUILTIN = MDTConfig(
    out="runs/mdt_imagenet256", model="MDT-S/4", depth=6, hidden_size=128, num_heads=4,
    image_size=16, vae=None, steps=1800, global_batch_size=32, lr=2e-3, ema_decay=0.995,
    ckpt_every=600, log_every=50, device="cpu", num_workers=0, num_samples=40,
)


def main(argv: list[str] | None = None) -> None:
    cfg, builtin = choose_config(MDTConfig, BUILTIN, argv, description=__doc__)
    dist = setup_distributed(cfg.device)
    setup_logging(dist)
    if builtin:
        announce_builtin(
            "recipes/mdt_imagenet256.py",
            "torchrun --nproc-per-node 8 recipes/mdt_imagenet256.py --data /path/to/imagenet/train",
        )

    data = load_run_data(cfg)
    channels, side = data.latent_shape
    overrides = model_overrides(cfg, ["depth", "hidden_size", "num_heads", "decode_layer", "mask_ratio"])
    num_classes = cfg.num_classes or data.num_classes
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = MaskedDiffusionTransformer.from_preset(
        cfg.model, input_size=side, in_channels=channels, num_classes=num_classes, learn_sigma=True, **overrides
    )
    objective = MaskedDiffusionObjective(create_diffusion("", "linear", 1000, learn_sigma=True))
    write_run_config(
        cfg.out, cfg, dist, vae=data.vae, image_size=data.image_size, num_classes=num_classes,
        model_preset=cfg.model, model_overrides=overrides, model_config=model.config.to_dict(),
    )
    train(
        train_config(cfg),
        model=model,
        objective=objective,
        dataset=data.dataset,
        autoencoder=data.autoencoder,
        make_optimizer=lambda params: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
        out=cfg.out,
        dist=dist,
        sample_diffusion=create_diffusion(f"ddim{cfg.sample_steps}"),
    )
    log.info("done: checkpoints in %s/checkpoints, sample grids in %s/samples", cfg.out, cfg.out)
    dist.close()


if __name__ == "__main__":
    main()
