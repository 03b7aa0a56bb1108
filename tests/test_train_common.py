"""Helpers shared by the trainer tests (tiny runs through the real entry point), plus unit tests of the trainer's
small pure functions."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from config import PRESETS
from gpt2stream.config import load_config
from gpt2stream.errors import UserError
from gpt2stream.train import grad_accum_steps, incompatible_fields
from gpt2stream.units import hms

ROOT = Path(__file__).resolve().parent.parent
RUN_TRAIN = str(ROOT / "run_train.py")

# A model and batch small enough that a step takes tens of milliseconds on one CPU core.
TINY = ["--preset", "tiny", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
        "--seq-len", "32", "--batch-size", "4", "--total-batch-size", "256", "--lr", "3e-3", "--min-lr", "3e-4",
        "--warmup-steps", "2", "--eval-tokens", "256", "--val-docs", "20", "--shuffle-buffer", "16",
        "--sample-every", "0", "--log-every", "1", "--plot", "false"]  # the plot's own tests draw it

WORDS = ("river stone light garden winter market letter engine forest window candle harbor silver morning paper "
         "mountain bridge station castle ocean").split()


def make_jsonl(path: Path, n_docs: int = 400, seed: int = 0) -> Path:
    """Deterministic pseudo-text documents of varying length, one JSON object per line."""
    import random

    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n_docs):
            n = rng.randint(20, 120)
            text = " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."
            f.write(json.dumps({"id": f"doc{i}", "text": text}) + "\n")
    return path


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("OMP_NUM_THREADS", "1")  # the same math in every run; two ranks on two cores
    e["MPLBACKEND"] = "Agg"
    return e


def torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


def run(args: list[str], nproc: int = 1, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    cmd = (torchrun(nproc) if nproc > 1 else [sys.executable]) + [RUN_TRAIN, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=timeout, cwd=ROOT)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nSTDOUT:\n{p.stdout[-3000:]}\nSTDERR:\n{p.stderr[-5000:]}")
    return p


def run_and_kill_after(args: list[str], ckpt: Path, nproc: int = 1, timeout: float = 240) -> None:
    """Start a run, wait until ``ckpt`` exists (it appears atomically, complete), then SIGKILL the whole process
    group (torchrun and its workers, DataLoader workers): a machine crash, as far as the run can tell."""
    cmd = (torchrun(nproc) if nproc > 1 else [sys.executable]) + [RUN_TRAIN, *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env(), cwd=ROOT,
                         start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not ckpt.exists():
            if p.poll() is not None:
                raise AssertionError(f"run ended (exit {p.returncode}) before {ckpt.name}:\n{p.stdout.read()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {ckpt.name} after {timeout} s")
            time.sleep(0.01)
    finally:
        kill_tree(p.pid)
        p.wait()
        p.stdout.close()


def _children() -> dict[int, list[int]]:
    """{parent pid: child pids} from /proc."""
    out: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        out.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant, as a machine crash would. torchrun starts its workers in sessions of
    their own, so killing torchrun's process group leaves them running (they used to die only of the closed stdout
    pipe, which training now survives). The tree is stopped first, so nobody is reparented while it is walked."""
    found, todo = [], [pid]
    while todo:
        q = todo.pop()
        found.append(q)
        with contextlib.suppress(ProcessLookupError):
            os.kill(q, signal.SIGSTOP)
        todo.extend(_children().get(q, []))
    for q in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(q, signal.SIGKILL)


def train_lines(run_dir: Path, keys=("step", "loss", "lr", "grad_norm")) -> list[tuple]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "loss" in r:
            out.append(tuple(r[k] for k in keys))
        elif "val_loss" in r:
            out.append((r["step"], "val", r["val_loss"]))
    return out


def final_state(run_dir: Path) -> dict:
    from gpt2stream.checkpoint import find_latest

    path, state = find_latest(run_dir)
    return state


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


# ---- unit tests of the pure helpers ------------------------------------------------------------------------------

def test_grad_accum_steps():
    assert grad_accum_steps(524288, 16, 1024, 8) == 4
    assert grad_accum_steps(2048, 8, 128, 1) == 2
    with pytest.raises(UserError, match=r"not divisible by batch_size x seq_len x processes = 8 x 128 x 3 = 3072"):
        grad_accum_steps(2048, 8, 128, 3)


def test_incompatible_fields_names_each_field():
    a = load_config(["--preset", "tiny", "--vocab-size", "50257"], PRESETS)
    b = load_config(["--preset", "tiny", "--vocab-size", "50257", "--n-embd", "64", "--seq-len", "64"], PRESETS)
    diff = incompatible_fields(a, b, "tiktoken:r50k_base", "bpe:abc")
    assert diff == ["n_embd: checkpoint 128, now 64", "seq_len: checkpoint 128, now 64",
                    "tokenizer: checkpoint tiktoken:r50k_base, now bpe:abc"]
    assert incompatible_fields(a, a, "x", "x") == []


def test_hms_formats_the_eta():
    assert hms(3725.2) == "1:02:05"
    assert hms(59) == "0:00:59"
    assert hms(float("inf")) == "?"
