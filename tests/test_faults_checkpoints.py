"""Fault suite, checkpoints: a corrupt complete-looking checkpoint is reported and the previous one used; a full
disk leaves the previous checkpoint intact and names the folder; --keep-checkpoints prunes only after a new one."""

from __future__ import annotations

import errno
import json
import shutil
import struct
from pathlib import Path

import pytest
from training_utils import max_abs_diff, weights
from training_utils import run_tiny as run

from mdtblocks.training import checkpoint as checkpoint_module
from mdtblocks.training import latest_checkpoint
from mdtblocks.training.checkpoint import CheckpointError, read_checkpoint


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of 6 steps: checkpoints 3 and 6."""
    out = tmp_path_factory.mktemp("straight")
    run(out, 6)
    return out


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def bad_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", 10**12)  # a header longer than the file
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "truncated model": ("model.safetensors", truncate),
    "bad safetensors header": ("ema.safetensors", bad_header),
    "missing optimizer": ("optimizer.pt", Path.unlink),
    "unreadable state.json": ("state.json", lambda p: p.write_text("{not json")),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_checkpoint_is_reported_and_the_previous_one_used(straight: Path, tmp_path: Path, kind: str, capsys) -> None:
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    (out / "metrics.jsonl").unlink()
    name, corrupt = CORRUPTIONS[kind]
    bad = out / "checkpoints" / "0000006"
    corrupt(bad / name)
    with pytest.raises(CheckpointError, match=str(bad)):
        read_checkpoint(bad)
    run(out, 6)  # resumes from step 3 and rewrites step 6
    err = capsys.readouterr().err
    assert str(bad) in err and "resuming from the previous checkpoint instead" in err
    assert "resumed from" in err and "0000003 (step 3)" in err
    for weights_file in ("model.safetensors", "ema.safetensors"):
        assert max_abs_diff(weights(straight / "checkpoints/0000006", weights_file), weights(bad, weights_file)) == 0.0


def test_full_disk_keeps_the_previous_checkpoint_and_names_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    run(tmp_path, 3)
    previous = tmp_path / "checkpoints" / "0000003"
    before = {f.name: f.read_bytes() for f in previous.iterdir()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", full)
    with pytest.raises(SystemExit) as stop:
        run(tmp_path, 6)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert f"error: could not write checkpoint {tmp_path / 'checkpoints' / '0000006'}" in err
    assert "No space left on device" in err and f"is {tmp_path / 'checkpoints'} full" in err
    assert f"The previous checkpoint {previous} is intact" in err
    assert "Traceback" not in err
    assert latest_checkpoint(tmp_path) == previous
    assert {f.name: f.read_bytes() for f in previous.iterdir()} == before
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_keep_checkpoints_prunes_old_ones(tmp_path: Path) -> None:
    run(tmp_path, 9, "--keep-checkpoints", "2")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["0000006", "0000009"]
    assert json.loads((tmp_path / "checkpoints/0000009/state.json").read_text())["step"] == 9


def test_keep_checkpoints_prunes_only_after_the_new_one_is_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(tmp_path, 3, "--keep-checkpoints", "1")
    real = checkpoint_module.write_json

    def fail_on_state(path, obj):
        if Path(path).name == "state.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, obj)

    monkeypatch.setattr(checkpoint_module, "write_json", fail_on_state)
    with pytest.raises(SystemExit):
        run(tmp_path, 6, "--keep-checkpoints", "1")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["0000003"]
