"""A study's runs trained side by side, one process each (``--jobs N``), in part folders merged back as they finish.

Every pending run ``(arm, seed)`` gets a part folder, ``OUT/parts/<arm>-seed<seed>``: a
study folder of its own holding the run's records so far, a copy of its checkpoints (so a
run stopped earlier continues where it stopped), the domain classifier and the cached
alignment targets (:func:`prepare_part`). A child process trains the run there with the
study's own flags, ``N`` at a time, each with ``threads`` threads (:func:`run_parts`).
A part whose process finished is taken back into ``OUT`` and removed (:func:`take_back`);
a part whose process was stopped stays, and the same command resumes it. A command that
trains in one process takes every leftover part back first, so no progress is lost
when ``--jobs`` changes between commands.

Runs are independent, so the records do not depend on how many run at once; only the
seconds do (the processes share the machine).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from ..folderlock import FolderLock
from ..io import read_json, write_json
from .study_folder import CLASSIFIER, PER_ARM, TARGETS, _check_settings, run_folders, take_runs

__all__ = [
    "PARTS", "LOG_NAME", "EVALUATION_LINE", "PartFailed", "part_folder", "leftover_parts", "prepare_part", "take_back",
    "run_parts",
]

PARTS = "parts"
"""The folder inside a study folder that holds the part folders of runs training in other processes."""

LOG_NAME = "study.log"
"""A part's log: its process's output (progress and evaluations)."""

log = logging.getLogger("study")

EVALUATION_LINE = re.compile(r"seed \d+, step \d+/\d+")
"""A line of a part's log passed on to this process's log: a run's evaluation."""


class PartFailed(RuntimeError):
    """A run's process exited with an error (not a stop): its part folder and log are kept."""


def part_folder(out: str | Path, name: str, seed: int | str) -> Path:
    """The part folder of run ``(name, seed)`` inside study folder ``out``."""
    return Path(out) / PARTS / f"{name}-seed{seed}"


def leftover_parts(out: str | Path) -> list[Path]:
    """The part folders in ``out`` (complete ones, with their ``results.json``), in name order."""
    folder = Path(out) / PARTS
    return sorted(p for p in folder.glob("*") if (p / "results.json").is_file()) if folder.is_dir() else []


