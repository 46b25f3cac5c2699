"""A watchdog that enforces an episode's wall-clock budget inside a step, not only between steps.

The loop names the phase it is in (`observe`, `generate`, `execute`, ...); a background thread
waits for the deadline and, if it passes while a phase other than `record` runs, remembers that
phase and delivers SIGINT to the main thread (`signal.pthread_kill`, which also interrupts a
blocking system call). The loop sees a `KeyboardInterrupt`, asks `fired`, and ends the episode as
`error`, naming the phase that hung. Writing the step record is never interrupted (the watchdog
waits for the phase to change).

Signals reach only the main thread, and only while Python's default SIGINT handler (or another
one that raises `KeyboardInterrupt`) is installed: elsewhere (an episode run in a worker thread)
the watchdog stays disarmed and the budget is checked between steps, as before.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

UNINTERRUPTIBLE = frozenset({"record"})
POLL_S = 0.05  # how often a fired watchdog re-checks whether it may interrupt


class StepWatchdog:
    """Interrupts the main thread when `deadline` (a `time.perf_counter()` value) passes mid-phase."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.phase = "start"
        self.fired: str | None = None  # the phase that was running when the deadline passed
        self.interrupted_in: str | None = None  # the phase a KeyboardInterrupt came out of
        self._stop = threading.Event()
        self._main = threading.main_thread().ident
        self.armed = (deadline is not None and threading.current_thread() is threading.main_thread()
                      and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        self._thread = threading.Thread(target=self._watch, name="kimi-step-watchdog", daemon=True)

    def __enter__(self) -> StepWatchdog:
        if self.armed:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @contextmanager
    def running(self, phase: str) -> Iterator[None]:
        """Mark `phase` as the one running (restored afterwards). A `KeyboardInterrupt` (the
        watchdog's or the user's) passing out of it leaves the innermost phase in `interrupted_in`."""
        previous, self.phase = self.phase, phase
        try:
            yield
        except KeyboardInterrupt:
            self.interrupted_in = self.interrupted_in or phase
            raise
        finally:
            self.phase = previous

    def _watch(self) -> None:
        assert self.deadline is not None
        if self._stop.wait(max(0.0, self.deadline - time.perf_counter())):
            return
        while self.phase in UNINTERRUPTIBLE:
            if self._stop.wait(POLL_S):
                return
        self.fired = self.phase
        assert self._main is not None
        signal.pthread_kill(self._main, signal.SIGINT)
