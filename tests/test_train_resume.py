"""Exact resume: N uninterrupted steps == k steps, kill -9, --resume to N (losses and bit-identical weights). One
process here; on 2 torchrun processes (with Muon) in test_train_muon.py."""

from __future__ import annotations

import json
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

N = 10


def _exact_resume_runs(tmp_path, nproc: int, workers: int, extra: list[str] = ()) -> tuple[Path, Path, str]:
    """(full, cut, the resume's stdout): N uninterrupted steps, and k steps, kill -9, --resume to N."""
    data = make_jsonl(tmp_path / "docs.jsonl")
    common = [*TINY, "--data", str(data), "--num-workers", str(workers), "--max-steps", str(N), "--eval-every", "3",
              "--save-every", "4", *extra]
    full, cut = tmp_path / "full", tmp_path / "cut"
    run([*common, "--out-dir", str(full)], nproc=nproc)
    run_and_kill_after([*common, "--out-dir", str(cut)], cut / "checkpoints" / "step_00000004.pt", nproc=nproc)
    # flags on --resume: the checkpoint's config is used; only the out dir is needed to find it
    p = run(["--out-dir", str(cut), "--resume", "--plot", "true"], nproc=nproc)  # the resumed run draws the plot
    return full, cut, p.stdout


def optimizer_states(state: dict) -> list[dict]:
    """The per-parameter state dicts of a checkpoint's optimizer (one, or one per optimizer chained by Muon)."""
    opt = state["optimizer"]
    return [s["state"] for s in opt["chained"]] if "chained" in opt else [opt["state"]]


def assert_exact_resume(full: Path, cut: Path, stdout: str, n: int = N) -> None:
    resumed_at = int(stdout.split("resumed from ")[1].split(" at step ")[1].split()[0])
    assert resumed_at < n, stdout
    assert train_lines(cut) == train_lines(full)
    assert len([r for r in train_lines(full) if r[1] != "val"]) == n
    a, b = final_state(full), final_state(cut)
    assert a["step"] == b["step"] == n
    assert_same_weights(a["model"], b["model"])
    for sa, sb in zip(optimizer_states(a), optimizer_states(b), strict=True):
        assert sa.keys() == sb.keys() and sa
        for k in sa:
            assert_same_weights(sa[k], sb[k])
    # --plot false (TINY) drew none; the resume with --plot true draws the whole run's history
    assert not (full / "loss_plot.png").exists() and (cut / "loss_plot.png").stat().st_size > 1000


# plateau: every evaluation (steps 3, 6, 9, 10) after the first fails a 50% improvement bar -> the lr halves
PLATEAU = ["--schedule", "plateau", "--warmup-steps", "0", "--plateau-patience", "1", "--plateau-threshold", "0.5",
           "--plateau-cooldown", "0", "--plateau-window", "1"]


@pytest.fixture(scope="module")
def one_process_resume(tmp_path_factory) -> tuple[Path, Path, str]:
    """One process with 2 DataLoader workers, the plateau schedule and dropout: run straight, and cut by kill -9
    then resumed; the tests below check different things of the same runs."""
    return _exact_resume_runs(tmp_path_factory.mktemp("resume"), nproc=1, workers=2, extra=[*PLATEAU, "--dropout",
                                                                                              "0.1"])


@pytest.mark.slow
def test_exact_resume_single_process_with_workers_and_plateau_schedule(one_process_resume):
    assert_exact_resume(*one_process_resume)
    lrs = [r[2] for r in train_lines(one_process_resume[1]) if r[1] != "val"]
    assert lrs == [3e-3] * 6 + [1.5e-3] * 3 + [7.5e-4]


@pytest.mark.slow
def test_exact_resume_with_dropout(one_process_resume):
    """Dropout draws from the torch RNG (the CUDA one on GPUs): the state restored from the checkpoint must be the
    one training continues with. Measuring the MFU reference (random matmuls) after the restore consumed it, and so
    did the DataLoader's draw of its workers' base seed."""
    full, cut, _ = one_process_resume
    assert json.loads((cut / "config.json").read_text())["model"]["dropout"] == 0.1
    assert_exact_resume(*one_process_resume)


def test_resume_cuts_text_files_into_the_pieces_the_run_started_with(tmp_path):
    # Automatic streams: the first plan cuts the jsonl for PLAN_READERS readers, then the run fixes C = 8 streams.
    # A resume must cut the same pieces (it once re-planned for C readers: "num_units: saved 128, now 64").
    data = make_jsonl(tmp_path / "docs.jsonl", n_docs=3000)
    out = tmp_path / "run"
    common = [*TINY, "--data", str(data), "--num-workers", "0", "--eval-every", "0", "--out-dir", str(out)]
    run([*common, "--max-steps", "2"])
    saved = json.loads((out / "config.json").read_text())["data"]
    assert saved["streams"] == 8 and saved["plan_readers"] == 16
    p = run(["--out-dir", str(out), "--resume", "--max-steps", "3"])
    assert "done: 3 steps" in p.stdout
