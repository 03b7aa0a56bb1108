"""Graceful stops: a stop signal (SIGINT, SIGTERM, SIGHUP, SIGUSR1) or a DataLoader worker's death is turned into a
flag the training loop polls at step boundaries, where it saves the last completed step and exits."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable

from gpt2stream.errors import DataStreamError
from gpt2stream.setup_signals import EXIT_CODES as STOP_SIGNALS

__all__ = ["STOP_SIGNALS", "StopSignals", "WorkersGone", "WorkerDied", "describe_death"]


class WorkersGone(Exception):
    """DataLoader workers died from the stop signal while the loop waited for their batches."""


class WorkerDied(DataStreamError):
    """A DataLoader worker died on its own (the out-of-memory killer, a crash): the loop saves and stops."""


def describe_death(dead: list[tuple[int, int, int | None]], rank: int, world_size: int) -> str:
    """One line for dead DataLoader workers [(worker index, pid, exit code)]: which worker, which signal, and a
    memory hint for SIGKILL (what the kernel's out-of-memory killer sends).

    >>> describe_death([(1, 4242, -9)], 0, 1)
    'DataLoader worker 1 (pid 4242) was killed by SIGKILL, which usually means the machine ran out of memory (the \
kernel OOM killer): lower --num-workers, --shuffle-buffer or --batch-size'
    """
    if not dead:
        return "a DataLoader worker exited unexpectedly"
    index, pid, code = dead[0]
    who = f"DataLoader worker {index} (pid {pid})" + (f" of rank {rank}" if world_size > 1 else "")
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
        what = f"was killed by {name}"
    else:
        what = f"exited with status {code}" if code is not None else "exited unexpectedly"
    if code == -signal.SIGKILL:
        what += (", which usually means the machine ran out of memory (the kernel OOM killer): lower --num-workers, "
                 "--shuffle-buffer or --batch-size")
    return who + " " + what


class StopSignals:
    """The stop signals set ``received``; the training loop polls it at step boundaries, saves and exits. A second
    signal raises KeyboardInterrupt (stop at once)."""

    def __init__(self, announce: bool = True) -> None:
        self.received: int | None = None
        self.in_setup = True  # until the first step completes: a signal exits at once (gpt2stream.setup_signals)
        self.waiting_for_data = False  # set by the loop while it blocks on the data loader
        self.worker_died: str | None = None  # a DataLoader worker's death seen outside a wait (the loop's message)
        self.announce = announce
        self._old: dict = {}

    def _handler(self, signum, frame) -> None:
        if self.in_setup:
            from gpt2stream.setup_signals import exit_now

            exit_now(signum)
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum
        if self.announce:
            print(f"\n{signal.Signals(signum).name} received: saving a checkpoint at the end of this step "
                  f"(send it again to stop at once)", file=sys.stderr, flush=True)

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (e.g. a notebook worker): no graceful stop
                pass

    def restore(self) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)
        self._old = {}

    @contextlib.contextmanager
    def ignored_by_children(self):
        """Processes started inside inherit SIG_IGN for the stop signals (Ctrl-C in a terminal, or a hang-up,
        signals the whole process group): DataLoader workers then survive SIGINT and SIGHUP. SIGTERM they re-handle
        themselves, hence ``guard_worker_deaths``."""
        old = {}
        try:
            for sig in STOP_SIGNALS:
                try:
                    old[sig] = signal.signal(sig, signal.SIG_IGN)
                except ValueError:
                    pass
            yield
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    def guard_worker_deaths(self, find_dead: Callable[[], str | None]) -> None:
        """torch's SIGCHLD handler raises wherever the main process happens to be when a DataLoader worker dies:
        in the middle of an optimizer step, it would leave nothing to save. Instead:

        - after a stop signal the death is expected (torchrun, or ``kill`` of a process group, sends SIGTERM to the
          workers too, and they die from it): ignored, unless the loop is waiting for a batch: then the wait is
          interrupted (WorkersGone) and the loop saves;
        - otherwise (the OOM killer) ``find_dead()`` names the worker; the loop saves the last completed step and
          stops with that line (WorkerDied), at once if it is waiting for a batch, else at the next step boundary.
        """
        try:
            prev = signal.getsignal(signal.SIGCHLD)
        except (AttributeError, ValueError):  # no SIGCHLD (Windows)
            return
        if not callable(prev):  # no DataLoader workers: nothing to guard
            return

        def on_sigchld(signum, frame):
            waiting, self.waiting_for_data = self.waiting_for_data, False  # raise once, inside the loop's wait
            if self.received is not None:
                if waiting:
                    raise WorkersGone("DataLoader workers stopped by the signal")
                return
            try:
                prev(signum, frame)  # torch's check: raises when one of the loader's workers is gone
            except RuntimeError as e:
                self.worker_died = find_dead() or str(e)
                if waiting:
                    raise WorkerDied(self.worker_died) from None
            self.waiting_for_data = waiting

        try:
            signal.signal(signal.SIGCHLD, on_sigchld)
            self._old.setdefault(signal.SIGCHLD, prev)
        except ValueError:
            pass
