"""One run per output folder: ``OUT/.lock`` (mdtblocks.folderlock) refuses a second training, sampling or
extraction at once, names the holder, and frees itself when the holder is killed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_utils import RECIPES, ROOT, TINY, load_recipe, save_tiny_vae

from mdtblocks.folderlock import LOCK_NAME, FolderInUse, FolderLock
from mdtblocks.training import latest_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fcntl locks")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
# The holder loads folderlock.py alone (it imports nothing of the package), so it starts in a blink, not after torch.
HOLD = (
    "import importlib.util, sys, time; spec = importlib.util.spec_from_file_location('folderlock', sys.argv[2]); "
    "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m.FolderLock(sys.argv[1]).acquire(); "
    "print('held', flush=True); time.sleep(600)"
)


def start_holder(folder: Path) -> subprocess.Popen:
    """Another process that takes ``folder``'s lock and keeps it."""
    module = ROOT / "mdtblocks" / "folderlock.py"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(module)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    with FolderLock(tmp_path / "out") as lock:
        assert lock.held
        record = json.loads((tmp_path / "out" / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(FolderInUse, match=rf"in use by another run \(pid {os.getpid()} on host ") as err:
            FolderLock(tmp_path / "out").acquire()
        assert err.value.holder["pid"] == os.getpid()
        assert json.loads((tmp_path / "out" / LOCK_NAME).read_text()) == record  # a refusal leaves the record alone
    assert not lock.held
    FolderLock(tmp_path / "out").acquire().release()  # free again


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = start_holder(tmp_path)
    with pytest.raises(FolderInUse, match=f"pid {holder.pid} on host {socket.gethostname()}"):
        FolderLock(tmp_path).acquire()
    holder.kill()  # SIGKILL: the process cannot clean anything up
    holder.wait()
    FolderLock(tmp_path).acquire().release()


@pytest.mark.parametrize(("script", "args"), [
    ("mdtv2_imagenet256", TINY),
    ("sample", ["--ckpt", "CKPT", "--device", "cpu"]),
    ("extract_latents", ["--vae", "VAE", "--device", "cpu"]),
])
def test_each_recipe_refuses_a_folder_in_use(tmp_path: Path, capsys, script: str, args: list[str]) -> None:
    """The other process holds --out: the recipe exits 2 with one line naming the folder, pid and host, writing nothing."""
    if script == "sample":
        from mdtblocks import MaskedDiffusionTransformer

        ckpt = tmp_path / "ckpt"
        MaskedDiffusionTransformer.from_preset("MDTv2-S/8", input_size=8, depth=2, hidden_size=32, num_heads=2,
                                               decode_layer=1, in_channels=1, num_classes=2).save_pretrained(ckpt)
        shutil.copy(ckpt / "model.safetensors", ckpt / "ema.safetensors")
        args = [str(ckpt) if a == "CKPT" else a for a in args]
    if script == "extract_latents":
        vae = save_tiny_vae(tmp_path / "vae")
        args = [str(vae) if a == "VAE" else a for a in args]
    out = tmp_path / "out"
    holder = start_holder(out)
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exit_:
            load_recipe(script).main([*args, "--out", str(out)])
    finally:
        holder.kill()
        holder.wait()
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: '{out}' is in use by another run (pid {holder.pid} on host {socket.gethostname()}")
    assert set(os.listdir(out)) == {LOCK_NAME}  # nothing of the refused run was written


def test_second_training_is_refused_and_a_killed_one_resumes(tmp_path: Path, capsys) -> None:
    """Two real trainings on one --out: the second exits 2 at once; after kill -9 of the first, the same command resumes."""
    out = tmp_path / "run"
    flags = [*TINY, "--ckpt-every", "2", "--num-samples", "0", "--out", str(out)]
    first = subprocess.Popen([sys.executable, str(RECIPES / "mdtv2_imagenet256.py"), *flags, "--steps", "2000"],
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while latest_checkpoint(out) is None:
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(SystemExit) as second:  # this test's process is the second run
            load_recipe("mdtv2_imagenet256").main([*flags, "--steps", "2000"])
        assert second.value.code == 2
        assert f"is in use by another run (pid {first.pid} on host " in capsys.readouterr().err
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stderr.close()
    reached = int(latest_checkpoint(out).name)
    result_steps = reached + 2
    load_recipe("mdtv2_imagenet256").main([*flags, "--steps", str(result_steps)])
    assert int(latest_checkpoint(out).name) == result_steps


@pytest.mark.slow
@pytest.mark.skipif(not (Path(sys.executable).parent / "torchrun").exists() and shutil.which("torchrun") is None,
                    reason="torchrun not installed")
def test_a_second_torchrun_job_stops_on_every_rank_with_one_line(tmp_path: Path) -> None:
    """Rank 0 of the second job finds the folder held and tells the other rank; the job prints the line once."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "out"
    holder = start_holder(out)
    try:
        proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(RECIPES / "extract_latents.py"),
                               "--vae", str(save_tiny_vae(tmp_path / "vae")), "--device", "cpu", "--out", str(out)],
                              env=ENV, capture_output=True, text=True, timeout=180)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    assert proc.stderr.count("is in use by another run") == 1, proc.stderr[-3000:]
    assert f"(pid {holder.pid} on host " in proc.stderr
    assert "exitcode  : 2" in proc.stderr or "exitcode: 2" in proc.stderr.replace(" ", ""), proc.stderr[-3000:]
    assert set(os.listdir(out)) == {LOCK_NAME}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_does_not_keep_the_lock(tmp_path: Path) -> None:
    """A DataLoader worker forked from the holder must not hold the folder after the holder is gone."""
    lock = FolderLock(tmp_path).acquire()
    read, write = os.pipe()
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child (its at-fork hooks have run): its copy of the lock is dropped; it lives until told to exit
        os.close(write)
        os.write(ready_write, b"r")
        os.read(read, 1)
        os._exit(0 if not lock.held else 1)
    os.close(read)
    os.close(ready_write)
    try:
        assert os.read(ready_read, 1) == b"r"
        lock.release()  # the holder lets go while its child still runs
        FolderLock(tmp_path).acquire().release()
    finally:
        os.write(write, b"x")
        os.close(write)
        os.close(ready_read)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
