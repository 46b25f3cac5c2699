"""A watchdog that enforces an episode's wall-clock budget inside a step, not only between steps.

The loop names the phase it is in (`observe`, `generate`, `execute`, ...); a background thread
waits for the deadline and, if it passes while a phase other than `record` runs, remembers that
phase and delivers SIGINT to the main thread (`signal.pthread_kill`, which also interrupts a
blocking system call). The loop sees a `KeyboardInterrupt`, asks `fired`, and ends the episode as
`error`, naming the phase that hung. Writing the step record is never interrupted (the watchdog
waits for the phase to change).

On the main thread with Python's default SIGINT handler that is how it fires. Anywhere else (an
episode run by `Agent.arun` on its worker thread, or a main thread whose SIGINT handler is not
Python's) it posts the `KeyboardInterrupt` to the episode's thread instead
(`PyThreadState_SetAsyncExc`), which raises it as soon as that thread runs Python code, and calls
`wake()` (e.g. `BrowserEnv.interrupt`, which wakes a Playwright call's event loop) so a thread
blocked waiting for an answer runs again; every environment call is itself bounded, so the
exception arrives within one call's bound at worst. A posted exception not yet raised when the
episode leaves the watchdog is withdrawn.
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

UNINTERRUPTIBLE = frozenset({"record"})
POLL_S = 0.05  # how often a fired watchdog re-checks whether it may interrupt


class StepWatchdog:
    """Interrupts the main thread when `deadline` (a `time.perf_counter()` value) passes mid-phase."""

    def __init__(self, deadline: float | None, *, wake: Callable[[], None] | None = None) -> None:
        self.deadline = deadline
        self.phase = "start"
        self.fired: str | None = None  # the phase that was running when the deadline passed
        self.interrupted_in: str | None = None  # the phase a KeyboardInterrupt came out of
        self._stop = threading.Event()
        self._target = threading.current_thread().ident  # the episode's thread
        self._signal = (threading.current_thread() is threading.main_thread()
                        and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        self._wake = wake
        self._posted = False
        self.armed = deadline is not None
        self._thread = threading.Thread(target=self._watch, name="kimi-step-watchdog", daemon=True)

    def __enter__(self) -> StepWatchdog:
        if self.armed:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._posted:  # not raised yet (the episode ended first): withdraw it
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target or 0), None)

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
        assert self._target is not None
        if self._signal:
            signal.pthread_kill(self._target, signal.SIGINT)
            return
        self._posted = True
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target), ctypes.py_object(KeyboardInterrupt))
        if self._wake is not None:
            self._wake()
