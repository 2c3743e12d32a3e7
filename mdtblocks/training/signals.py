"""Preemption: SIGTERM (a cluster's notice) or SIGINT (Ctrl-C) asks the loop to checkpoint and stop at a step boundary.

A signal handler may run between any two bytecodes, so it only records the signal; the
loop looks at :attr:`StopRequest.signum` after each step, writes a complete checkpoint
and returns. A second Ctrl-C gives Python's usual ``KeyboardInterrupt`` at once, for a
user who does not want to wait for the checkpoint.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

__all__ = ["StopRequest", "EXIT_CODES"]

EXIT_CODES = {signal.SIGTERM: 0, signal.SIGINT: 130}
"""Exit status after a checkpoint-and-stop: 0 for a preemption notice (the job did what it was asked), 130 for Ctrl-C."""


class StopRequest:
    """While entered, SIGTERM and SIGINT set :attr:`signum` instead of killing the process.

    Handlers can only be installed from the main thread; elsewhere (a notebook worker
    thread) the request is inert and signals act as usual.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.signum = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
