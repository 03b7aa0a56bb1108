"""stdout and stderr that outlive their reader, for training: a closed terminal, a killed ``tee`` or a ``| head``
must neither stop a run nor end it with status 0 before its checkpoint. Once a write fails, that stream's output
goes to /dev/null (the fd too, for what C code writes) and the run goes on, logging to train.log alone."""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO


class SurvivingStream:
    """A text stream wrapper whose writes never raise: the first failed write or flush (EPIPE from a pipe whose
    reader is gone, EIO from a hung-up terminal, a closed file) sends everything after it to /dev/null."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner
        self.lost = False

    def write(self, s: str) -> int:
        if not self.lost:
            try:
                return self._inner.write(s)
            except (OSError, ValueError):
                self._lose()
        return len(s)

    def flush(self) -> None:
        if not self.lost:
            try:
                self._inner.flush()
            except (OSError, ValueError):
                self._lose()

    def _lose(self) -> None:
        self.lost = True
        try:  # the fd too: torch's and gloo's own writes, and what is still buffered, then go nowhere harmlessly
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._inner.fileno())
            os.close(null)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding...: the wrapped stream's
        return getattr(self._inner, name)


def protect_std_streams() -> None:
    """Replace sys.stdout and sys.stderr by SurvivingStreams (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, SurvivingStream):
            setattr(sys, name, SurvivingStream(stream))
