"""--optimizer muon --schedule wsd through run_train.py on 2 torchrun processes, sharing one uninterrupted run: kill -9
and --resume on 2 processes is bit-identical (the exact resume of torchrun jobs), resume on another layout
(2 processes -> 1) stays within 1e-5, the other optimizer is refused in one line, and --resume --max-steps extends the
WSD run by moving its decay (no lr jump). And torchrun --max-restarts=1 (the README's command) after one worker is
SIGKILLed ends with the losses and weights of the same uninterrupted run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_train_common import (
    ROOT,
    RUN_TRAIN,
    TINY,
    assert_same_weights,
    env,
    final_state,
    make_jsonl,
    run,
    run_and_kill_after,
    train_lines,
)
from tests.test_train_elastic import assert_close_lines
from tests.test_train_lifecycle import _children, _free_port, _wait_for
from tests.test_train_resume import assert_exact_resume

N = 8
MUON = ["--optimizer", "muon", "--schedule", "wsd", "--decay-frac", "0.25", "--muon-lr", "6e-3",
        "--max-steps", str(N), "--eval-every", "4", "--save-every", "4", "--num-workers", "1"]


@pytest.fixture(scope="module")
def muon_run(tmp_path_factory) -> tuple[Path, Path, str, list[str]]:
    """(the run dir of N uninterrupted steps on 2 processes, the run dir of the same run killed -9 once step 4 was
    saved then resumed on 2 processes, the resume's stdout, the flags of the run)."""
    tmp = tmp_path_factory.mktemp("muon")
    common = [*TINY, "--data", str(make_jsonl(tmp / "docs.jsonl")), *MUON]
    full, cut = tmp / "full", tmp / "cut"
    run([*common, "--out-dir", str(full)], nproc=2)
    run_and_kill_after([*common, "--out-dir", str(cut)], cut / "checkpoints" / "step_00000004.pt", nproc=2)
    # flags on --resume: the checkpoint's config is used; only the out dir is needed to find it
    p = run(["--out-dir", str(cut), "--resume", "--plot", "true"], nproc=2)  # assert_exact_resume checks the plot
    return full, cut, p.stdout, common


@pytest.mark.slow
def test_muon_kill9_resume_on_two_processes_is_bit_identical(muon_run):
    full, cut, stdout, _ = muon_run
    assert "2 processes" in stdout and "param group muon_qkv: Muon" in stdout, stdout
    assert "--schedule wsd: max_steps" not in stdout  # the same end: no lr note
    assert_exact_resume(full, cut, stdout, n=N)
    assert any("val_bpb" in r for r in (full / "metrics.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_muon_resume_on_another_layout_stays_within_1e5(muon_run):
    full = muon_run[0]
    one = full.parent / "one"
    # the checkpoint 2 processes saved at step 4, continued on one process without DataLoader workers
    run(["--resume", str(full / "checkpoints" / "step_00000004.pt"), "--out-dir", str(one), "--num-workers", "0"])
    assert_close_lines(train_lines(one), train_lines(full))


@pytest.mark.slow
def test_muon_checkpoint_refuses_adamw_in_one_line(muon_run):
    full = muon_run[0]
    p = run(["--out-dir", str(full), "--resume", "--optimizer", "adamw", "--max-steps", str(N + 2)], check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    err = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "optimizer: checkpoint muon, now adamw" in err[0], p.stderr


@pytest.mark.slow
def test_extending_a_wsd_run_moves_the_decay_without_a_jump(muon_run):
    full = muon_run[0]
    longer = full.parent / "longer"
    p = run(["--resume", str(full / "checkpoints" / "step_00000004.pt"), "--out-dir", str(longer),
             "--max-steps", "12", "--eval-every", "0"])
    assert "max_steps 8 -> 12" in p.stdout and "decay now runs over steps 9-12" in p.stdout, p.stdout
    lrs = {r[0]: r[2] for r in train_lines(longer) if r[1] != "val"}
    peak = lrs[4]
    # record s holds update s-1's lr: the decay starts with update 9 (at the peak), so record 11 is the first below
    assert all(lrs[s] == peak for s in range(5, 11)) and lrs[12] < lrs[11] < peak


@pytest.mark.slow
def test_torchrun_restart_after_a_worker_is_killed_continues_exactly(muon_run, tmp_path):
    """torchrun --max-restarts=1 with c10d rendezvous: one worker SIGKILLed after a checkpoint; the restarted group
    connects, continues from the newest checkpoint with the same command line, and ends with the losses and weights
    of the uninterrupted run."""
    full, common, out = muon_run[0], muon_run[3], tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2", "--max-restarts=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}", f"--rdzv-id=restart-{os.getpid()}",
           RUN_TRAIN, *common, "--out-dir", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(), cwd=ROOT,
                         start_new_session=True)
    try:
        _wait_for((out / "checkpoints" / "step_00000004.pt").exists, p, "the step-4 checkpoint", timeout=240)
        ranks = {k: open(f"/proc/{k}/environ", "rb").read().split(b"\0") for k in _children(p.pid)}
        os.kill(next(k for k, e in ranks.items() if b"RANK=1" in e), signal.SIGKILL)
        stdout = p.communicate(timeout=300)[0]
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 0, stdout[-5000:]
    m = re.search(rf"torchrun restart 1: continuing from {re.escape(str(out))}/checkpoints/step_0+(\d+).pt", stdout)
    assert m and int(m[1]) >= 4, stdout[-5000:]
    assert train_lines(out) == train_lines(full)
    assert_same_weights(final_state(out)["model"], final_state(full)["model"])
