"""A run's life through the real entry point: output that goes away (a killed tee, ``| head``) neither stops nor
fakes a run; a DataLoader worker killed by SIGKILL saves and says so in one line; one run per run directory (its
lock, taken over from a dead run); ``--resume auto``. A torchrun restart after a worker is killed:
test_train_muon.py."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt2stream.checkpoint import find_latest
from gpt2stream.errors import UserError
from gpt2stream.runlock import LOCK_NAME, STALE_S, RunLock
from tests.test_train_common import ROOT, RUN_TRAIN, env, run, train_lines
from tests.test_train_failures import _args


def _wait_for(cond, p: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert p.poll() is None, f"the run ended (exit {p.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def _logged_steps(out: Path) -> list[int]:
    """The steps train.log reports (one line per step with --log-every 1)."""
    log = out / "train.log"
    text = log.read_text() if log.exists() else ""
    return [int(m) for m in re.findall(r"^step +(\d+)/\d+ \| loss", text, re.M)]


def _popen(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, RUN_TRAIN, *args], env=env(), cwd=ROOT, start_new_session=True, **kw)


@pytest.mark.slow
def test_killed_tee_then_ctrl_c_saves_and_exits_130(tmp_path):
    """`run_train.py | tee log`, then Ctrl-C: tee dies first; the trainer writes into the dead pipe, goes on, then
    stops on the SIGINT with its checkpoint, exit 130, and train.log has every line."""
    out = tmp_path / "run"
    args = _args(tmp_path, "--max-steps", "100000", "--save-every", "0", "--out-dir", str(out))
    tee = subprocess.Popen([sys.executable, "-c", "import sys\nfor line in sys.stdin: sys.stdout.write(line)"],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    with open(tmp_path / "stderr.txt", "w") as err:
        p = _popen(args, stdout=tee.stdin, stderr=err)
    tee.stdin.close()  # the trainer holds the pipe's only write end
    try:
        _wait_for(lambda: len(_logged_steps(out)) >= 2, p, "2 steps")
        tee.kill()
        tee.wait()
        n = len(_logged_steps(out))
        _wait_for(lambda: len(_logged_steps(out)) >= n + 3, p, "steps after tee died")  # it wrote into the pipe
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert rc == 130, stderr
    assert "Traceback" not in stderr
    log = (out / "train.log").read_text()
    step = int(re.search(r"stopped by SIGINT after step (\d+); checkpoint saved", log.splitlines()[-1])[1])
    assert find_latest(out)[1]["step"] == step
    assert _logged_steps(out) == list(range(1, step + 1))
    assert [r[0] for r in train_lines(out)] == list(range(1, step + 1))


@pytest.mark.slow
def test_head_reads_three_lines_and_the_run_still_finishes(tmp_path):
    out = tmp_path / "run"
    args = _args(tmp_path, "--max-steps", "6", "--save-every", "0", "--out-dir", str(out))
    cmd = " ".join([sys.executable, RUN_TRAIN, *args]) + " | head -n 3; echo status ${PIPESTATUS[0]}"
    p = subprocess.run(cmd, shell=True, executable="/bin/bash", capture_output=True, text=True, env=env(), cwd=ROOT,
                       timeout=240)
    lines = p.stdout.splitlines()
    assert len(lines) == 4 and lines[-1] == "status 0", p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert find_latest(out)[1]["step"] == 6
    assert _logged_steps(out) == list(range(1, 7))
    assert (out / "train.log").read_text().splitlines()[-1].startswith("done: 6 steps")


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the worker")
def test_dataloader_worker_killed_by_sigkill_saves_and_says_which(tmp_path):
    out = tmp_path / "run"
    args = _args(tmp_path, "--max-steps", "100000", "--save-every", "0", "--num-workers", "2", "--out-dir", str(out))
    p = _popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(_logged_steps(out)) >= 3, p, "3 steps")
        workers = _children(p.pid)
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGKILL)  # what the kernel's OOM killer does
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 3, stdout + stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    m = re.fullmatch(rf"error: DataLoader worker [01] \(pid {workers[1]}\) was killed by SIGKILL, which usually means "
                     r"the machine ran out of memory .*; checkpoint saved at step (\d+); continue with: python "
                     rf"run_train.py --out-dir {re.escape(str(out))} --resume", errors[0])
    assert m, errors[0]
    step = int(m[1])
    assert find_latest(out)[1]["step"] == step >= 3
    assert [r[0] for r in train_lines(out)] == list(range(1, step + 1))
    assert (out / "train.log").read_text().splitlines()[-1] == errors[0]


# ---- one run per run directory; --resume auto ----------------------------------------------------------------------

@pytest.mark.slow
def test_second_run_is_refused_and_resume_auto_takes_over_a_killed_runs_lock(tmp_path):
    out = tmp_path / "run"
    args = _args(tmp_path, "--save-every", "3", "--out-dir", str(out), "--resume", "auto")
    a = _popen([*args, "--max-steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for((out / "checkpoints" / "step_00000003.pt").exists, a, "the step-3 checkpoint")
        b = subprocess.run([sys.executable, RUN_TRAIN, *args, "--max-steps", "100000"], capture_output=True,
                           text=True, env=env(), cwd=ROOT, timeout=240)
        assert a.poll() is None
    finally:
        os.killpg(a.pid, signal.SIGKILL)  # then a crash: its lock stays behind
        a_out = a.communicate()[0]
    assert f"--resume auto: no checkpoint in {out / 'checkpoints'}: starting a new run" in a_out
    assert b.returncode == 2 and "Traceback" not in b.stderr, b.stdout + b.stderr
    assert b.stderr.strip().count("\n") == 0, b.stderr  # one line
    assert re.fullmatch(rf"error: {re.escape(str(out))} is in use by another run: pid {a.pid} on "
                        rf"{re.escape(socket.gethostname())}, since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(lock .*\); "
                        r"wait for it to end or use another --out-dir", b.stderr.strip())
    assert (out / LOCK_NAME).exists()
    saved = find_latest(out)[1]["step"]
    c = run([*args, "--max-steps", str(saved + 2)])
    assert f"took over the lock of pid {a.pid}, which is gone" in c.stdout
    assert f"--resume auto: continuing from {out / 'checkpoints' / f'step_{saved:08d}.pt'} (step {saved})" in c.stdout
    assert find_latest(out)[1]["step"] == saved + 2
    assert [r[0] for r in train_lines(out) if r[1] != "val"] == list(range(1, saved + 3))
    assert not (out / LOCK_NAME).exists()


def test_lock_of_another_host_is_taken_over_when_its_heartbeat_stops(tmp_path):
    path = tmp_path / LOCK_NAME
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "2026-01-01 00:00:00 UTC"}))
    with pytest.raises(UserError, match=r"in use by another run: pid 1 on elsewhere, since 2026-01-01 00:00:00 UTC "
                                        r".*taken over 5 min after its last heartbeat"):
        RunLock(tmp_path).acquire()
    old = time.time() - STALE_S - 60
    os.utime(path, (old, old))
    lock = RunLock(tmp_path)
    assert re.fullmatch(r"took over the lock of pid 1 on elsewhere, silent for \d+ s in .*", lock.acquire())
    assert json.loads(path.read_text())["pid"] == os.getpid()
    with pytest.raises(UserError, match=rf"pid {os.getpid()} on "):
        RunLock(tmp_path).acquire()  # held: refused
    lock.release()
    assert not path.exists()


def test_a_restarted_torchrun_job_takes_over_its_own_lock(tmp_path, monkeypatch):
    path = tmp_path / LOCK_NAME
    alive = os.getppid()  # the old rank 0 may still be shutting down
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": alive, "job": "j1", "restart": 0}))
    held = os.open(path, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # as its holder does
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "j2")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    with pytest.raises(UserError, match=f"pid {alive}"):
        RunLock(tmp_path).acquire()  # another job
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "j1")
    lock = RunLock(tmp_path)
    assert lock.acquire() == f"took over the lock of this torchrun job before its restart 1 in {tmp_path}"
    lock.release()
    os.close(held)


# ---- the launchers' own restarts ----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
