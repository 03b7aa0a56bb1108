"""Spill directories that a SIGKILLed process left in $TMPDIR are removed by the next process that spills; a live
owner's, another user's, another machine's (or pid namespace's), a reused pid's owner check, and anything not named
exactly like ours are handled as gpt2stream/data/unitspill.py says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from gpt2stream.data import unitspill
from gpt2stream.data.sources.base import Row
from gpt2stream.data.unitspill import UnitSpill, place_tag, remove_stale_spills, spill_prefix, start_ticks
from tests.test_train_common import ROOT, env

ROWS = [Row(f"text {i}", f"id-{i}") for i in range(5)]


def _killed_spiller(tmp) -> str:
    """The spill directory of a process that spilled a unit and was then killed with SIGKILL."""
    code = textwrap.dedent(f"""
        import sys, tempfile, time
        tempfile.tempdir = {str(tmp)!r}
        from gpt2stream.data.sources.base import Row
        from gpt2stream.data.unitspill import UnitSpill
        kept = UnitSpill().spill(3, [Row("a", "1"), Row("b", "2")], 0)
        print(kept.path, flush=True)
        time.sleep(120)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    path = p.stdout.readline().strip()
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    p.stdout.close()
    assert os.path.isfile(path), path
    return os.path.dirname(path)


def test_the_next_spill_removes_a_killed_processs_directory_and_nothing_else(tmp_path, monkeypatch):
    dead = _killed_spiller(tmp_path)
    dead_pid = int(os.path.basename(dead).split("-")[2])
    parent = os.getppid()  # alive, and not this process
    live = tmp_path / f"{spill_prefix(parent)}live"
    reused = tmp_path / f"gpt2stream-units-{parent}-{start_ticks(parent) + 1}-{place_tag()}-reused"
    elsewhere = tmp_path / f"gpt2stream-units-{dead_pid}-0-{'0' * 8 if place_tag() != '0' * 8 else '1' * 8}-x"
    old_style = tmp_path / "gpt2stream-units-k2j3h4"
    not_a_dir = tmp_path / f"{spill_prefix(dead_pid)}file"
    for d in (live, reused, elsewhere, old_style):
        d.mkdir()
        (d / "1.rows").write_bytes(b"x")
    not_a_dir.write_bytes(b"x")

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    spill = UnitSpill()
    kept = spill.spill(9, ROWS, 1)
    assert kept[1:5] == ROWS[1:]
    assert not os.path.exists(dead) and not reused.exists()
    assert live.exists() and elsewhere.exists() and old_style.exists() and not_a_dir.exists()
    mine = os.path.dirname(kept.path)
    assert os.path.basename(mine).startswith(spill_prefix())
    spill.close()
    assert not os.path.exists(mine)


def test_another_users_directories_are_never_removed(tmp_path, monkeypatch):
    dead = _killed_spiller(tmp_path)
    monkeypatch.setattr(unitspill.os, "getuid", lambda: os.stat(dead).st_uid + 1)
    assert remove_stale_spills(str(tmp_path)) == []
    assert os.path.isdir(dead)
    monkeypatch.undo()
    assert remove_stale_spills(str(tmp_path)) == [dead]
