"""The official MDTv2 model (a sail-sg/MDT checkout, branch main) for side-by-side benchmarks.

Nothing of the official code is part of mdtblocks: the benchmark imports it from the
checkout the user names. Its ``models.py`` imports ``timm``, whose import pulls in
``torchvision``; where torchvision cannot be installed beside this torch (as on the CPU
machines this project is tested on), empty stand-in modules let the import succeed, since
the model uses no torchvision code.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

from torch import nn

from mdtblocks.models import PRESETS

__all__ = ["load_official_mdtv2"]


class _Anything(type):
    """A class whose every attribute is another such class (enough for import-time uses)."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(name, (), {})


class _StandIn(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(name, (), {})


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] == "torchvision":
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandIn(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module) -> None:
        pass


def _import_models(checkout: Path) -> types.ModuleType:
    if importlib.util.find_spec("torchvision") is None:
        sys.meta_path.insert(0, _StandInFinder())
    path = checkout / "masked_diffusion" / "models.py"
    if not path.is_file():
        raise FileNotFoundError(f"--official {checkout}: no masked_diffusion/models.py (expected a sail-sg/MDT checkout, branch main)")
    spec = importlib.util.spec_from_file_location("official_mdt_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_official_mdtv2(checkout: str | Path, preset: str, input_size: int, num_classes: int = 1000) -> nn.Module:
    """The official ``MDTv2_<size>_<patch>`` with the preset's decoder depth and mask ratio 0.3."""
    if not preset.startswith("MDTv2-"):
        raise ValueError(f"--official compares MDTv2 presets only, got {preset!r}")
    size, patch = preset.split("-")[1].split("/")
    fields = PRESETS[preset][1]
    models = _import_models(Path(checkout))
    ctor = getattr(models, f"MDTv2_{size}_{patch}")
    return ctor(input_size=input_size, num_classes=num_classes, mask_ratio=0.3, decode_layer=fields["decode_layer"])
