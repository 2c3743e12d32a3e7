"""The preset table: names, official defaults and parameter counts."""

from __future__ import annotations

import pytest
import torch

from mdtblocks import PRESETS, DiT, MaskDiT, MaskedDiffusionTransformer, SiT

# Official parameter counts at 32x32 latents, 4 channels, 1000 classes.
OFFICIAL_COUNTS = {
    "DiT-XL/2": 675_129_632,
    "SiT-XL/2": 675_129_632,  # DiT's network with learn_sigma (SiT's models.py)
    "MDT-XL/2": 699_778_144,
    "MDTv2-XL/2": 742_263_904,
    "MDTv2-S/2": 38_454_872,
    "MaskDiT-XL/2": 730_541_200,  # Anima-Lab/MaskDiT EDMPrecond(use_decoder=True, mae_loss_coef=0.1)
    "MaskDiT-S/2": 68_346_256,
}


def build(name: str, **kw):
    cls = {"DiT": DiT, "SiT": SiT, "MaskDiT": MaskDiT}.get(name.split("-")[0], MaskedDiffusionTransformer)
    with torch.device("meta"):
        return cls.from_preset(name, input_size=32, num_classes=1000, **kw)


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_parameter_count_equals_official(name):
    model = build(name)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_COUNTS[name]


def test_table_covers_every_family_size_and_patch():
    expected = {f"{f}-{s}/{p}" for f in ("MDT", "MDTv2", "DiT", "SiT", "MaskDiT") for s in ("S", "B", "L", "XL") for p in (2, 4, 8)}
    assert set(PRESETS) == expected


@pytest.mark.parametrize(("name", "decode"), [("MDTv2-S/2", 6), ("MDTv2-B/4", 6), ("MDTv2-L/2", 4), ("MDTv2-XL/8", 4), ("MDT-XL/2", 2)])
def test_official_decode_layer_defaults(name, decode):
    model = build(name)
    assert model.config.decode_layer == decode
    assert len(model.decoder) == decode
    assert len(model.encoder) == (model.config.depth - decode if name.startswith("MDT-") else 2 * ((model.config.depth - decode) // 2))


def test_mdtv2_masking_defaults():
    model = build("MDTv2-XL/2")
    assert model.mask_sampler.ratio == 0.3 and model.mask_sampler.ratio_range == 0.2
    assert build("MDT-XL/2").mask_sampler.ratio_range == 0.0


def test_overrides_and_unknown_names():
    model = build("MDT-S/2", decode_layer=3)
    assert model.config.decode_layer == 3
    with pytest.raises(ValueError, match="unknown preset"):
        build("MDT-XXL/2")
    with pytest.raises(ValueError, match="builds a DiT"):
        MaskedDiffusionTransformer.from_preset("DiT-S/2")
    with pytest.raises(ValueError, match="builds a SiT"):
        DiT.from_preset("SiT-S/2")
    with pytest.raises(ValueError, match="unknown MDTConfig fields"):
        build("MDT-S/2", widht=3)
