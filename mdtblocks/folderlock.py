"""One run per output folder: an OS lock on ``OUT/.lock`` that names its holder and dies with it.

Two trainings (or samplings, or extractions) writing one ``--out`` at the same time
overwrite each other's checkpoints and progress records. A run therefore holds an
exclusive ``fcntl.flock`` on ``OUT/.lock`` while it works, and writes its pid, host
and start time into that file. The operating system releases the lock when the holder
exits in any way, ``kill -9`` included, so there is never a stale lock to remove by hand:
the same command resumes at once. A second run is refused without waiting.

Under ``torchrun`` one process per job holds it: rank 0 tries, and tells the other
ranks (one broadcast) whether it got the folder, so a second job stops on every rank
with one line from its rank 0 (:func:`hold_output_folder`). Processes forked from the
holder (DataLoader workers) drop their copy of the lock's descriptor, so a killed holder
frees the folder even while its workers are still shutting down.

On a network file system the lock is as good as the file system's own locking (Linux
NFS clients lock across hosts); where ``fcntl`` does not exist (Windows) no lock is
taken.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl as _fcntl
except ImportError:  # Windows: no flock
    _fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "FolderInUse", "FolderLock", "hold_output_folder", "EXIT_FOLDER_IN_USE"]

LOCK_NAME = ".lock"
"""The lock file's name inside the output folder."""

EXIT_FOLDER_IN_USE = 2
"""Exit status of a recipe refused because its ``--out`` is in use (a usage error: choose another folder)."""

_HELD: weakref.WeakSet[FolderLock] = weakref.WeakSet()


def _close_in_child() -> None:
    # A forked child (a DataLoader worker) shares the open file the lock lives on; closing its
    # descriptor keeps the lock tied to the holder alone (the holder's own descriptor still holds it).
    for lock in list(_HELD):
        fd, lock._fd = lock._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock; the message names the folder and the holder.

    Attributes:
        folder: the output folder.
        holder: what the holder recorded (``pid``, ``host``, ``started``; empty if it had not written yet).
    """

    def __init__(self, folder: Path, holder: dict[str, Any]) -> None:
        self.folder = folder
        self.holder = holder
        who = (
            f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {holder.get('started', '?')}"
            if holder else "a process that has not recorded itself yet"
        )
        super().__init__(
            f"{str(folder)!r} is in use by another run ({who}); wait for it to end, or choose another --out "
            f"(the lock {folder / LOCK_NAME} frees itself when that process exits)"
        )


class FolderLock:
    """An exclusive, non-blocking OS lock on ``folder/.lock``; a context manager.

    Args:
        folder: the output folder (created if missing).

    Example::

        import tempfile
        from mdtblocks.folderlock import FolderInUse, FolderLock

        folder = tempfile.mkdtemp()
        with FolderLock(folder):
            try:
                FolderLock(folder).acquire()
            except FolderInUse as err:
                print(err.holder["pid"])  # this process's pid
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created = False

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock at once or raise :class:`FolderInUse` naming the holder; then record this process in the file."""
        if self._fd is not None:
            return self
        created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # no O_TRUNC: the holder's record must survive a refusal
        if _fcntl is not None:
            try:
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise FolderInUse(self.folder, holder) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "",
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        self._created = created
        _HELD.add(self)
        return self

    def release(self) -> None:
        """Give the lock back (the OS does it too when the process exits); safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _HELD.discard(self)
        try:
            os.ftruncate(fd, 0)  # an empty file: nobody holds it
            if self._created and os.listdir(self.folder) == [LOCK_NAME]:
                # A run that made the folder and wrote nothing (refused on its input) leaves no trace;
                # removed while still held, so no other run holds a lock on the removed file.
                self.path.unlink()
                self.folder.rmdir()
        except OSError:
            pass
        os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any]:
    """The holder's record in the lock file (``{}`` if empty or unreadable)."""
    try:
        text = os.pread(fd, 4096, 0).decode()
        record = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


@contextmanager
def hold_output_folder(folder: str | os.PathLike, dist: Any) -> Iterator[None]:
    """Hold ``folder``'s lock for a recipe run: one holder per job, every rank refused together.

    Rank 0 takes the lock and broadcasts the outcome, so the ranks of one job never
    compete with each other for their own folder, and all ranks of a second job stop.
    On refusal rank 0 prints ``error: ...`` (one line, naming the folder and the holder's
    pid and host) and every rank exits with :data:`EXIT_FOLDER_IN_USE`.

    Args:
        folder: the run's output folder.
        dist: the :class:`~mdtblocks.training.Distributed` of this process (after its process group is set up).

    Raises:
        SystemExit: the folder is in use by another run (on every rank).
    """
    lock = FolderLock(folder)
    problem: str | None = None
    if dist.is_main:
        try:
            lock.acquire()
        except FolderInUse as err:
            problem = str(err)
    if dist.enabled:
        import torch.distributed as torch_dist

        box = [problem]
        torch_dist.broadcast_object_list(box, src=0)
        problem = box[0]
    if problem is not None:
        if dist.is_main:
            print(f"error: {problem}", file=sys.stderr)
        dist.close()
        raise SystemExit(EXIT_FOLDER_IN_USE)
    try:
        yield
    finally:
        lock.release()
