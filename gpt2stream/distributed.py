"""Process-group setup and teardown: which rank am I, on which device, and how to leave cleanly.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; without them this is a single process. NCCL is used on CUDA and
gloo elsewhere. ``exit_process`` ends an entry point with a flushed ``os._exit``: with gloo, interpreter finalization
sometimes aborts (SIGABRT) while gloo's threads still hold Python objects, which would make torchrun report a
finished job as failed (shared/TORCH-NOTES.md).
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from gpt2stream.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str  # "nccl", "gloo" or "" when not distributed
    control: object = None  # the gloo group of the control-plane agreements; None = the default group

    @property
    def ddp(self) -> bool:
        return self.world_size > 1

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def device_type(self) -> str:
        return self.device.type


def cuda_index(spec: str, local_rank: int, local_world: int, n_gpus: int) -> int:
    """This process's GPU: its local rank. One GPU per process: NCCL fails ("Duplicate GPU detected") when two
    ranks share one, so an explicit cuda:N under torchrun, or more processes per node than GPUs, is refused."""
    dev = torch.device("cuda") if spec == "auto" else torch.device(spec)
    if local_world > 1 and dev.index is not None:
        raise UserError(f"--device {spec} would put all {local_world} processes of this node on one GPU; use "
                        f"--device cuda (or auto): each process takes the GPU of its LOCAL_RANK. Choose GPUs with "
                        f"CUDA_VISIBLE_DEVICES")
    if local_world > n_gpus:
        raise UserError(f"{local_world} processes on this node but only {n_gpus} CUDA device(s) visible; use "
                        f"torchrun --nproc_per_node={n_gpus} (or fewer)")
    if dev.index is not None:
        if dev.index >= n_gpus:
            raise UserError(f"--device {spec}: this machine has {n_gpus} CUDA device(s) (cuda:0..cuda:{n_gpus - 1})")
        return dev.index
    return local_rank


def local_world_size() -> int:
    """Processes on this node (torchrun's LOCAL_WORLD_SIZE; 1 for a plain process)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def pick_device(spec: str, local_rank: int = 0) -> torch.device:
    """The one device resolver: 'auto' -> cuda:<local rank>, else mps, else cpu; an explicit device must exist."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", cuda_index(spec, local_rank, local_world_size(), torch.cuda.device_count()))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UserError(f"--device {spec!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {spec!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto")
        dev = torch.device("cuda", cuda_index(spec, local_rank, local_world_size(), torch.cuda.device_count()))
    mps = getattr(torch.backends, "mps", None)
    if dev.type == "mps" and not (mps is not None and mps.is_available()):
        raise UserError(f"--device {spec}: MPS (Apple GPU) is not available on this machine; use --device cpu or auto")
    return dev


def check_launch(env: Mapping[str, str]) -> None:
    """Refuse the launches that look fine but are not: tasks started by srun without torchrun (each would train on
    its own into one run directory), and a RANK without LOCAL_RANK (every rank would take cuda:0)."""
    torchrun = all(k in env for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1"
    if not torchrun and "SLURM_PROCID" in env and tasks.isdigit() and int(tasks) > 1:
        raise UserError(f"SLURM started {tasks} tasks but torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE) are "
                        "not set: each task would train on its own into the same run directory. Start one task "
                        "per node running torchrun: srun --ntasks-per-node=1 torchrun --nnodes=$SLURM_NNODES "
                        "--nproc_per_node=GPUS --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 run_train.py ...")
    if "RANK" in env and "LOCAL_RANK" not in env:
        raise UserError("RANK is set but LOCAL_RANK is not: every process would take the first GPU. Launch with "
                        "torchrun (it sets both), or set LOCAL_RANK to the process's index on its node")


def env_world() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def restart_safe_store(env: Mapping[str, str], rank: int, world: int,
                       timeout: datetime.timedelta | None) -> dict[str, object]:
    """init_process_group's store for a worker group torchrun restarted: torchrun's own store (the c10d
    rendezvous's, which outlives the restart) under a prefix of this restart. Without it the new group reads the old
    group's addresses from the shared store and gloo fails to connect (connectFullMesh: connection refused) or hangs.
    Empty (the usual env:// init) outside torchrun's shared store."""
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_ADDR" not in env:
        return {}
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), world, is_master=False,
                          timeout=timeout or datetime.timedelta(minutes=30))
    attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
    return {"store": dist.PrefixStore(f"/gpt2stream/attempt_{attempt}", store), "rank": rank, "world_size": world}


GPU_TIMEOUT_S = 600.0  # NCCL's training collectives: a GPU that hangs surfaces in minutes


def init_distributed(device_spec: str = "auto", timeout_s: float | None = None,
                     gpu_timeout_s: float = GPU_TIMEOUT_S) -> DistInfo:
    """Start the process group when launched by torchrun with more than one process; pick this rank's device.

    ``timeout_s``: how long a control-plane agreement (a decision every rank takes together) may wait for the
    slowest rank (None: torch's default). On CUDA those agreements run on a separate gloo group with that timeout,
    so the NCCL training collectives keep the short ``gpu_timeout_s``; elsewhere one gloo group does both.
    """
    check_launch(os.environ)
    rank, local_rank, world = env_world()
    device = pick_device(device_spec, local_rank)
    backend, control = "", None
    if device.type == "cuda":
        # also for one process on cuda:N: calls that take no device (synchronize, the step timing) use the current one
        torch.cuda.set_device(device)
    if world > 1:
        if device.type == "mps":
            raise UserError("multi-process training on MPS is not supported; run a single process on a Mac")
        backend = "nccl" if device.type == "cuda" else "gloo"
        control = start_groups(backend, device, timeout_s, gpu_timeout_s)
        from gpt2stream.launcher import rank0_started

        # after the groups start: a failure to start them (every rank's) is then said once, by rank 0
        rank0_started()
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=device, backend=backend,
                    control=control)


