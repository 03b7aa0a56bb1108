"""Failure handling through the real entry point: incompatible resume, corrupt newest checkpoint, NaN loss, data-stream
failure, disk full while saving, SIGTERM / Ctrl-C."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt2stream.checkpoint import find_latest, list_checkpoints, read_checkpoint
from tests.test_train_common import (
    ROOT,
    RUN_TRAIN,
    TINY,
    assert_same_weights,
    env,
    final_state,
    make_jsonl,
    run,
    train_lines,
)


def _args(tmp_path, *extra: str) -> list[str]:
    data = tmp_path / "docs.jsonl"
    if not data.exists():
        make_jsonl(data, n_docs=300)
    return [*TINY, "--data", str(data), "--num-workers", "0", "--eval-every", "0", *extra]


def _run_patched(patch: str, args: list[str], **kw) -> subprocess.CompletedProcess:
    """run_train.py's main after ``patch`` (python source) ran in the same process: fault injection without any
    test hook in the product."""
    script = f"import sys\n{patch}\nimport run_train\nrun_train.main(sys.argv[1:])\n"
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env(),
                          cwd=ROOT, timeout=240, **kw)


def _ckpt_steps(run_dir) -> list[int]:
    return [s for s, _ in list_checkpoints(run_dir / "checkpoints")]


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory) -> Path:
    """A run to step 4 that saved at steps 2 and 4; a test copies it (_copy_run) before changing anything."""
    tmp = tmp_path_factory.mktemp("four_steps")
    out = tmp / "run"
    run(_args(tmp, "--max-steps", "4", "--save-every", "2", "--out-dir", str(out)))
    return out


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def test_resume_refuses_incompatible_config_naming_fields(four_steps, tmp_path):
    out = _copy_run(four_steps, tmp_path)
    before = (out / "checkpoints" / "step_00000004.pt").read_bytes()
    p = run(["--out-dir", str(out), "--resume", "--n-embd", "64", "--seq-len", "16"], check=False)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot resume from"), p.stderr
    assert "n_embd: checkpoint 32, now 64" in err[0] and "seq_len: checkpoint 32, now 16" in err[0]
    assert "Traceback" not in p.stderr
    assert (out / "checkpoints" / "step_00000004.pt").read_bytes() == before
    # a fresh run into a directory with checkpoints is refused too
    p = run(_args(tmp_path, "--max-steps", "1", "--out-dir", str(out)), check=False)
    assert p.returncode == 2 and "already has checkpoints; continue it with --resume" in p.stderr
    # and --resume where there is nothing
    p = run(["--out-dir", str(tmp_path / "empty"), "--resume"], check=False)
    assert p.returncode == 2 and "no checkpoint in" in p.stderr


@pytest.mark.slow
def test_corrupt_newest_checkpoint_falls_back_to_previous(four_steps, tmp_path):
    out = _copy_run(four_steps, tmp_path)
    newest = out / "checkpoints" / "step_00000004.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # torn write / bit rot
    p = run(["--out-dir", str(out), "--resume", "--max-steps", "5"])
    assert "warning: checkpoint" in p.stderr and "step_00000004.pt is unreadable" in p.stderr
    assert "resumed from" in p.stdout and "step_00000002.pt at step 2" in p.stdout
    assert final_state(out)["step"] == 5


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    patch = (
        "from gpt2stream.model import GPT\n"
        "_orig, _n = GPT.forward, [0]\n"
        "def forward(self, idx, targets=None, **kw):\n"
        "    logits, loss = _orig(self, idx, targets, **kw)\n"
        "    if targets is not None and self.training:\n"
        "        _n[0] += 1\n"
        "        if _n[0] > 4:\n"  # 2 micro-steps per step: steps 1-2 fine, step 3 diverges
        "            loss = loss * float('nan')\n"
        "    return logits, loss\n"
        "GPT.forward = forward\n"
    )
    p = _run_patched(patch, _args(tmp_path, "--max-steps", "6", "--save-every", "2", "--out-dir", str(out)))
    assert p.returncode == 4, p.stderr
    assert "error: the training loss became nan at step 3" in p.stderr
    assert "Last good checkpoint: step 2" in p.stderr
    assert _ckpt_steps(out) == [2]
    read_checkpoint(out / "checkpoints" / "step_00000002.pt")
    assert [r[0] for r in train_lines(out)] == [1, 2]


@pytest.mark.slow
def test_data_stream_failure_saves_and_resumes_exactly(four_steps, tmp_path):
    # the uninterrupted reference is the module's run (its checkpoints every 2 steps do not change its training);
    # here nothing saves but the failure itself
    full, cut = four_steps, tmp_path / "cut"
    args = _args(four_steps.parent, "--max-steps", "4", "--save-every", "0")
    patch = (
        "from gpt2stream.data import TrainLoader\n"
        "from gpt2stream.errors import DataStreamError\n"
        "_orig, _n = TrainLoader.__next__, [0]\n"
        "def nxt(self):\n"
        "    _n[0] += 1\n"
        "    if _n[0] == 6:\n"  # the second micro-batch of step 3
        "        raise DataStreamError('network: simulated failure after 10 retries')\n"
        "    return _orig(self)\n"
        "TrainLoader.__next__ = nxt\n"
    )
    p = _run_patched(patch, [*args, "--out-dir", str(cut)])
    assert p.returncode == 3, p.stderr
    assert "network: simulated failure" in p.stderr
    assert "continue with: python run_train.py --out-dir" in p.stdout and "--resume" in p.stdout
    assert _ckpt_steps(cut) == [2]
    run(["--out-dir", str(cut), "--resume"])
    assert train_lines(cut) == train_lines(full)
    assert_same_weights(final_state(cut)["model"], final_state(full)["model"])


@pytest.mark.slow
def test_disk_full_while_saving_keeps_previous_checkpoint(four_steps, tmp_path):
    out = _copy_run(four_steps, tmp_path)
    good = (out / "checkpoints" / "step_00000004.pt").read_bytes()
    size = len(good)

    def limit_file_size():  # writes past this size fail with EFBIG, like a disk filling up mid-write
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 3, size // 3))

    cmd = [sys.executable, RUN_TRAIN, "--out-dir", str(out), "--resume", "--max-steps", "8"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=240,
                       preexec_fn=limit_file_size)
    assert p.returncode == 5, p.stdout + p.stderr
    assert "error: could not write the checkpoint for step 6" in p.stderr
    assert "the previous checkpoint is intact" in p.stderr
    assert _ckpt_steps(out) == [2, 4]
    assert (out / "checkpoints" / "step_00000004.pt").read_bytes() == good
    assert not [f for f in (out / "checkpoints").iterdir() if f.name.startswith(".tmp")]
    # with space again, the run continues from step 4
    p = run(["--out-dir", str(out), "--resume", "--max-steps", "8"])
    assert "step_00000004.pt at step 4" in p.stdout
    assert final_state(out)["step"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,group", [(signal.SIGTERM, 143, True), (signal.SIGINT, 130, True),
                                            (signal.SIGHUP, 129, True), (signal.SIGUSR1, 138, False)])
def test_signal_saves_then_exits(tmp_path, sig, code, group):
    """SIGTERM to the whole process group (torchrun's way: the DataLoader worker dies from it too), SIGINT or SIGHUP
    to the group (Ctrl-C, a closed terminal), or SIGUSR1 to the trainer alone while its worker lives (Slurm's early
    warning): a checkpoint at the next step boundary, then a clean exit. SIGTERM to the trainer alone (a scheduler's
    preemption) is test_train_stops.py's signal test, which also checks the due evaluation is skipped."""
    out = tmp_path / "run"
    args = _args(tmp_path, "--max-steps", "100000", "--save-every", "0", "--num-workers", "1", "--out-dir", str(out))
    p = subprocess.Popen([sys.executable, RUN_TRAIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env(), cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists() or (out / "metrics.jsonl").read_text().count('"loss"') < 3:
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.05)
        os.killpg(p.pid, sig) if group else p.send_signal(sig)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == code, stdout + stderr
    assert f"stopped by {sig.name} after step" in stdout
    assert "Traceback" not in stderr
    step = int(stdout.split(f"stopped by {sig.name} after step ")[1].split(";")[0])
    path, state = find_latest(out)
    assert state["step"] == step >= 2
    assert [r[0] for r in train_lines(out)] == list(range(1, step + 1))
