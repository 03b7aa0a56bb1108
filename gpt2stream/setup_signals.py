"""The stop signals and their exit codes, and what they do before the first step: there is nothing to save yet, so
a stop signal ends the process at once.

Set-up can block for a long time in places that never poll a flag (resolving a dataset on a stalled network,
reading parquet footers, compiling, downloading HellaSwag, measuring the matmul peak). A scheduler's SIGTERM must
not wait for them: the process prints one line and leaves with 128 + the signal's number (130 SIGINT, 143 SIGTERM),
no traceback. From the first completed step on, the trainer's graceful stop (save, then exit) takes over.

SIGHUP (the terminal or ssh session closed) and SIGUSR1 (Slurm's early warning, ``--signal=B:USR1@120``) are stops
like SIGTERM: save at once, then exit, so that a requeued job continues with ``--resume auto``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

# the signal -> the conventional exit status (128 + its number)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129, signal.SIGUSR1: 138}
_at_exit: list[Callable[[], None]] = []  # what must not outlive a set-up stop (the run directory's lock)


def on_exit_now(fn: Callable[[], None]) -> None:
    """Run ``fn`` before a stop during set-up leaves (os._exit runs no atexit or finally)."""
    _at_exit.append(fn)


def exit_now(signum: int, frame: object = None) -> None:
    """Signal handler: one line on stderr, then leave at once (os._exit: no cleanup that could block)."""
    sig = signal.Signals(signum)
    try:
        for fn in _at_exit:
            try:
                fn()
            except Exception:  # noqa: BLE001 - leaving matters more
                pass
        print(f"stopped by {sig.name} during set-up, before the first step: nothing to save", file=sys.stderr,
              flush=True)
    finally:
        os._exit(EXIT_CODES.get(sig, 128 + int(signum)))


def install() -> None:
    """Make the stop signals exit at once (main thread only; elsewhere signals can't be handled)."""
    for sig in EXIT_CODES:
        try:
            signal.signal(sig, exit_now)
        except ValueError:
            pass
