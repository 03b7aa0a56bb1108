"""--optimizer muon --schedule wsd through run_train.py, sharing one uninterrupted run: kill -9 and --resume is
bit-identical, resume on another layout (2 processes -> 1) stays within 1e-5, the other optimizer is refused in one
line, and --resume --max-steps extends the WSD run by moving its decay (no lr jump)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_train_common import (
    TINY,
    assert_same_weights,
    final_state,
    make_jsonl,
    run,
    run_and_kill_after,
    train_lines,
)
from tests.test_train_elastic import assert_close_lines

N = 8
MUON = ["--optimizer", "muon", "--schedule", "wsd", "--decay-frac", "0.25", "--muon-lr", "6e-3",
        "--max-steps", str(N), "--eval-every", "4", "--save-every", "4", "--num-workers", "0"]


@pytest.fixture(scope="module")
def muon_run(tmp_path_factory) -> tuple[Path, list[str]]:
    """(the run dir of N uninterrupted steps, the flags it was started with)."""
    tmp = tmp_path_factory.mktemp("muon")
    common = [*TINY, "--data", str(make_jsonl(tmp / "docs.jsonl")), *MUON]
    run([*common, "--out-dir", str(tmp / "full")])
    return tmp / "full", common


def _optimizer_states(state: dict) -> list[dict]:
    return [s["state"] for s in state["optimizer"]["chained"]]


@pytest.mark.slow
def test_muon_kill9_resume_is_bit_identical(muon_run):
    full, common = muon_run
    cut = full.parent / "cut"
    run_and_kill_after([*common, "--out-dir", str(cut)], cut / "checkpoints" / "step_00000004.pt")
    p = run(["--out-dir", str(cut), "--resume"])
    assert "resumed from" in p.stdout and "--schedule wsd: max_steps" not in p.stdout  # the same end: no lr note
    assert train_lines(cut) == train_lines(full)
    a, b = final_state(full), final_state(cut)
    assert_same_weights(a["model"], b["model"])
    for sa, sb in zip(_optimizer_states(a), _optimizer_states(b), strict=True):
        assert sa.keys() == sb.keys() and sa
        for k in sa:
            assert_same_weights(sa[k], sb[k])
    assert any("val_bpb" in r for r in (full / "metrics.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_muon_resume_on_another_layout_stays_within_1e5(muon_run):
    full, common = muon_run
    two = full.parent / "two"
    run_and_kill_after([*common, "--out-dir", str(two), "--num-workers", "1"], two / "checkpoints" /
                       "step_00000004.pt", nproc=2)
    run(["--out-dir", str(two), "--resume", "--num-workers", "0"])  # one process now
    assert_close_lines(train_lines(two), train_lines(full))


@pytest.mark.slow
def test_muon_checkpoint_refuses_adamw_in_one_line(muon_run):
    full, _ = muon_run
    p = run(["--out-dir", str(full), "--resume", "--optimizer", "adamw", "--max-steps", str(N + 2)], check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    err = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "optimizer: checkpoint muon, now adamw" in err[0], p.stderr


@pytest.mark.slow
def test_extending_a_wsd_run_moves_the_decay_without_a_jump(muon_run):
    full, _ = muon_run
    longer = full.parent / "longer"
    p = run(["--resume", str(full / "checkpoints" / "step_00000004.pt"), "--out-dir", str(longer),
             "--max-steps", "12", "--eval-every", "0"])
    assert "max_steps 8 -> 12" in p.stdout and "decay now runs over steps 9-12" in p.stdout, p.stdout
    lrs = {r[0]: r[2] for r in train_lines(longer) if r[1] != "val"}
    peak = lrs[4]
    # record s holds update s-1's lr: the decay starts with update 9 (at the peak), so record 11 is the first below
    assert all(lrs[s] == peak for s in range(5, 11)) and lrs[12] < lrs[11] < peak