def start_groups(backend: str, device: torch.device, timeout_s: float | None, gpu_timeout_s: float) -> object:
    """The default group (``backend``) and, on NCCL, the gloo control group (returned; None = the default group).
    Gloo uses the interface that reaches MASTER_ADDR (gpt2stream.netif); a set-up that cannot connect within a
    minute, or that gloo refuses, ends in one line naming GLOO_SOCKET_IFNAME and the address tried."""
    from gpt2stream import netif

    choice = netif.set_gloo_interface()
    line = netif.failure_line(f"did not connect within {netif.CONNECT_TIMEOUT_S:.0f} s", choice, os.environ)
    long = None if timeout_s is None else datetime.timedelta(seconds=timeout_s)
    try:
        with netif.connect_deadline(line):
            if not dist.is_initialized():
                main = datetime.timedelta(seconds=gpu_timeout_s) if backend == "nccl" else long
                kw: dict[str, Any] = {} if main is None else {"timeout": main}
                kw.update(restart_safe_store(os.environ, env_world()[0], env_world()[2], main))
                dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None, **kw)
            if backend == "nccl":
                return dist.new_group(backend="gloo", timeout=long)
    except RuntimeError as e:
        if "gloo" in str(e).lower() or "interface" in str(e).lower() or "GLOO_SOCKET_IFNAME" in os.environ:
            why = f"could not start ({str(e).splitlines()[0].rsplit('] ', 1)[-1][:160]})"
            raise UserError(netif.failure_line(why, choice, os.environ)) from None
        raise
    return None


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.ddp:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.ddp:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def gather_objects(obj: object, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order, on every rank (small python objects only; control plane)."""
    if not info.ddp:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj, group=info.control)
    return out


# ---- agreements: every rank takes the same decision ---------------------------------------------------------------

class Failure(IntEnum):
    """What a rank reports at a step boundary; the highest code over the ranks wins."""

    NONE = 0
    USER = 1  # bad input or data (a UserError): save, stop with a one-line message
    DATA = 2  # the data stream failed for good (DataStreamError): save, stop, say how to resume


def agree_max(info: DistInfo, *codes: int) -> tuple[int, ...]:
    """Every rank's integer codes, max-reduced: the same tuple on every rank (collective under DDP)."""
    if not info.ddp:
        return tuple(int(c) for c in codes)
    device = "cpu" if info.control is not None or info.backend == "gloo" else info.device
    t = torch.tensor([int(c) for c in codes], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=info.control)
    return tuple(int(v) for v in t.tolist())


class StepAgreement:
    """The per-step agreement (stop signal, data failure), max-reduced over the ranks with ONE small all-reduce on
    the training backend (NCCL on GPUs), not on the TCP gloo control group. On CUDA it does not wait for the device:
    the codes go up and the result comes back with non-blocking copies through pinned memory, and ``result`` waits
    only for an event recorded right after them, i.e. before this step's forward was queued: the queue of work is
    never drained."""

    def __init__(self, info: DistInfo, codes: tuple[int, ...]) -> None:
        self._values, self._event, self._host = tuple(int(c) for c in codes), None, None
        if not info.ddp:
            return
        cuda = info.device.type == "cuda" and info.backend == "nccl"
        t = torch.tensor(self._values, dtype=torch.int64)
        if cuda:
            t = t.pin_memory().to(info.device, non_blocking=True)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if cuda:
            self._host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            self._host.copy_(t, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = t

    def result(self) -> tuple[int, ...]:
        """The codes max-reduced over the ranks (the same tuple on every rank)."""
        if self._host is not None:
            if self._event is not None:
                self._event.synchronize()
            self._values, self._host, self._event = tuple(int(v) for v in self._host.tolist()), None, None
        return self._values


def broadcast_object(obj: T, info: DistInfo, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (a small python object; control plane)."""
    if not info.ddp:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=info.control)  # type: ignore[arg-type]
    return box[0]


def lowest_failing_rank(failed: bool, info: DistInfo) -> int | None:
    """Collective: the lowest rank for which ``failed`` is true, or None when no rank failed."""
    (worst,) = agree_max(info, info.world_size - info.rank if failed else 0)
    return info.world_size - worst if worst else None


def shutdown(info: DistInfo | None = None, *, sync: bool = True) -> None:
    """Leave the process group; ``sync=False`` skips the barrier when other ranks may already be gone."""
    if dist.is_available() and dist.is_initialized():
        try:
            if sync:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def exit_process(code: int) -> None:
    """Flush and leave without interpreter finalization (see the module docstring). Entry points only."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe must not change the exit code
            pass
    os._exit(code)
