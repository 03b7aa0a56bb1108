"""Where a step's time goes: ``data_wait_ms`` (waiting for the batches), ``compute_ms`` (forward and backward, with
DDP's overlapped gradient all-reduce), ``optim_ms`` (clipping, the optimizer step) and ``sync_ms`` (the per-step
agreement and the collectives outside DDP's overlap: the loss all-reduce).

Measuring must not slow the step down, so it adds no host synchronization. Host-side waits (the DataLoader, the
gloo agreement) are wall clocks. The device-side phases are wall clocks on CPU, where every op runs on the host; on
CUDA they are CUDA events recorded on the stream and read once ``query()`` says they are done, never waited on:
while the step ends in a host sync (it does today), that is at the end of the same step; otherwise a later step's
record carries them, with ``device_step`` naming the step they measured.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import torch

PHASES = ("data_wait_ms", "compute_ms", "optim_ms", "sync_ms")
DEVICE_PHASES = ("compute_ms", "sync_ms", "optim_ms")  # the order of the marks inside train_step
STALL_SHOWN = 0.05  # the step line shows the data-wait share above this


class StepTimer:
    """One per run. Per step: ``host(phase, seconds)`` for waits timed on the host, ``start()`` then ``mark(phase)``
    after each device phase (inside ``train_step``, in DEVICE_PHASES order), then ``finish(step)``."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._host = dict.fromkeys(PHASES, 0.0)
        self._t = 0.0
        self._last_host_sync = 0.0
        self._events: list[Any] = []
        self._pending: deque[tuple[int, list[Any]]] = deque()  # CUDA: (step, events) not read yet

    def host(self, phase: str, seconds: float) -> None:
        self._host[phase] += seconds * 1000

    def start(self) -> None:
        if self.cuda:
            self._events = [self._event()]
        else:
            self._t = time.perf_counter()

    def mark(self, phase: str) -> None:
        if self.cuda:
            self._events.append(self._event())
        else:
            now = time.perf_counter()
            self._host[phase] += (now - self._t) * 1000
            self._t = now

    @staticmethod
    def _event() -> Any:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def finish(self, step: int) -> dict[str, Any]:
        """The step's attribution, rounded to 0.01 ms, for its metrics record (see the module doc for CUDA)."""
        out = dict(self._host)
        self._host = dict.fromkeys(PHASES, 0.0)
        if self.cuda:
            self._last_host_sync = out["sync_ms"]
            out.update(self._device(step))
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}

    def _device(self, step: int) -> dict[str, Any]:
        if len(self._events) == len(DEVICE_PHASES) + 1:
            self._pending.append((step, self._events))
        self._events = []
        done = None
        while self._pending and self._pending[0][1][-1].query():  # complete, so reading it does not wait
            done = self._pending.popleft()
        if done is None:
            return {}
        measured, ev = done
        out: dict[str, Any] = {p: ev[i].elapsed_time(ev[i + 1]) for i, p in enumerate(DEVICE_PHASES)}
        out["sync_ms"] += self._last_host_sync  # the agreement's wall time, on the host
        if measured != step:
            out["device_step"] = measured
        return out


class _NoTimer:
    def start(self) -> None: ...
    def mark(self, phase: str) -> None: ...


NO_TIMER: Any = _NoTimer()  # train_step without a timer (tests, benchmarks)


def data_share(rec: dict[str, Any]) -> float:
    """The fraction of a step record's time spent waiting for data (0 when not recorded)."""
    ms = rec.get("ms") or 0
    return float(rec.get("data_wait_ms", 0.0)) / ms if ms else 0.0
