"""DDP: 2 processes with accumulation a == 1 process with accumulation 2a (fp32), and clean torchrun exits."""

from __future__ import annotations

import pytest
import torch

from tests.test_train_common import TINY, WORDS, final_state, make_jsonl, run, train_lines

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
    bf = tmp_path / "bf16"
    run([*args, "--out-dir", str(bf), "--grad-reduce", "bf16", "--bucket-mb", "1"], nproc=2)
    lc = [r for r in train_lines(bf) if r[1] != "val"]
    assert [r[0] for r in lc] == [1, 2]
    for ra, rc in zip(la, lc, strict=True):
        assert ra[1] == pytest.approx(rc[1], abs=1e-2)
    c = final_state(bf)["model"]
    assert 0 < max((b[k] - c[k]).abs().max().item() for k in b) < 1e-2


@pytest.mark.slow
def test_torchrun_runs_exit_cleanly_repeatedly(tmp_path):
    """gloo may abort at interpreter exit (shared/TORCH-NOTES.md); the trainer leaves via os._exit after
    destroy_process_group. Short runs must exit 0 with no abort message (the other torchrun tests add more runs;
    the README reports a longer repetition). The second run also scores HellaSwag across both ranks."""
    import json

    data = make_jsonl(tmp_path / "docs.jsonl", n_docs=200)
    hs = tmp_path / "hellaswag.jsonl"
    with open(hs, "w") as f:
        for i in range(6):
            f.write(json.dumps({"ctx": f"The {WORDS[i]} is", "endings": [f" {w}." for w in WORDS[i:i + 4]],
                                "label": i % 4}) + "\n")
    for i in range(2):
        extra = ["--evals-every", "1", "--evals-data", f"hellaswag={hs}"] if i else []
        p = run([*TINY, "--data", str(data), "--num-workers", "0", "--max-steps", "1", "--eval-every", "0",
                 "--save-every", "0", "--out-dir", str(tmp_path / f"r{i}"), *extra], nproc=2)
        assert "terminate called" not in p.stderr
        assert "done: 1 steps" in p.stdout
    rec = [json.loads(line) for line in (tmp_path / "r1" / "metrics.jsonl").read_text().splitlines()]
    hsw = [r for r in rec if "hellaswag_acc_norm" in r]
    assert len(hsw) == 1 and hsw[0]["hellaswag_n"] == 6 and 0 <= hsw[0]["hellaswag_acc_norm"] <= 1
