"""A learning-speed study's folder: its results file, resuming it, and merging another study folder into it.

A study folder (``recipes/study_learning_speed.py --out``) holds ``results.json`` (the
settings, and per arm and seed the evaluated records), ``runs/<arm>-seed<seed>/`` (the
checkpoints and segment timings of one run) and ``samples/<arm>-seed<seed>/`` (its
sample grids). Runs are independent: which arms and seeds a command asks for decides
only which runs it trains and summarises, so one folder can grow by an arm or a seed,
and folders that ran other seeds or arms with the same settings (on another machine, or
in a second process) can be merged into one.

Example::

    # two machines, one seed set each, then one summary over all three seeds (on one machine: --jobs)
    python recipes/study_learning_speed.py --out runs/a --seeds 0 1
    python recipes/study_learning_speed.py --out runs/b --seeds 2
    python recipes/study_learning_speed.py --out runs/a --seeds 0 1 2 --merge runs/b
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..folderlock import FolderLock
from ..io import read_json

__all__ = ["CLASSIFIER", "TARGETS", "RUN_SELECTION", "load_results", "merge_study", "take_runs", "run_folders"]

RUN_SELECTION = ("arms", "seeds")
"""Settings that choose which runs a command trains, not how a run trains: they may differ between commands on one folder."""

CLASSIFIER = "classifier"
"""The folder of the domain classifier that scores every run's samples."""

TARGETS = "targets"
"""The folder of the cached alignment targets (a frozen encoder's maps of the training digits), shared by every run."""

PER_ARM = ("params", "step_flops", "finetune_step_flops")
"""An arm's entries besides its seeds' records; they do not depend on the seed or the machine."""


def _settings(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k not in RUN_SELECTION}


def _check_settings(path: Path, theirs: dict[str, Any], ours: dict[str, Any], hint: str) -> None:
    old, new = _settings(theirs), _settings(ours)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        raise ValueError(f"{path} holds a study with other settings ({', '.join(changed)}); {hint}")


def load_results(path: str | Path, fields: dict[str, Any]) -> dict[str, Any]:
    """The study in ``path`` (``results.json``), or a new one with ``fields`` as its settings.

    The stored settings must equal ``fields``, except the arms and seeds (:data:`RUN_SELECTION`),
    which only choose the runs: their records stay in the file whether or not this command asks for them.

    Raises:
        ValueError: the file holds a study with other settings (naming them).
    """
    path = Path(path)
    if not path.is_file():
        return {"config": fields, "runs": {}}
    results = read_json(path)
    _check_settings(path, results.get("config", {}), fields, "use another --out or the same flags")
    results["config"] = fields
    return results


def run_folders(out: str | Path, name: str, seed: int | str) -> tuple[Path, Path]:
    """Run ``(name, seed)``'s checkpoint folder and sample-grid folder inside study folder ``out``."""
    return Path(out) / "runs" / f"{name}-seed{seed}", Path(out) / "samples" / f"{name}-seed{seed}"


def _replace_folder(source: Path, target: Path) -> None:
    """Copy ``source`` over ``target``: the copy is made beside it and renamed in, so ``target`` is never half-copied."""
    if not source.is_dir():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh, stale = target.with_name(target.name + ".merging"), target.with_name(target.name + ".replaced")
    for leftover in (fresh, stale):  # from a merge killed half-way
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(source, fresh)
    if target.exists():
        target.rename(stale)
    fresh.rename(target)
    shutil.rmtree(stale, ignore_errors=True)


def merge_study(out: str | Path, source: str | Path, results: dict[str, Any]) -> list[str]:
    """Take into study folder ``out`` (whose loaded ``results`` are updated) every run of ``source`` that ``out`` lacks.

    A run of ``source`` replaces ``out``'s when it has more evaluated steps; with as many or fewer,
    ``out``'s is kept. A taken run brings its records, its checkpoint folder (so it resumes here)
    and its sample grids. ``out`` without a domain classifier takes ``source``'s. ``source`` is
    locked while it is read, so a study still running there is refused; ``out``'s
    ``results.json`` is written by the caller.

    Args:
        out: the study folder merged into (held by the caller).
        source: another study folder with the same settings (arms and seeds may differ).
        results: ``out``'s loaded results (:func:`load_results`).

    Returns:
        The runs taken, as ``"<arm> seed <seed> (<n> evaluations)"``.

    Raises:
        ValueError: ``source`` is not a study folder, is ``out`` itself, holds other settings,
            scored with another classifier, or counts an arm's parameters or FLOPs differently.
        FolderInUse: a study is running in ``source``.
    """
    out, source = Path(out), Path(source)
    path = source / "results.json"
    if not path.is_file():
        raise ValueError(f"--merge {source}: no study there (expected {path})")
    if source.resolve() == out.resolve():
        raise ValueError(f"--merge {source}: that is the --out folder itself")
    with FolderLock(source):
        theirs = read_json(path)
        _check_settings(source, theirs.get("config", {}), results["config"], "only studies with the same flags merge")
        classifier = Path(CLASSIFIER, "classifier.safetensors")
        if not (out / classifier).is_file():  # the same scorer for every run: theirs, or ours trained from the same seed
            _replace_folder(source / CLASSIFIER, out / CLASSIFIER)
        elif (source / classifier).is_file() and (source / classifier).read_bytes() != (out / classifier).read_bytes():
            raise ValueError(f"--merge {source}: its samples were scored by another domain classifier ({source / classifier})")
        return take_runs(out, source, theirs, results, ties=False, what=f"--merge {source}")


def take_runs(
    out: str | Path, source: str | Path, theirs: dict[str, Any], results: dict[str, Any], ties: bool, what: str
) -> list[str]:
    """Take into study folder ``out`` (loaded ``results``, updated) the runs of ``theirs`` (``source``'s loaded
    results) that ``out`` has fewer evaluations of, or as many with ``ties``, with their checkpoint and grid folders.

    Raises:
        ValueError: an arm's parameter or FLOP counts differ (``what`` starts the message).
    """
    out, source = Path(out), Path(source)
    taken = []
    for name, run in sorted(theirs.get("runs", {}).items()):
        mine = results["runs"].setdefault(name, {"seeds": {}})
        for key in PER_ARM:
            if key in run and key in mine and run[key] != mine[key]:
                raise ValueError(
                    f"{what}: arm {name} has {key} {run[key]} there and {mine[key]} here; "
                    "the two folders were run by different versions"
                )
        for seed, records in sorted(run.get("seeds", {}).items()):
            ours = len(mine["seeds"].get(seed, []))
            if len(records) < ours or (len(records) == ours and not ties):
                continue
            for theirs_dir, mine_dir in zip(run_folders(source, name, seed), run_folders(out, name, seed)):
                _replace_folder(theirs_dir, mine_dir)
            mine["seeds"][seed] = records
            mine.update({k: run[k] for k in PER_ARM if k in run})
            taken.append(f"{name} seed {seed} ({len(records)} evaluations)")
        if not mine["seeds"] and not any(k in mine for k in PER_ARM):
            del results["runs"][name]
    return taken
