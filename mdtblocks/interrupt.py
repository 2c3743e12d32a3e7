"""Ctrl-C and SIGTERM for work that keeps its progress on disk: stop at once, say where, exit 130 (or 0).

Sampling and extraction write each finished unit atomically, so unlike training (which
finishes its step and checkpoints, :mod:`mdtblocks.training.signals`) they can stop
anywhere: the unit in progress is simply drawn again by the next run. Inside
:func:`exit_on_interrupt` the first SIGINT or SIGTERM ends the work with a
``report`` (one line, from one process of the job) instead of a
``KeyboardInterrupt`` traceback from every process; further signals (a terminal sends
Ctrl-C to every process of a ``torchrun`` job, and torchrun forwards its own) are
ignored while the process exits.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from .training.signals import EXIT_CODES

__all__ = ["Interrupted", "exit_on_interrupt"]


class Interrupted(BaseException):  # noqa: N818 (an event, not an error)
    """A SIGINT or SIGTERM arrived inside :func:`exit_on_interrupt`.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` on
    the way swallows it.

    Attributes:
        signum: the signal's number.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by signal {signum}")


@contextmanager
def exit_on_interrupt(report: Callable[[int], None]) -> Iterator[None]:
    """Turn the first SIGINT or SIGTERM inside the block into ``report(signum)`` and ``SystemExit``.

    The exit status is that of training (:data:`~mdtblocks.training.signals.EXIT_CODES`):
    130 for Ctrl-C, 0 for SIGTERM (a scheduler's notice, obeyed). Handlers can only be
    installed from the main thread; elsewhere signals act as usual.

    Args:
        report: called once with the signal's number before the exit; it prints the
            one line a person sees (and decides which process of a job prints it).

    Raises:
        SystemExit: after a signal, with the status above.
    """
    fired: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if fired:
            return  # a second signal (torchrun forwarding Ctrl-C) while the first one unwinds
        fired.append(signum)
        raise Interrupted(signum)

    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in EXIT_CODES:
            previous[signum] = signal.signal(signum, handle)
    try:
        yield
    except Interrupted as err:
        report(err.signum)
        raise SystemExit(EXIT_CODES.get(signal.Signals(err.signum), 1)) from None
    except KeyboardInterrupt:  # raised by a handler installed inside the block, or before ours
        report(int(signal.SIGINT))
        raise SystemExit(EXIT_CODES[signal.SIGINT]) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
