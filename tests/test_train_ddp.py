"""DDP: 2 processes with accumulation a == 1 process with accumulation 2a (fp32), --grad-reduce bf16, HellaSwag
scored in the loop across both ranks equal to the standalone command on the saved checkpoint, and clean torchrun
exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_train_common import ROOT, TINY, WORDS, env, final_state, run, train_lines

T = 32


def make_block_docs(path, n_docs: int) -> list[list[int]]:
    """A parquet file with one document per row group, each exactly T tokens (+ <|endoftext|> = one block).

    Row groups are the data pipeline's units, dealt round-robin to readers in one shared order: with no shuffle
    buffer, the single process reads units u0 u1 u2 u3 ... while rank 0 reads u0 u2 ... and rank 1 u1 u3 ... So
    with one process at accumulation 2a and two at a, every optimizer step sees the same set of blocks.
    """
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenizer import load_tokenizer

    tok = load_tokenizer("gpt2")
    rng = random.Random(1)
    texts, ids = [], []
    for _ in range(n_docs):
        text = "".join(" " + rng.choice(WORDS) for _ in range(T))
        toks = tok.encode_ordinary(text)
        assert len(toks) == T, (text, toks)
        texts.append(text)
        ids.append(toks)
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(n_docs)], "text": texts}), path, row_group_size=1)
    return ids


def _write_hellaswag(path: Path) -> Path:
    with open(path, "w") as f:
        for i in range(6):
            f.write(json.dumps({"ctx": f"The {WORDS[i]} is", "endings": [f" {w}." for w in WORDS[i:i + 4]],
                                "label": i % 4}) + "\n")
    return path


def _assert_clean_exit(p: subprocess.CompletedProcess, steps: int) -> None:
    """gloo may abort at interpreter exit (shared/TORCH-NOTES.md); the trainer leaves via os._exit after
    destroy_process_group: each torchrun run exits 0 (run() checks) with no abort message. The other torchrun tests
    add more runs; the README reports a longer repetition."""
    assert "terminate called" not in p.stderr, p.stderr[-3000:]
    assert f"done: {steps} steps" in p.stdout


@pytest.mark.slow
def test_ddp_2x_accum_a_equals_1x_accum_2a(tmp_path):
    data = tmp_path / "blocks.parquet"
    make_block_docs(data, 40)
    # B=2, T=32, 256 tokens/step: 1 process -> 4 micro-steps, 2 processes -> 2 micro-steps each
    args = [*TINY, "--data", str(data), "--num-workers", "0", "--shuffle-buffer", "1", "--val-docs", "1",
            "--eval-tokens", "32", "--batch-size", "2", "--total-batch-size", "256", "--max-steps", "2",
            "--warmup-steps", "0", "--lr", "2e-3", "--dtype", "float32", "--eval-every", "0", "--save-every", "0"]
    one, two = tmp_path / "one", tmp_path / "two"
    p1 = run([*args, "--out-dir", str(one)])
    assert "4 micro-steps x 2 x 32 x 1 processes" in p1.stdout
    p2 = run([*args, "--out-dir", str(two)], nproc=2)
    assert "2 micro-steps x 2 x 32 x 2 processes" in p2.stdout
    _assert_clean_exit(p2, 2)
    a, b = final_state(one)["model"], final_state(two)["model"]
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    # the comparison is not vacuous: two Adam steps at lr 2e-3 moved the weights far more than the tolerance
    from gpt2stream.loading import model_from_state
    from gpt2stream.model import GPT

    trained, _ = model_from_state(final_state(one))
    torch.manual_seed(1337)  # the trainer's seed: the same initial weights
    init = GPT(trained.config).state_dict()
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-3
    la = [r for r in train_lines(one) if r[1] != "val"]
    lb = [r for r in train_lines(two) if r[1] != "val"]
    assert [r[0] for r in la] == [r[0] for r in lb] == [1, 2]
    for ra, rb in zip(la, lb, strict=True):
        assert ra[1] == pytest.approx(rb[1], abs=1e-5)  # losses
        assert ra[3] == pytest.approx(rb[3], rel=1e-4)  # grad norms
    # --grad-reduce bf16 (DDP's bf16 compression hook, small buckets): the losses stay within the tolerance of a
    # bf16 run (bench/gpu_check.py's 1e-2), and the weights differ from fp32's, so the hook did run
    # The same run also scores HellaSwag in the loop across both ranks (evaluation does not touch the weights).
    bf = tmp_path / "bf16"
    hs = _write_hellaswag(tmp_path / "hellaswag.jsonl")
    p3 = run([*args, "--out-dir", str(bf), "--grad-reduce", "bf16", "--bucket-mb", "1", "--evals-every", "2",
              "--evals-data", f"hellaswag={hs}"], nproc=2)
    _assert_clean_exit(p3, 2)
    rec = [json.loads(line) for line in (bf / "metrics.jsonl").read_text().splitlines()]
    hsw = [r for r in rec if "hellaswag_acc_norm" in r]
    assert len(hsw) == 1 and hsw[0]["step"] == 2 and hsw[0]["hellaswag_n"] == 6
    assert 0 <= hsw[0]["hellaswag_acc_norm"] <= 1
    # the standalone command on the checkpoint of the same step, in one process, gives the same figures
    sa = subprocess.run([sys.executable, "-m", "gpt2stream.evals", "hellaswag", str(bf), "--data", str(hs), "--json"],
                        capture_output=True, text=True, cwd=ROOT, env=env(), timeout=120)
    assert sa.returncode == 0, sa.stderr[-3000:]
    got = json.loads(sa.stdout.strip().splitlines()[-1])
    assert got["n"] == 6 and "step 2" in got["model"]
    assert (got["acc"], got["acc_norm"]) == (hsw[0]["hellaswag_acc"], hsw[0]["hellaswag_acc_norm"])
    lc = [r for r in train_lines(bf) if r[1] != "val"]
    assert [r[0] for r in lc] == [1, 2]
    for ra, rc in zip(la, lc, strict=True):
        assert ra[1] == pytest.approx(rc[1], abs=1e-2)
    c = final_state(bf)["model"]
    assert 0 < max((b[k] - c[k]).abs().max().item() for k in b) < 1e-2
