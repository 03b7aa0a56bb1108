"""Elastic determinism through the real entry point, in one scenario: a run killed -9 and resumed on other layouts
(1 process x 2 workers -> 2 processes x 1 worker -> 1 process, no worker, micro-batch 3) past an epoch has the same
global batches at every step as an uninterrupted run, shown by the document log (--log-docs), and its losses (nothing
lost or repeated). Each layout thus gives the batches of the others; a clean stop and resume with a larger --max-steps
is covered by test_train_muon.py and test_train_resume.py."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from gpt2stream.data.doclog import read_log
from tests.test_train_common import TINY, make_jsonl, run, run_and_kill_after, train_lines


def docs_by_step(run_dir: Path) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for r in read_log(run_dir):
        out[r["step"]] += r["ids"]
    return {s: sorted(v) for s, v in out.items()}


def steps_only(lines: list[tuple]) -> list[tuple]:
    """Training lines (a run cut into segments also evaluates at the end of each one)."""
    return [r for r in lines if r[1] != "val"]


def assert_close_lines(a: list[tuple], b: list[tuple], tol: float = 1e-5) -> None:
    assert [r[:2] if r[1] == "val" else r[:1] for r in a] == [r[:2] if r[1] == "val" else r[:1] for r in b]
    for p, q in zip(a, b, strict=True):
        vals_p, vals_q = (p[2:] if p[1] == "val" else p[1:]), (q[2:] if q[1] == "val" else q[1:])
        for u, v in zip(vals_p, vals_q, strict=True):
            assert abs(u - v) <= tol * max(1.0, abs(u)), (p, q)


def _epoch_checks(run_dir: Path, data: Path, val_docs: int = 20) -> None:
    ids = [json.loads(line)["id"] for line in data.read_text().splitlines()]
    val, training = set(ids[:val_docs]), ids[val_docs:]
    per_epoch: dict[int, Counter] = defaultdict(Counter)
    for r in read_log(run_dir):
        per_epoch[r["epoch"]].update(r["ids"])
    assert sorted(per_epoch[0]) == sorted(training) and set(per_epoch[0].values()) == {1}, "epoch 0: once each"
    assert per_epoch[1] and set(per_epoch[1].values()) == {1}, "epoch 1: none twice"
    assert not val & set().union(*per_epoch.values()), "a validation document was trained"


# a small file: an epoch is ~8 steps of 1024 tokens (32 blocks: 16 canonical streams); 20 steps cross into epoch 2.
# Constant lr: stopping at --max-steps 6 and resuming to 12, then 20, is the schedule of one run to 20.
SMALL = ["--total-batch-size", "1024", "--eval-every", "0", "--save-every", "4", "--log-docs", "--min-lr", "3e-3"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path]:
    """(the data file, the run dir of one uninterrupted 20-step run on 1 process x 2 workers), which the resume test
    below continues against."""
    tmp = tmp_path_factory.mktemp("elastic")
    data = make_jsonl(tmp / "docs.jsonl", n_docs=100)
    full = tmp / "full"
    run([*TINY, "--data", str(data), *SMALL, "--num-workers", "2", "--max-steps", "20", "--out-dir", str(full)])
    assert sorted(docs_by_step(full)) == list(range(1, 21)) and max(r["epoch"] for r in read_log(full)) >= 1
    return data, full


@pytest.mark.slow
def test_resume_across_layouts_after_kill_9(uninterrupted, tmp_path):
    data, full = uninterrupted
    common = [*TINY, "--data", str(data), *SMALL, "--max-steps", "20"]
    cut = tmp_path / "cut"
    # killed once step 4 is saved (it may have logged later steps: they are replaced on resume)
    run_and_kill_after([*common, "--num-workers", "2", "--out-dir", str(cut)], cut / "checkpoints" / "step_00000004.pt")
    run_and_kill_after(["--out-dir", str(cut), "--resume", "--num-workers", "1"],
                       cut / "checkpoints" / "step_00000012.pt", nproc=2)
    run(["--out-dir", str(cut), "--resume", "--num-workers", "0", "--batch-size", "3"])
    assert docs_by_step(cut) == docs_by_step(full)
    ref = docs_by_step(full)
    assert sorted(ref) == list(range(1, 21)) and all(ref[s] for s in ref)
    lines = read_log(cut)  # steps 5-12 were logged by both ranks of the 2-process segment
    assert {r["rank"] for r in lines} == {0, 1} and all(set(r) >= {"step", "rank", "epoch", "ids"} for r in lines)
    assert {r["rank"] for r in lines if 5 <= r["step"] <= 12} == {0, 1}
    assert_close_lines(train_lines(cut), train_lines(full))
    _epoch_checks(cut, data)


@pytest.mark.slow
def test_checkpoint_from_before_canonical_streams_is_refused_in_one_line(uninterrupted, tmp_path):
    """A checkpoint whose data state is the round-robin loader's (format /1, before canonical streams) is refused by
    run_train.py --resume in one line, before anything is built, and the checkpoint is left as it was."""
    import shutil

    import torch

    out = Path(shutil.copytree(uninterrupted[1], tmp_path / "run"))  # a copy of the module's run: no training here
    ckpt = sorted((out / "checkpoints").glob("step_*.pt"))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    for r in state["ranks"]:  # what the loader before canonical streams saved
        r["loader"] = {"format": "gpt2stream.data.TrainLoader/1", "fingerprint": {"world_size": 1, "num_workers": 0},
                       "next_worker": 0, "workers": [{"epoch": 0, "cursor": 0, "row": 0, "window": 0, "pos": 3}]}
    torch.save(state, ckpt)
    before = ckpt.read_bytes()
    p = run(["--out-dir", str(out), "--resume", "--max-steps", "24"], check=False)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(errors) == 1, p.stderr[-3000:]
    assert "written before canonical streams" in errors[0] and "start a new run" in errors[0], errors[0]
    assert ckpt.read_bytes() == before and sorted((out / "checkpoints").glob("step_*.pt"))[-1] == ckpt
