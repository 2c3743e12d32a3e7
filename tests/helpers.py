"""Small builders shared by the model tests."""

from __future__ import annotations

import torch

from mdtblocks import DiT, DiTConfig, MaskedDiffusionTransformer, MDTConfig


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.08) -> torch.nn.Module:
    """Draw every parameter from N(0, std^2) so no output is trivially zero (zero-init heads)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def tiny_mdt(v2: bool = True, seed: int = 0, **overrides) -> MaskedDiffusionTransformer:
    fields = dict(
        input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=5 if v2 else 4, num_heads=2,
        num_classes=5, decode_layer=1, long_skip=v2, dense_skip=v2, mask_ratio_range=0.2 if v2 else 0.0,
    )
    fields.update(overrides)
    return randomize(MaskedDiffusionTransformer(MDTConfig(**fields)), seed).eval()


def tiny_dit(seed: int = 0, **overrides) -> DiT:
    fields = dict(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=2, num_heads=2, num_classes=5)
    fields.update(overrides)
    return randomize(DiT(DiTConfig(**fields)), seed).eval()


def inputs(model, batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, cfg.num_classes + 1, (batch,), generator=g)
    return x, t, y
