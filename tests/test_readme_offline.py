"""A fresh clone with no network does its whole job: the README's offline-demo block trains and samples, and the
tests pass with no ../shared beside the checkout and an empty tiktoken cache (nothing skipped, as under CI)."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- offline-demo -->"


def offline_demo_commands(readme: str) -> list[list[str]]:
    """The commands of the code fence right after the marker line, one per line."""
    m = re.search(re.escape(MARKER) + r"\n```[a-z]*\n(.*?)\n```", readme, re.S)
    assert m, f"README.md has no code fence directly after {MARKER}"
    return [shlex.split(line) for line in m.group(1).splitlines() if line.strip()]


def test_offline_demo_block_parses():
    cmds = offline_demo_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert [c[:2] for c in cmds] == [["python", "run_train.py"], ["python", "run_sample.py"]]
    assert "--data" in cmds[0] and cmds[0][cmds[0].index("--data") + 1] == "demo" and "--prompt" in cmds[1]


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """``git clone`` of the committed HEAD, alone in a temporary directory (no ../shared beside it)."""
    dest = tmp_path_factory.mktemp("fresh") / "gpt2stream"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(dest)], check=True, timeout=120,
                   capture_output=True)
    assert not (dest.parent / "shared").exists()
    return dest


def offline_env(clone: Path, tmp: Path) -> dict[str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    empty = tmp / "empty-tiktoken-cache"
    empty.mkdir(exist_ok=True)
    e = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TIKTOKEN", "DATA_GYM"))}
    e.update(PYTHONPATH=str(clone), HF_HUB_OFFLINE="1", HF_ENDPOINT=dead, TIKTOKEN_CACHE_DIR=str(empty),
             HF_HOME=str(tmp / "hf_home"), MPLBACKEND="Agg", GPT2STREAM_TEST_HIDE_SHARED="1")
    return e


@pytest.mark.slow
def test_offline_demo_block_runs_in_a_fresh_clone(fresh_clone, tmp_path):
    cmds = offline_demo_commands((fresh_clone / "README.md").read_text(encoding="utf-8"))
    env = offline_env(fresh_clone, tmp_path)
    outputs = []
    for cmd in cmds:
        args = [sys.executable, *cmd[1:]]
        if cmd[1] == "run_train.py":  # shortened: the same run, fewer steps and a smaller validation set
            args += ["--max-steps", "4", "--eval-every", "2", "--sample-every", "4", "--eval-tokens", "2048",
                     "--val-docs", "20"]
        p = subprocess.run(args, cwd=fresh_clone, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, f"{cmd}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        outputs.append(p.stdout)
    run = fresh_clone / "runs" / "demo"
    assert (run / "metrics.jsonl").read_text().count("\n") >= 4
    assert (run / "loss_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run / "checkpoints").glob("*.pt"))
    assert len(outputs[1].strip()) > 10  # the sample: the prompt's continuation


@pytest.mark.slow
def test_tests_pass_in_a_fresh_clone_with_no_assets_beside_it(fresh_clone, tmp_path):
    """The tokenizer and demo-corpus tests, run from the clone with CI=true: any skip for a missing asset fails."""
    env = offline_env(fresh_clone, tmp_path)
    env["CI"] = "true"
    files = ["tests/test_tokenizer_offline.py", "tests/test_tokenizer_encoding.py", "tests/test_tokenizer_bpe.py",
             "tests/test_tokenizer_files.py"]
    # -n 0: in one process; this test already runs beside the suite's other workers
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-m", "not slow",
                        *files],
                       cwd=fresh_clone, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert " passed" in p.stdout and "skipped" not in p.stdout, p.stdout[-2000:]
