"""Progress bars that suit both a terminal and a log file.

On a terminal: tqdm's live bar, with log lines printed above it. Off a terminal (output redirected
to a file, a cluster job, CI): tqdm's carriage-return redraws would pile up in the file, so the bar
prints one plain line every ``LOG_INTERVAL_S`` seconds instead (and a last one when it closes), as
StyleGAN3's training logs do.
"""
from __future__ import annotations

import contextlib
import sys

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

LOG_INTERVAL_S = 30.0


class PlainLineProgress(tqdm):
    """tqdm that writes each refresh as its own line, at most every ``mininterval`` seconds."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", kwargs["mininterval"])  # tqdm's monitor would refresh every 10 s
        kwargs.update(ascii=True, dynamic_ncols=False)
        super().__init__(*args, **kwargs)
        if not self.disable:
            self.fp = _LinesOnly(self.fp)  # close() writes a bare "\n" or "\r" of its own

    @staticmethod
    def status_printer(file):
        def print_line(text: str) -> None:
            if text.strip():
                file.write(text.strip() + "\n")
                getattr(file, "flush", lambda: None)()
        return print_line

    def moveto(self, n: int) -> None:  # no cursor movement in a file
        pass

    def clear(self, nolock: bool = False) -> None:  # nothing to erase in a file
        pass


class _LinesOnly:
    """A stream that drops writes made only of line-control characters."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        if text.strip("\r\n"):
            self.stream.write(text)

    def flush(self) -> None:
        getattr(self.stream, "flush", lambda: None)()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _is_terminal(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_bar(iterable=None, *, disable: bool = False, file=None, **kwargs) -> tqdm:
    """A tqdm bar on a terminal, plain lines every ``LOG_INTERVAL_S`` seconds elsewhere."""
    stream = sys.stderr if file is None else file
    bar_class = tqdm if disable or _is_terminal(stream) else PlainLineProgress
    return bar_class(iterable, disable=disable, file=stream, **kwargs)


def logging_above(bar: tqdm):
    """Print log records above a live terminal bar (a plain-line bar needs nothing)."""
    if isinstance(bar, PlainLineProgress) or bar.disable:
        return contextlib.nullcontext()
    return logging_redirect_tqdm()
