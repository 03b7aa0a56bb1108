"""Filesystem and environment mistakes through the real entry points: one ``error:`` line, exit 2, no traceback,
nothing written. Each fails in seconds, before any data is read or any model built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_train_common import ROOT, RUN_TRAIN, env

SYSFS_DIR = Path("/sys/fs/gpt2stream-test")  # sysfs refuses to create entries, even for root


def readonly_prefix(tmp_path: Path) -> tuple[list[str], Path]:
    """(command prefix, directory): a directory on a read-only filesystem.

    Tests run as root, and root writes through chmod 555, so permissions prove nothing. Where a private mount
    namespace is allowed, the command runs in one with a read-only tmpfs mounted on a fresh directory (EROFS, as a
    read-only disk gives); elsewhere the directory is one under /sys/fs, which no one can create entries in (EPERM)."""
    d = tmp_path / "ro"
    d.mkdir()
    mount = f'mount -t tmpfs -o ro tmpfs "{d}"'
    try:
        probe = subprocess.run(["unshare", "-m", "sh", "-c", f'{mount} && touch "{d}/x"'], capture_output=True,
                               text=True, timeout=30)
        if "Read-only" in probe.stderr:
            return ["unshare", "-m", "sh", "-c", f'{mount} && exec "$0" "$@"'], d
    except (OSError, subprocess.TimeoutExpired):
        pass
    return [], SYSFS_DIR


def run_cmd(cmd: list[str], extra_env: dict[str, str] | None = None, prefix: list[str] | None = None):
    e = env()
    e.update(extra_env or {})
    return subprocess.run([*(prefix or []), *cmd], capture_output=True, text=True, env=e, cwd=ROOT, timeout=180)


def one_error_line(p: subprocess.CompletedProcess) -> str:
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    assert len(err) == 1 and err[0].startswith("error: "), p.stderr[-3000:]
    return err[0]


def assert_one_line(p: subprocess.CompletedProcess, *fragments: str) -> None:
    line = one_error_line(p)
    for f in fragments:
        assert f in line, line


TRAIN = [sys.executable, RUN_TRAIN, "--preset", "tiny", "--max-steps", "1"]


@pytest.mark.parametrize("case", ["file", "under-a-file", "name-too-long", "read-only"])
def test_out_dir_mistakes(tmp_path, case):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    prefix: list[str] = []
    out, fragments = {  # the run-directory lock or the writability check, whichever meets the path first
        "file": (afile, ("is a file, not a directory", "File exists")),
        "under-a-file": (afile / "run", (f"{afile} is a file", "Not a directory")),
        "name-too-long": (tmp_path / ("x" * 300) / "run", ("longer than this filesystem allows", "File name too long")),
        "read-only": (None, ("cannot be written", "Read-only file system", "Operation not permitted")),
    }[case]
    if out is None:
        prefix, ro = readonly_prefix(tmp_path)
        out = ro / "run"
    data = tmp_path / "none.jsonl"  # never read: the out-dir is refused first
    before = sorted(tmp_path.rglob("*"))
    p = run_cmd([*TRAIN, "--data", str(data), "--out-dir", str(out)], prefix=prefix)
    line = one_error_line(p)
    assert "--out-dir" in line and "choose" in line and any(f in line for f in fragments), line
    assert afile.read_text() == "mine\n" and sorted(tmp_path.rglob("*")) == before


def test_export_to_a_read_only_place(tmp_path):
    prefix, ro = readonly_prefix(tmp_path)
    p = run_cmd([sys.executable, "-m", "gpt2stream.export", str(tmp_path), str(ro / "hf")], prefix=prefix)
    assert_one_line(p, "OUT_DIR", "cannot be written")


@pytest.mark.parametrize("endpoint", ["garbage", "localhost:8080", "http://", "ftp://mirror.example"])
@pytest.mark.parametrize("entry", ["run_train", "train_tokenizer"])
def test_hf_endpoint_that_is_not_a_url(tmp_path, endpoint, entry):
    cmd = {"run_train": [*TRAIN, "--out-dir", str(tmp_path / "run")],
           "train_tokenizer": [sys.executable, str(ROOT / "train_tokenizer.py"), "--vocab-size", "300",
                               "--max-docs", "10", "--out", str(tmp_path / "tok.json")]}[entry]
    p = run_cmd(cmd, {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0"})
    assert_one_line(p, f"HF_ENDPOINT={endpoint!r}", "http:// or https://")
    assert not list(tmp_path.glob("run/checkpoints/*")) and not (tmp_path / "tok.json").exists()
