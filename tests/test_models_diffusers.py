"""The models as diffusers ModelMixins: the loader's arguments, variants, dtypes, subfolders."""

from __future__ import annotations

import pytest
import torch
from diffusers import ModelMixin

from mdtblocks import DiT, MaskedDiffusionTransformer, load_pretrained
from tests.helpers import inputs, tiny_dit, tiny_mdt


@pytest.mark.parametrize("build", [tiny_dit, tiny_mdt], ids=["dit", "mdt"])
def test_models_are_model_mixins_with_a_typed_frozen_config(build):
    model = build()
    assert isinstance(model, ModelMixin)
    with pytest.raises(AttributeError):
        model.config.depth = 3  # frozen dataclass, not a diffusers FrozenDict
    assert model.device == torch.device("cpu") and model.dtype == torch.float32  # ModelMixin's properties


def test_variant_and_torch_dtype(tmp_path):
    model = tiny_mdt()
    model.save_pretrained(tmp_path, variant="fp16")
    assert (tmp_path / "model.fp16.safetensors").exists() and not (tmp_path / "model.safetensors").exists()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        MaskedDiffusionTransformer.from_pretrained(tmp_path)
    again = MaskedDiffusionTransformer.from_pretrained(tmp_path, variant="fp16", torch_dtype=torch.bfloat16)
    assert {p.dtype for p in again.parameters()} == {torch.bfloat16}
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value.to(torch.bfloat16), rtol=0, atol=0)


def test_subfolder_and_the_pipeline_loader_arguments(tmp_path):
    model = tiny_dit()
    model.save_pretrained(tmp_path / "transformer")
    # what diffusers' pipeline loader passes to a ModelMixin's from_pretrained
    loader_args = dict(torch_dtype=None, device_map=None, max_memory=None, offload_folder=None,
                       offload_state_dict=False, variant=None, use_safetensors=None, low_cpu_mem_usage=True,
                       use_flashpack=False, disable_mmap=False)
    again = DiT.from_pretrained(tmp_path, subfolder="transformer", **loader_args)
    x, t, y = inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(again(x, t, y), model(x, t, y), rtol=0, atol=0)
    assert isinstance(load_pretrained(tmp_path / "transformer"), DiT)


def test_unsupported_loader_and_saver_arguments_are_refused(tmp_path):
    model = tiny_dit()
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="device_map='auto'"):
        DiT.from_pretrained(tmp_path, device_map="auto")
    with pytest.raises(ValueError, match="safe_serialization must be True"):
        model.save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(ValueError, match="unknown DiTConfig fields \\['no_such_field'\\]"):
        DiT.from_pretrained(tmp_path, no_such_field=1)
