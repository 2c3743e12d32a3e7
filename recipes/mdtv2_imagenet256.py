"""Train MDTv2 on ImageNet 256x256 as the paper does (arXiv 2303.14389v2, official ``run_ddp_master.sh``).

Paper setup: MDTv2-XL/2 on SD-VAE latents (32x32x4), Adan (betas 0.98, 0.92, 0.99, no
weight decay), global-norm clip 1.0, constant lr 3e-4 (5e-4 for S), global batch 256
(XL: 8 per GPU on 4 nodes of 8 GPUs, ``run_ddp_master.sh``; S: 32 per GPU on 8 GPUs), EMA 0.9999, mask
ratio drawn from [0.3, 0.5), min-SNR-5 loss weighting, learned sigma, 1000 linear steps.

    python recipes/mdtv2_imagenet256.py                          # built-in demo: digits on CPU, ~5 min
    torchrun --nproc-per-node 8 recipes/mdtv2_imagenet256.py --data /data/imagenet/train --model MDTv2-S/2
    torchrun --nnodes 8 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        recipes/mdtv2_imagenet256.py --latents latents/in256 --precision bf16 --fsdp

Rerunning a command with the same ``--out`` resumes from its newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch

from mdtblocks import MaskedDiffusionObjective, MaskedDiffusionTransformer, create_diffusion
from mdtblocks.training import Adan, setup_distributed, train
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

log = logging.getLogger("mdtv2")

# Official per-size settings: (lr, global batch). B and L follow XL.
OFFICIAL = {"S": (5e-4, 256), "XL": (3e-4, 256)}


@dataclass(frozen=True)
class MDTv2Config(RecipeConfig):
    """MDTv2 on ImageNet 256: every field is a ``--flag`` (``python recipes/mdtv2_imagenet256.py --help``)."""

    out: str = flag("runs/mdtv2_imagenet256", "run folder; rerunning with the same --out resumes", metavar="DIR")
    model: str = flag("MDTv2-XL/2", "MDTv2 preset", choices=presets_of("MDTv2"))
    lr: float | None = flag(None, "constant learning rate; none: 5e-4 for S models, 3e-4 otherwise")
    global_batch_size: int | None = flag(None, "samples per step over all processes (official: 256 for every size)")
    adan_betas: tuple[float, ...] = flag((0.98, 0.92, 0.99), "Adan betas")
    grad_clip: float | None = flag(1.0, "global gradient-norm clip")
    steps: int = flag(2_000_000, "optimizer steps")
    decode_layer: int | None = flag(None, "override the preset's decoder blocks")
    mask_ratio: float | None = flag(None, "override the lower end of the mask ratio (preset: 0.3)")
    mask_ratio_range: float | None = flag(None, "override the width of the mask ratio interval (preset: 0.2)")
    snr_gamma: float = flag(5.0, "min-SNR-gamma loss weighting")


# The built-in demo: digits in pixel space, a CPU-sized MDTv2, about 5 minutes on 2 cores.
BUILTIN = MDTv2Config(
    out="runs/mdtv2_imagenet256", model="MDTv2-S/4", depth=6, hidden_size=128, num_heads=4, decode_layer=2,
    image_size=16, vae=None, steps=1800, global_batch_size=32, lr=2e-3, ema_decay=0.995,
    ckpt_every=600, log_every=50, device="cpu", num_workers=0, num_samples=40,
)


def resolve(cfg: MDTv2Config) -> MDTv2Config:
    """Fill the size-dependent defaults (lr, global batch) from the official settings."""
    size = cfg.model.split("-")[1].split("/")[0]
    lr, batch = OFFICIAL.get(size, OFFICIAL["XL"])
    return dataclasses.replace(
        cfg,
        lr=cfg.lr if cfg.lr is not None else lr,
        global_batch_size=cfg.global_batch_size if cfg.global_batch_size is not None else batch,
    )


def main(argv: list[str] | None = None) -> None:
    cfg, builtin = choose_config(MDTv2Config, BUILTIN, argv, description=__doc__)
    cfg = resolve(cfg)
    dist = setup_distributed(cfg.device)
    setup_logging(dist)
    if builtin:
        announce_builtin(
            "recipes/mdtv2_imagenet256.py",
            "torchrun --nnodes 4 --nproc-per-node 8 ... recipes/mdtv2_imagenet256.py --data /path/to/imagenet/train "
            "(MDTv2-XL/2 on 4 nodes of 8 GPUs; --model MDTv2-S/2 on 8)",
        )

    data = load_run_data(cfg)
    channels, side = data.latent_shape
    overrides = model_overrides(cfg, ["depth", "hidden_size", "num_heads", "decode_layer", "mask_ratio", "mask_ratio_range"])
    num_classes = cfg.num_classes or data.num_classes
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = MaskedDiffusionTransformer.from_preset(
        cfg.model, input_size=side, in_channels=channels, num_classes=num_classes, learn_sigma=True, **overrides
    )
    objective = MaskedDiffusionObjective(create_diffusion("", "linear", 1000, learn_sigma=True, snr_gamma=cfg.snr_gamma))
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
        make_optimizer=lambda params: Adan(params, lr=cfg.lr, betas=cfg.adan_betas, weight_decay=cfg.weight_decay),
        out=cfg.out,
        dist=dist,
        sample_diffusion=create_diffusion(f"ddim{cfg.sample_steps}"),
    )
    log.info("done: checkpoints in %s/checkpoints, sample grids in %s/samples", cfg.out, cfg.out)
    dist.close()


if __name__ == "__main__":
    main()
