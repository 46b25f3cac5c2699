"""The terminal view of an episode (rich): a live line for the step in progress, then each step.

On a terminal, `ConsoleListener` keeps a rich `Live` region at the bottom: a spinner, the step
number, its phase (observing, thinking, acting, waiting, settling) with the time spent in it, and,
while the model thinks, the last lines of its reply as they stream. Above it, each step is printed
for good once its reply parsed (thought and action, before anything runs, so a confirmation
question comes after them) and once it ended (points, errors, timings). When the console is not
a terminal (a file, a pipe, CI) it prints the same step blocks as plain lines and no live region.

`confirm` and `ask` are the terminal implementations of the two human hooks (confirming a risky
action, answering the model's `computer.ask_user` question); they pause the live region while the
question is on screen.

Every text a model, a web page or a task file wrote (thought, action, code, errors, the answer,
the reason, the model's question) is printed through `printable`: no escape sequence reaches the
terminal.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.prompt import Confirm, Prompt
from rich.spinner import Spinner
from rich.text import Text

from kimi_agent.listener import Listener, Phase
from kimi_agent.safety import Redactor
from kimi_agent.trajectory import StepRecord

if TYPE_CHECKING:
    from kimi_agent.loop import EpisodeResult

_PHASES = ("observe", "model", "parse", "execute", "settle")
_STATUS_STYLE = {"success": "bold green", "failure": "bold red", "error": "bold red",
                 "max_steps": "bold yellow", "user_stopped": "bold yellow"}
#: Lines of the streamed reply shown under the spinner while the model thinks.
STREAM_LINES = 6


#: control characters, lone surrogates and the bidi controls that reorder what a terminal shows (U+202A-E,
#: U+2066-9: a model's answer must not visually rearrange the summary line)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with control characters written as escapes (ESC as `\\x1b`): what a model, a web page
    or a task file wrote must not retitle, recolour or clear the terminal it is printed on. Lone
    surrogates, which no terminal encoding can write, become `\\udcff` too."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                        text)


def _short(text: str, n: int = 240) -> str:
    text = printable(" ".join(text.split()))
    return text if len(text) <= n else text[: n - 1] + "…"


class _Current:
    """The step in progress, as the live region draws it (read by rich's refresh thread)."""

    def __init__(self, redact: Redactor) -> None:
        self.redact = redact
        self.step = 0
        self.phase: str = "starting"
        self.detail = ""
        self.since = time.perf_counter()
        self.text = ""
        self.spinner = Spinner("dots", style="cyan")  # one for the whole episode: its frame follows its age

    def set(self, step: int, phase: str, detail: str = "") -> None:
        if step != self.step or phase == "thinking":
            self.text = ""
        self.step, self.phase, self.detail, self.since = step, phase, detail, time.perf_counter()

    def __rich__(self) -> RenderableType:
        label = f"Step {self.step}" if self.step else "Starting"
        detail = f" ({self.detail})" if self.detail else ""
        head = Text.assemble((f"{label} ", "bold cyan"), (f"{self.phase}{detail}", "bold"),
                             (f"  {time.perf_counter() - self.since:.1f} s", "dim"))
        spinner = self.spinner
        spinner.update(text=head)
        if self.phase != "thinking" or not self.text:
            return spinner
        lines = self.redact(self.text).rstrip("\n").splitlines()[-STREAM_LINES:]
        return Group(spinner, Text("\n".join(f"  │ {printable(line)}" for line in lines), style="dim", no_wrap=True,
                                   overflow="ellipsis"))


class ConsoleListener(Listener):
    """Shows an episode on `console`: a live region on a terminal, plain step blocks otherwise.

    Args:
        console: where to draw (the CLI's stderr console).
        secrets: values to redact from everything shown (the model's streamed text too).
        live: force the live region on (True) or off (False); default: on when `console` is a terminal.
    """

    def __init__(self, console: Console, *, secrets: Iterable[str] = (), live: bool | None = None) -> None:
        self.console = console
        self.redact = Redactor(secrets)
        self.use_live = console.is_terminal if live is None else live
        self._current = _Current(self.redact)
        self._live: Live | None = None
        self._lock = threading.Lock()

    # ---- the live region ------------------------------------------------------------------------

    def _show(self) -> None:
        """Start the live region if it is not running (after a pause for a question, too)."""
        if not self.use_live or self._live is not None:
            return
        with self._lock:
            if self._live is None:
                self._live = Live(self._current, console=self.console, refresh_per_second=10, transient=True)
                self._live.start()

    def stop(self) -> None:
        """Remove the live region (before a question, and at the end of the episode)."""
        with self._lock:
            live, self._live = self._live, None
        if live is not None:
            live.update(Text(""), refresh=True)  # shrink it to nothing first: no line of it can linger
            live.stop()

    # ---- Listener hooks -------------------------------------------------------------------------

    def on_step_start(self, step: int) -> None:
        self._current.set(step, "thinking")
        self._show()

    def on_phase(self, step: int, phase: Phase, detail: str = "") -> None:
        self._current.set(step, phase, detail)
        self._show()

    def on_text(self, piece: str) -> None:
        self._current.text += piece

    def on_reply(self, step: int, thought: str, action: str) -> None:
        c = self.console
        c.print(f"[bold cyan]Step {step}[/]")
        if thought:
            c.print(f"  [dim]thought:[/] {escape(_short(self.redact(thought)))}")
        c.print(f"  [bold]action:[/] {escape(_short(self.redact(action)))}")
        self._current.text = ""

    def on_retry(self, step: int, error: str) -> None:
        self.console.print(f"  [yellow]step {step}: rejected, retrying:[/] {escape(_short(self.redact(error)))}")

    def on_step(self, record: StepRecord) -> None:
        c = self.console
        if not record.parsed and "interrupted" in record.durations_ms:
            c.print(f"[bold cyan]Step {record.step}[/] [dim]({escape(printable(record.error or 'interrupted'))})[/]")
        elif not record.parsed:
            c.print(f"[bold cyan]Step {record.step}[/] [dim](no usable reply)[/]")
        elif record.parsed.get("code"):
            c.print(f"  [dim]code:[/] {escape(_short(self.redact(record.parsed.get('code') or ''), 160))}")
        for a in record.actions:
            where = ""
            if a.exec_xy:
                where = " at " + ", ".join(f"({x:.0f}, {y:.0f})" for x, y in a.exec_xy) + " px"
            if a.exec_xy or not a.ok:
                failed = "" if a.ok else " [red]FAILED:[/] " + escape(printable(self.redact(a.error or "")))
                c.print(f"  [dim]{a.action['type']}{where}[/]{failed}")
        d = record.durations_ms
        timing = "  ".join(f"{k} {d[k]:.0f} ms" for k in _PHASES if k in d)
        c.print(f"  [dim]{timing}[/]")

    # ---- the end and the human hooks -------------------------------------------------------------

    def summary(self, result: EpisodeResult) -> None:
        """Stop the live region and print how the episode ended and where its files are."""
        self.stop()
        style = _STATUS_STYLE.get(result.status, "bold")
        answer = f" answer: {escape(printable(self.redact(result.answer)))}" if result.answer else ""
        self.console.print(f"[{style}]{result.status}[/] after {result.steps} steps, {result.duration_s:.1f} s: "
                           f"{escape(printable(self.redact(result.reason)))}.{answer}")
        self.console.print(f"trajectory: {result.run_dir}  report: {result.run_dir / 'report.html'}")

    def confirm(self, question: str) -> bool:
        """Ask on the terminal whether a risky action may run (the live region pauses)."""
        self.stop()
        return confirm_on_terminal(question, console=self.console)

    def ask(self, question: str) -> str:
        """Ask the user the model's question on the terminal (the live region pauses)."""
        self.stop()
        return ask_on_terminal(question, console=self.console)


def confirm_on_terminal(question: str, *, console: Console | None = None) -> bool:
    """A yes/no question on the terminal; no (the default) refuses the action."""
    return Confirm.ask(f"[bold yellow]{escape(printable(question))}[/]", default=False, console=console)


def ask_on_terminal(question: str, *, console: Console | None = None) -> str:
    """The model's `computer.ask_user` question; the answer goes back to the model."""
    return Prompt.ask(f"[bold]The agent asks:[/] {escape(printable(question))}", console=console)
