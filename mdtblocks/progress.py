"""A part-done output folder's progress record: the settings of the run writing it and its completed units.

Recipes that write for hours (latent extraction, sampling for FID) record, in one JSON
file rewritten atomically, the settings that decide the output and each unit (a shard, a
batch) once its files are complete. Rerunning the same command continues after the last
recorded unit; a rerun with other settings is refused, so one output never mixes two runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import read_json, write_json

__all__ = ["ProgressRecord", "settings_disagreement", "check_settings"]


def _name(key: str) -> str:
    """How a setting is shown: as its flag, except the process count, which is no flag."""
    return "the number of processes" if key == "world_size" else f"--{key.replace('_', '-')}"


def settings_disagreement(recorded: dict[str, Any], asked: dict[str, Any]) -> str | None:
    """The settings that differ, as ``--seed 1 (recorded: 0)``, or ``None`` when they agree."""
    keys = sorted(set(recorded) | set(asked))
    diff = [f"{_name(k)} {asked.get(k)} (recorded: {recorded.get(k)})" for k in keys if recorded.get(k) != asked.get(k)]
    return ", ".join(diff) or None


@dataclass
class ProgressRecord:
    """The progress file of one writer of a part-done folder.

    Attributes:
        path: the JSON file.
        settings: what decides the output (flags as JSON values).
        done: the completed units in order, each a JSON object.
    """

    path: Path
    settings: dict[str, Any]
    done: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | os.PathLike, settings: dict[str, Any], what: str) -> ProgressRecord:
        """Continue the record at ``path`` or start one (written at once, before any unit).

        Args:
            path: the progress file.
            settings: this run's settings; an existing record must hold the same ones.
            what: what the folder holds, for the message (``"latent extraction"``).

        Raises:
            ValueError: the folder was started with other settings (their differences named).
        """
        path = Path(path)
        if path.is_file():
            record = read_json(path)
            check_settings(path, settings, what, record)
            return cls(path, dict(settings), list(record.get("done", [])))
        new = cls(path, dict(settings))
        new.save()
        return new

    def save(self) -> None:
        """Rewrite the file atomically: a kill leaves the previous record or this one."""
        write_json(self.path, {"settings": self.settings, "done": self.done})

    def add(self, unit: dict[str, Any]) -> None:
        """Record a unit whose files are complete (write them, atomically, first)."""
        self.done.append(unit)
        self.save()

    def keep(self, count: int) -> None:
        """Forget every unit after the first ``count`` (those whose files turned out to be damaged)."""
        if count < len(self.done):
            self.done = self.done[:count]
            self.save()


def check_settings(path: Path, settings: dict[str, Any], what: str, record: dict[str, Any] | None = None) -> None:
    """Raise ``ValueError`` if the record at ``path`` was written by a run with other ``settings``."""
    record = read_json(path) if record is None else record
    diff = settings_disagreement(record.get("settings", {}), settings)
    if diff:
        raise ValueError(
            f"{str(path.parent)!r} holds a part-done {what} started with other flags: {diff}; rerun the "
            f"recorded command to continue it, or choose another --out (progress record: {path})"
        )