def prepare_part(out: str | Path, name: str, seed: int, results: dict[str, Any]) -> Path:
    """The part folder of run ``(name, seed)``, made from ``out`` (loaded ``results``) unless it exists.

    An existing part is returned as it is: it holds the run's newest state. A new one is
    built beside its place and renamed in, so a killed command never leaves half a part.
    """
    out = Path(out)
    part = part_folder(out, name, seed)
    if (part / "results.json").is_file():
        return part
    fresh = part.with_name(part.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    for shared in (CLASSIFIER, TARGETS):
        if (out / shared).is_dir():
            shutil.copytree(out / shared, fresh / shared)
    for mine, theirs in zip(run_folders(out, name, seed), run_folders(fresh, name, seed)):
        if mine.is_dir():
            shutil.copytree(mine, theirs)
    run = results["runs"].get(name, {})
    write_json(fresh / "results.json", {
        "config": {**results["config"], "arms": [name], "seeds": [int(seed)]},
        "runs": {name: {**{k: run[k] for k in PER_ARM if k in run},
                        "seeds": {str(seed): run.get("seeds", {}).get(str(seed), [])}}},
    })
    shutil.rmtree(part, ignore_errors=True)  # a part without results.json: left by a killed rename
    fresh.rename(part)
    return part


def take_back(out: str | Path, part: str | Path, results: dict[str, Any]) -> list[str]:
    """Move the runs of ``part`` into study folder ``out`` and remove ``part``.

    A part's run replaces ``out``'s records, checkpoints and sample grids unless ``out``
    has more evaluations of it (taken in from elsewhere since). New cached alignment
    targets come along. ``out/results.json`` is written (from ``results``, updated in
    place) before ``part`` is removed, so a kill in between loses nothing.

    Returns:
        The runs taken, as ``"<arm> seed <seed> (<n> evaluations)"``.

    Raises:
        ValueError: ``part`` holds other settings.
        FolderInUse: a process still trains in ``part``.
    """
    out, part = Path(out), Path(part)
    with FolderLock(part):
        theirs = read_json(part / "results.json")
        _check_settings(part, theirs.get("config", {}), results["config"], "remove it or use the same flags")
        taken = take_runs(out, part, theirs, results, ties=True, what=f"part {part}")  # the part is the newer
        if (part / TARGETS).is_dir():
            (out / TARGETS).mkdir(exist_ok=True)
            for path in (part / TARGETS).iterdir():
                if not (out / TARGETS / path.name).exists():
                    shutil.copy2(path, out / TARGETS / f".{path.name}.tmp")
                    os.replace(out / TARGETS / f".{path.name}.tmp", out / TARGETS / path.name)
        write_json(out / "results.json", results)
    shutil.rmtree(part)
    try:
        part.parent.rmdir()  # the last part: no empty parts folder left behind
    except OSError:
        pass
    return taken


@dataclass
class _Child:
    key: tuple[str, int]
    part: Path
    process: subprocess.Popen[bytes]
    read: int = 0  # bytes of its log passed on so far

    def pass_on_evaluations(self) -> None:
        """Write the evaluation lines its log gained since the last call to this process's stderr."""
        try:
            with open(self.part / LOG_NAME, "rb") as f:
                f.seek(self.read)
                text = f.read()
        except OSError:
            return
        complete = text.rfind(b"\n") + 1
        self.read += complete
        for line in text[:complete].decode(errors="replace").splitlines():
            line = line.rsplit("\r", 1)[-1]  # a progress bar's updates end with the line after them
            if EVALUATION_LINE.search(line):
                print(line, file=sys.stderr, flush=True)


def run_parts(
    runs: Sequence[tuple[str, int]],
    command: Callable[[str, int, Path], list[str]],
    part_of: Callable[[str, int], Path],
    jobs: int,
    threads: int,
    finished: Callable[[str, int, Path], None],
) -> int | None:
    """Train ``runs`` in child processes, ``jobs`` at a time, in seed-major order.

    Each process writes to ``study.log`` in its part folder; its evaluation lines
    (:data:`EVALUATION_LINE`) are passed on to this process's stderr as they come.

    Args:
        runs: the ``(arm, seed)`` runs to train.
        command: the child's command line for a run and its part folder.
        part_of: the part folder of a run (made when its process starts).
        jobs: processes at once.
        threads: torch threads of each process (``OMP_NUM_THREADS``).
        finished: called in this process with each run whose process exited with status 0.

    Returns:
        ``None`` when every run finished, or the signal (SIGTERM, SIGINT) that stopped the
        study: it was passed on to the running processes as SIGTERM, which checkpoint and stop.

    Raises:
        PartFailed: a process exited with an error; the others were stopped first.
    """
    pending, running = list(runs), []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    stop: list[int] = []
    failed: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)
        for child in running:
            child.process.send_signal(signal.SIGTERM)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while running or (pending and not stop and not failed):
            while pending and len(running) < jobs and not stop and not failed:
                name, seed = pending.pop(0)
                part = part_of(name, seed)
                start = (part / LOG_NAME).stat().st_size if (part / LOG_NAME).is_file() else 0  # a resumed part's old log
                with open(part / LOG_NAME, "ab") as out_log:
                    process = subprocess.Popen(
                        command(name, seed, part), stdout=out_log, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, env=env,
                    )
                running.append(_Child((name, seed), part, process, start))
                log.info("%s seed %d: training in process %d, %d thread(s) (log: %s)",
                         name, seed, process.pid, threads, part / LOG_NAME)
            time.sleep(0.2)
            for child in running:
                child.pass_on_evaluations()
            for child in [c for c in running if c.process.poll() is not None]:
                child.pass_on_evaluations()
                running.remove(child)
                code = child.process.returncode
                if code == 0:
                    finished(*child.key, child.part)
                elif not stop and not failed:  # after a stop (ours or a failure's) a child's status is expected
                    failed.append(f"{child.key[0]} seed {child.key[1]} exited with status {code} (log: "
                                  f"{child.part / LOG_NAME}):\n{_tail(child.part / LOG_NAME)}")
                    for other in running:
                        other.process.send_signal(signal.SIGTERM)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
    if failed:
        raise PartFailed("\n".join(failed))
    return stop[0] if stop else None


def _tail(path: Path, lines: int = 8) -> str:
    text = path.read_text(errors="replace").replace("\r", "\n") if path.is_file() else ""
    return "\n".join("    " + line for line in [x for x in text.splitlines() if x.strip()][-lines:])
