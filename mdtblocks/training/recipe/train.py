"""The one training recipe: a :class:`TrainRecipe` row of data (what differs between runs) over one shared ``main``.

``recipes/mdtv2_imagenet256.py``, ``mdt_imagenet256.py`` and ``dit_imagenet256.py`` are
each a row: the model family, the paper's flags, the built-in demo's flags and the
per-size learning rates. The path of one training step from here: :meth:`TrainRecipe.main`
builds model, objective and data, :func:`~mdtblocks.training.train` runs the loop, which
calls :class:`~mdtblocks.diffusion.MaskedDiffusionObjective` on each micro batch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ...diffusion import MaskedDiffusionObjective, create_diffusion
from ...models import PRESETS, DiT, MaskedDiffusionTransformer
from ..adan import Adan
from ..distributed import setup_distributed
from ..loop import train
from .cli import RecipeConfig, build_parser, choose_config, presets_of
from .data import load_run_data
from .run import announce_builtin, model_overrides, setup_logging, train_config, write_run_config

__all__ = ["TrainRecipe", "MODEL_OVERRIDES", "DEMO"]

log = logging.getLogger("mdtblocks.recipe")

MODEL_OVERRIDES = ("depth", "hidden_size", "num_heads", "decode_layer", "mask_ratio", "mask_ratio_range")
"""Recipe flags that override a preset's config field (each only where the preset has that field)."""

DEMO: dict[str, Any] = dict(
    depth=6, hidden_size=128, num_heads=4, image_size=16, vae=None, steps=1800, global_batch_size=32, lr=2e-3,
    ema_decay=0.995, ckpt_every=600, log_every=50, device="cpu", num_workers=0, num_samples=40,
)
"""The built-in demo's flags shared by the recipes: digits in pixel space, a CPU-sized model, ~5 minutes on 2 cores."""

_MODEL_CLASSES = {cls.__name__: cls for cls in (MaskedDiffusionTransformer, DiT)}


@dataclass(frozen=True)
class TrainRecipe:
    """One training recipe as data.

    Attributes:
        script: the recipe's path, for messages (``"recipes/mdtv2_imagenet256.py"``).
        family: the model family whose presets ``--model`` takes (``"MDTv2"``, ``"MDT"``, ``"DiT"``).
        paper: flags of the real run (the paper's setup), over the :class:`RecipeConfig` defaults.
        builtin: flags of the built-in demo (digits on a CPU), over ``paper``.
        real_run: the command the demo suggests for the real run.
        lr_by_size: learning rate by preset size letter, used when ``lr`` is ``None``.
        description: the ``--help`` text (the script's docstring).
    """

    script: str
    family: str
    paper: Mapping[str, Any]
    builtin: Mapping[str, Any]
    real_run: str
    lr_by_size: Mapping[str, float] = field(default_factory=dict)
    description: str = ""

    @property
    def defaults(self) -> RecipeConfig:
        """The config of the real run when no flag is given."""
        return dataclasses.replace(RecipeConfig(), **self.paper)

    def configure(self, argv: Sequence[str] | None = None) -> tuple[RecipeConfig, bool]:
        """Parse the command line: ``(config, is_builtin)`` with the size-dependent learning rate filled in."""
        defaults = self.defaults
        builtin = dataclasses.replace(defaults, **self.builtin)
        cfg, is_builtin = choose_config(RecipeConfig, builtin, argv, self.description, defaults=defaults)
        if cfg.model not in presets_of(self.family):
            build_parser(RecipeConfig, self.description, defaults).error(
                f"--model {cfg.model!r} is not a {self.family} preset; choose from {presets_of(self.family)}"
            )
        if cfg.lr is None:
            size = cfg.model.split("-")[1].split("/")[0]
            if size not in self.lr_by_size:
                raise ValueError(f"--lr none: {self.script} has no learning rate for size {size!r}; give --lr")
            cfg = dataclasses.replace(cfg, lr=self.lr_by_size[size])
        return cfg, is_builtin

    def main(self, argv: Sequence[str] | None = None) -> None:
        """Train: parse the flags, build data, model, objective and optimizer, run :func:`~mdtblocks.training.train`."""
        cfg, builtin = self.configure(argv)
        dist = setup_distributed(cfg.device)
        setup_logging(dist)
        if builtin:
            announce_builtin(self.script, self.real_run)

        data = load_run_data(cfg)
        channels, side = data.latent_shape
        cls_name, preset_fields = PRESETS[cfg.model]
        unused = [n for n in MODEL_OVERRIDES if getattr(cfg, n) is not None and n not in preset_fields]
        if unused:
            flags = ", ".join("--" + n.replace("_", "-") for n in unused)
            raise ValueError(f"{flags} does not apply to {cfg.model} (a {cls_name} has no such field)")
        overrides = model_overrides(cfg, [n for n in MODEL_OVERRIDES if n in preset_fields])
        num_classes = cfg.num_classes or data.num_classes
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        model = _MODEL_CLASSES[cls_name].from_preset(
            cfg.model, input_size=side, in_channels=channels, num_classes=num_classes, learn_sigma=True, **overrides
        )
        diffusion = create_diffusion("", "linear", 1000, learn_sigma=True, snr_gamma=cfg.snr_gamma)
        write_run_config(
            cfg.out, cfg, dist, vae=data.vae, image_size=data.image_size, num_classes=num_classes,
            model_preset=cfg.model, model_overrides=overrides, model_config=model.config.to_dict(),
        )
        train(
            train_config(cfg),
            model=model,
            objective=MaskedDiffusionObjective(diffusion),  # without a mask sampler (DiT): the plain loss
            dataset=data.dataset,
            autoencoder=data.autoencoder,
            make_optimizer=lambda params: _optimizer(cfg, params),
            out=cfg.out,
            dist=dist,
            sample_diffusion=create_diffusion(f"ddim{cfg.sample_steps}"),
        )
        log.info("done: checkpoints in %s/checkpoints, sample grids in %s/samples", cfg.out, cfg.out)
        dist.close()


def _optimizer(cfg: RecipeConfig, params: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "adan":
        return Adan(params, lr=cfg.lr, betas=cfg.adan_betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
