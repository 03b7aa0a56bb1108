"""One run per run directory: a lock file that rank 0 holds for the run's life.

``<out_dir>/.run.lock`` is created with O_EXCL (atomic on local filesystems and on NFS v3+) and holds the holder's
host, pid, start time and torchrun job. While the run lives, a thread refreshes the file's mtime (a heartbeat) and
the file is ``flock``ed where the filesystem supports it. A lock left by a run that died is taken over:

- on this host, when its pid is gone (or its flock is free: the pid was reused by another process);
- from another host, when its heartbeat is older than ``STALE_S`` (flock may not reach other hosts over NFS),
  measured with the file server's clock (a probe file's mtime), so clock skew between hosts does not matter;
- by a worker group that torchrun restarted (the same TORCHELASTIC_RUN_ID, a higher restart count), wherever its
  rank 0 now runs.

Taking over renames the stale file away first (atomic: of two runs taking over at once, one wins), then creates
a new one.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from gpt2stream.errors import UserError

LOCK_NAME = ".run.lock"
HEARTBEAT_S = 30.0  # how often the holder refreshes the lock's mtime
STALE_S = 300.0  # a lock from another host whose heartbeat is older than this belongs to a dead run


def me() -> dict[str, Any]:
    """What this process writes into the lock: who holds it, since when, for which torchrun job."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "job": os.environ.get("TORCHELASTIC_RUN_ID", ""),
            "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)}


def read_holder(path: Path) -> dict[str, Any] | None:
    """The lock's holder, or None when the file is gone, empty or unreadable (its creator died writing it)."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and {"host", "pid"} <= holder.keys() else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def flock_free(path: Path) -> bool | None:
    """Whether nobody holds the lock file's flock (None: flock does not work here)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    finally:
        os.close(fd)  # closing releases a flock we took
    return True


def heartbeat_age(path: Path) -> float:
    """Seconds since the lock's last heartbeat, by the file server's clock (a probe file's mtime)."""
    probe = path.with_name(f"{LOCK_NAME}.probe-{socket.gethostname()}-{os.getpid()}")
    try:
        probe.touch()
        now = probe.stat().st_mtime
        probe.unlink()
    except OSError:
        now = time.time()
    return now - path.stat().st_mtime


def stale_reason(path: Path, holder: dict[str, Any] | None) -> str | None:
    """Why the lock belongs to no live run (a phrase), or None when its holder may be alive."""
    mine = me()
    if holder is None:
        return "an unreadable lock" if heartbeat_age(path) > HEARTBEAT_S else None
    if holder.get("job") and holder["job"] not in ("none", "") and holder["job"] == mine["job"] and \
            int(holder.get("restart", 0)) < mine["restart"]:
        return f"the lock of this torchrun job before its restart {mine['restart']}"
    if holder["host"] == mine["host"]:
        if holder["pid"] == mine["pid"]:
            return None
        if not pid_alive(int(holder["pid"])) or flock_free(path):
            return f"the lock of pid {holder['pid']}, which is gone"
        return None
    age = heartbeat_age(path)
    return f"the lock of pid {holder['pid']} on {holder['host']}, silent for {age:.0f} s" if age > STALE_S else None


def refusal(run_dir: Path, holder: dict[str, Any] | None, path: Path) -> UserError:
    if holder is None:
        return UserError(f"{run_dir} is being taken by another run (its lock {path} is being written); wait for it, "
                         "or use another --out-dir")
    other = holder["host"] != socket.gethostname()
    wait = f" (if that run is dead, its lock is taken over {STALE_S / 60:.0f} min after its last heartbeat)" \
        if other else ""
    return UserError(f"{run_dir} is in use by another run: pid {holder['pid']} on {holder['host']}, since "
                     f"{holder.get('since', '?')} (lock {path}); wait for it to end or use another --out-dir{wait}")


class RunLock:
    """``acquire()`` or a one-line UserError naming the holder; ``release()`` at the run's end."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None
        self.mine: dict[str, Any] = {}
        self._stop = threading.Event()

    def acquire(self) -> str | None:
        """Take the lock; returns a note when a dead run's lock was taken over."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--out-dir {self.run_dir}: cannot create the run directory ({e.strerror or e}); "
                            "choose another --out-dir") from None
        note = None
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_holder(self.path)
                reason = stale_reason(self.path, holder)
                if reason is None:
                    raise refusal(self.run_dir, holder, self.path) from None
                if self._take_over(holder):
                    note = f"took over {reason} in {self.run_dir}"
                continue
            except OSError as e:
                raise UserError(f"--out-dir {self.run_dir}: cannot write its lock file ({e.strerror or e}); "
                                "choose a writable --out-dir") from None
            self._hold(fd)
            return note
        raise refusal(self.run_dir, read_holder(self.path), self.path)

    def _take_over(self, holder: dict[str, Any] | None) -> bool:
        """Move the stale lock away (atomic), unless it changed since we read it (another run took it over)."""
        grave = self.path.with_name(f"{LOCK_NAME}.stale-{socket.gethostname()}-{os.getpid()}")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return False  # another run moved it first: look again
        moved = read_holder(grave)
        if moved != holder:  # a live run's lock, created after we read the dead one's: put it back
            try:
                os.link(grave, self.path)
            except OSError:
                pass
        os.unlink(grave)
        return moved == holder

    def _hold(self, fd: int) -> None:
        import fcntl

        self.fd, self.mine = fd, me()
        os.write(fd, json.dumps(self.mine).encode())
        os.fsync(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EWOULDBLOCK, errno.EINVAL):
                raise
        threading.Thread(target=self._beat, daemon=True, name="gpt2stream-runlock").start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        """Give the lock up (only if it is still ours)."""
        if self.fd is None:
            return
        self._stop.set()
        try:
            if read_holder(self.path) == self.mine:
                self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
