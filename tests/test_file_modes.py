"""Output files get the mode the umask gives (0644 under 022, 0600 under 077), not the 0600 of ``mkstemp``."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from training_utils import TINY, load_recipe

from mdtblocks.data import save_image_grid
from mdtblocks.io import atomic_write, current_umask, default_file_mode, write_json

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@pytest.fixture
def umask() -> Iterator:
    """Set the process umask for one test and restore it after."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def modes(folder: Path) -> dict[str, int]:
    """``{relative path: permission bits}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask, mask: int, expected: int) -> None:
    umask(mask)
    assert current_umask() == mask and default_file_mode() == expected
    write_json(tmp_path / "a.json", {"x": 1})
    atomic_write(tmp_path / "b.bin", lambda p: p.write_bytes(b"123"))
    save_image_grid(torch.zeros(2, 3, 4, 4), tmp_path / "grid.png")
    assert modes(tmp_path) == {"a.json": expected, "b.bin": expected, "grid.png": expected}
    assert current_umask() == mask  # reading the umask left it as it was


def test_a_training_run_writes_0644_under_umask_022(tmp_path: Path, umask) -> None:
    """Checkpoints, metrics, configs, sample grids and the pipeline folder of a real (tiny) run."""
    umask(0o022)
    out = tmp_path / "run"
    load_recipe("mdtv2_imagenet256").main([*TINY, "--steps", "2", "--ckpt-every", "2", "--out", str(out)])
    found = modes(out)
    assert any(p.startswith("checkpoints/0000002/") for p in found)
    assert {"config.json", "metrics.jsonl", "checkpoints/0000002/state.json", "checkpoints/0000002/config.json",
            "pipeline/model_index.json"} <= found.keys()
    wrong = {p: oct(m) for p, m in found.items() if m != 0o644 and p != ".lock"}
    assert not wrong, wrong


def test_umask_without_proc_is_read_and_restored(umask, monkeypatch) -> None:
    """Where ``/proc/self/status`` cannot be read (macOS), the umask is set and restored."""
    import mdtblocks.io as io

    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    umask(0o027)
    monkeypatch.setattr(io, "open", no_proc, raising=False)
    assert io.current_umask() == 0o027 and io.default_file_mode() == 0o640
    assert os.umask(0o027) == 0o027
