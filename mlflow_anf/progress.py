"""What a long step is doing, on a terminal: a spinner (a bar when the total is known), a description and the time
elapsed, drawn with `rich <https://rich.readthedocs.io>`_ on stderr.

Core code takes a :class:`Progress` as a parameter (default :data:`SILENT`, which draws nothing) and reports through
it; only the command-line edge decides whether anything is shown (:func:`for_cli`): on a terminal unless ``-q``,
never when stderr is a pipe or a file (CI logs, ``2>log``). Nothing here knows of MLflow, Kubernetes or Azure.

    progress = for_cli(quiet)
    with progress.step("render frames", total=n) as step:
        for frame in frames:
            ...
            step.advance()

Steps may nest (a restore inside a reproduction): one display shows them all, one line each.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import click


class Step:
    """One long step as reported by the code doing it. This base class draws nothing."""

    shown = False  # whether anything is drawn (callers may skip work that only feeds the display)

    def advance(self, amount: float = 1) -> None:
        """*amount* more units done (frames, files)."""

    def describe(self, text: str) -> None:
        """Replace the step's description, e.g. with the phase an API reports (``pending``, ``InProgress``)."""

    def set_total(self, total: float | None) -> None:
        """The number of units, once it is known."""


class Progress:
    """Reports long steps. This base class (:data:`SILENT`) draws nothing: the default of every core function."""

    shown = False

    @contextmanager
    def step(self, description: str, total: float | None = None) -> Iterator[Step]:
        yield Step()


#: draws nothing: the default ``progress`` of core functions, and what :func:`for_cli` gives off a terminal or with -q
SILENT = Progress()


def _plain(text: str) -> str:
    """*text* shown as it is: names with ``[...]`` in them are not rich markup."""
    from rich.markup import escape

    return escape(text)


class _RichStep(Step):
    shown = True

    def __init__(self, display: Any, task_id: Any, total: float | None) -> None:
        self._display, self._task, self._total = display, task_id, total
        self._done = 0.0

    def _counter(self) -> str:
        if self._total is None:
            return f"{self._done:g}" if self._done else ""
        return f"{self._done:g}/{self._total:g}"

    def advance(self, amount: float = 1) -> None:
        self._done += amount
        self._display.update(self._task, advance=amount, counter=self._counter())

    def describe(self, text: str) -> None:
        self._display.update(self._task, description=_plain(text))

    def set_total(self, total: float | None) -> None:
        self._total = total
        self._display.update(self._task, total=total, counter=self._counter())

    def finish(self, failed: bool) -> None:
        if failed:
            description = self._display.tasks[self._index()].description
            self._display.update(self._task, description=f"{description} [red](failed)[/]")
            self._display.stop_task(self._task)
            return
        total = self._total if self._total is not None else max(self._done, 1)
        self._display.update(self._task, total=total, completed=total)

    def _index(self) -> int:
        return next(i for i, t in enumerate(self._display.tasks) if t.id == self._task)


class TerminalProgress(Progress):
    """Draws each step on *stream* (stderr), refreshed several times a second by rich's own thread, so a step that
    only waits (an API operation) still shows its time going by."""

    shown = True

    def __init__(self, stream: IO[str] | None = None, *, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self._console = console if console is not None else Console(file=stream or sys.stderr)
        self._display = RichProgress(
            SpinnerColumn(finished_text="[green]✓[/]"), TextColumn("{task.description}"), BarColumn(bar_width=24),
            TextColumn("{task.fields[counter]}"), TimeElapsedColumn(), console=self._console, transient=False,
            # prints to stdout go above the display only when stdout is that terminal too: rich would send them to
            # its console (stderr), and `cmd > out.txt` must still get every result in out.txt
            redirect_stdout=_isatty(sys.stdout),
        )
        self._open = 0

    @contextmanager
    def step(self, description: str, total: float | None = None) -> Iterator[Step]:
        if self._open == 0:
            self._display.start()
        self._open += 1
        task = self._display.add_task(_plain(description), total=total, counter="")
        step = _RichStep(self._display, task, total)
        failed = True
        try:
            yield step
            failed = False
        finally:
            step.finish(failed)
            self._open -= 1
            if self._open == 0:
                self._display.stop()
                for finished in list(self._display.task_ids):  # the next command's display starts empty
                    self._display.remove_task(finished)


def _isatty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def for_cli(quiet: bool, stream: IO[str] | None = None) -> Progress:
    """The progress display of a command: drawn on *stream* (default stderr) when it is a terminal and not *quiet*;
    otherwise :data:`SILENT`."""
    stream = stream if stream is not None else sys.stderr
    if quiet or not _isatty(stream):
        return SILENT
    return TerminalProgress(stream)


def quiet_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``-q/--quiet`` for a command with long steps (the display goes to stderr and only to a terminal anyway)."""
    return click.option(
        "-q", "--quiet", is_flag=True, default=False,
        help="Show no progress display (it is drawn on stderr, and only when stderr is a terminal).",
    )(func)  # fmt: skip


__all__ = ["SILENT", "Progress", "Step", "TerminalProgress", "for_cli", "quiet_option"]
