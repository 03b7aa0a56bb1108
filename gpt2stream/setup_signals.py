"""Stop signals before the first step: there is nothing to save yet, so SIGINT/SIGTERM end the process at once.

Set-up can block for a long time in places that never poll a flag (resolving a dataset on a stalled network,
reading parquet footers, compiling, downloading HellaSwag, measuring the matmul peak). A scheduler's SIGTERM must
not wait for them: the process prints one line and leaves with 130 (SIGINT) / 143 (SIGTERM), no traceback.
From the first completed step on, the trainer's graceful stop (save, then exit) takes over.
"""

from __future__ import annotations

import os
import signal
import sys

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def exit_now(signum: int, frame: object = None) -> None:
    """Signal handler: one line on stderr, then leave at once (os._exit: no cleanup that could block)."""
    sig = signal.Signals(signum)
    try:
        print(f"stopped by {sig.name} during set-up, before the first step: nothing to save", file=sys.stderr,
              flush=True)
    finally:
        os._exit(EXIT_CODES.get(sig, 128 + int(signum)))


def install() -> None:
    """Make SIGINT/SIGTERM exit at once (main thread only; elsewhere signals can't be handled)."""
    for sig in EXIT_CODES:
        try:
            signal.signal(sig, exit_now)
        except ValueError:
            pass
