"""A small throttled progress line on stderr (no dependencies, safe when stderr is not a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def human(n: float) -> str:
    """12345678 -> '12.3M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def eta(done: int, total: int, elapsed: float) -> str:
    """Time left at the average rate so far, as 'm:ss' ('?' before any progress)."""
    if done <= 0 or elapsed <= 0:
        return "?"
    left = (total - done) * elapsed / done
    return f"{int(left // 60)}:{int(left % 60):02d}"


class Progress:
    """Prints at most every ``interval`` seconds; on a terminal it rewrites one line, otherwise prints lines."""

    def __init__(self, stream: TextIO | None = None, interval: float = 1.0, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.enabled = enabled
        self.start = time.perf_counter()
        self._last = self.start  # first line after one interval, not at once
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._open_line = False

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def due(self) -> bool:
        now = time.perf_counter()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            return True
        return False

    def update(self, message: str) -> None:
        if not self.enabled:
            return
        if self._tty:
            self.stream.write("\r\x1b[K" + message)
            self._open_line = True
        else:
            self.stream.write(message + "\n")
        self.stream.flush()

    def done(self, message: str) -> None:
        if not self.enabled:
            return
        if self._open_line:
            self.stream.write("\r\x1b[K")
            self._open_line = False
        self.stream.write(message + "\n")
        self.stream.flush()
