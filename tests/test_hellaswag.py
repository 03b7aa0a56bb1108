"""HellaSwag (gpt2stream/evals): scores equal an independent transformers computation; data download/cache/errors;
the command (``python -m gpt2stream.hellaswag`` is ``python -m gpt2stream.evals hellaswag``); torchrun. Scoring in
the training loop (across 2 ranks) equal to the command on the saved checkpoint: test_train_ddp.py."""

from __future__ import annotations

import http.server
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from gpt2stream.distributed import DistInfo
from gpt2stream.errors import UserError
from gpt2stream.evals.hellaswag import TASK, URL_ENV, cache_path, load_examples, parse_examples
from gpt2stream.evals.multiple_choice import Example, ending_losses, local_counts, render_example, summarize
from gpt2stream.hf_interop import load_hf_gpt2
from tokenizer import load_tokenizer

transformers = pytest.importorskip("transformers")  # a dev extra; CI installs it, so this never skips there

ROOT = Path(__file__).resolve().parent.parent

# Hand-written examples in the official hellaswag_val.jsonl format (same keys; the scorer uses ctx/endings/label).
EXAMPLES = [
    {"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
     "ctx": "A man is sitting on a roof. he",
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
     "source_id": "activitynet~v_-JhWjGDPHMY", "split": "val", "split_type": "indomain", "label": 3},
    {"ind": 92, "activity_label": "Clean and jerk", "ctx_a": "A lady walks to a barbell. She bends down and grabs "
     "the pole.", "ctx_b": "the lady", "ctx": "A lady walks to a barbell. She bends down and grabs the pole. the lady",
     "endings": ["swings and lands in her arms.", "pulls the barbell forward.", "pulls a rope attached to the barbell.",
                 "stands and lifts the weight over her head."],
     "source_id": "activitynet~v_-lJS58hyo1c", "split": "val", "split_type": "zeroshot", "label": 3},
    {"ind": 106, "activity_label": "Baking cookies", "ctx_a": "A kitchen is shown with flour on the counter.",
     "ctx_b": "a woman", "ctx": "A kitchen is shown with flour on the counter. a woman",
     "endings": ["mixes eggs, sugar and butter in a bowl.", "dives into a swimming pool.",
                 "plays the violin on a stage in front of a crowd of people.", "drives away."],
     "source_id": "activitynet~v_x", "split": "val", "split_type": "indomain", "label": 0},
    {"ind": 7, "activity_label": "Walking the dog", "ctx_a": "Café owners — naïve ones — greet the dog 🐕.",
     "ctx_b": "", "ctx": "Café owners — naïve ones — greet the dog 🐕.",
     "endings": ["It barks.", "The dog wags its tail happily and sits down next to them.", "Rain.",
                 "The owners go home."],
     "source_id": "wikihow~1", "split": "val", "split_type": "zeroshot", "label": 1},
    {"ind": 3, "activity_label": "Doing homework",
     "ctx_a": "[header] How to study for a test [title] Make a schedule. [step] Write down every topic.",
     "ctx_b": "", "ctx": "[header] How to study for a test [title] Make a schedule. [step] Write down every topic.",
     "endings": ["Then set aside time for each topic.", "Bake a cake.", "Sing loudly.", "Sleep through the exam."],
     "source_id": "wikihow~2", "split": "val", "split_type": "indomain", "label": 0},
]


def example(d: dict) -> Example:
    return Example(d["ctx"], tuple(d["endings"]), d["label"])


def evaluate_hellaswag(model, tok, examples: list[dict], rank: int = 0, world: int = 1) -> dict:
    """The task's score of ``examples``; with ``world`` > 1 (no process group) this rank's share only."""
    mc = [example(d) for d in examples]
    if world == 1:  # the call training and the command make
        return TASK.evaluate(model, tok, mc, DistInfo(0, 0, 1, torch.device("cpu"), ""))
    return summarize(local_counts(model, tok, mc, rank, world))


def write_examples(path: Path, examples=EXAMPLES) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
    """A small random transformers GPT2LMHeadModel with GPT-2's vocabulary, saved with save_pretrained."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=128, vocab_size=50257)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # make the endings' scores spread out, so argmins are not near-ties
        for p in hf.parameters():
            p.mul_(5.0)
    d = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(d)
    return d, hf


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gpt2")


def independent_scores(hf, example, enc) -> tuple[list[float], list[float]]:
    """Summed and mean loss of each ending, computed with transformers and tiktoken alone, one unpadded row each."""
    ctx = enc.encode_ordinary(example["ctx"])
    sums, means = [], []
    for ending in example["endings"]:
        end = enc.encode_ordinary(" " + ending)
        ids = torch.tensor([ctx + end])
        with torch.no_grad():
            logp = torch.log_softmax(hf(ids).logits[0].double(), dim=-1)  # (T, V)
        nll = [-logp[len(ctx) + j - 1, t].item() for j, t in enumerate(end)]
        sums.append(sum(nll))
        means.append(sum(nll) / len(nll))
    return sums, means


def test_per_example_scores_equal_transformers(hf_model_dir, tok, tiktoken_r50k):
    d, hf = hf_model_dir
    ours = load_hf_gpt2(str(d)).eval()
    hits = hits_norm = 0
    for ex in EXAMPLES:
        tokens, mask, label = render_example(example(ex), tok, ours.config.block_size)
        assert tokens.shape[1] % 32 == 0  # padded for a small set of shapes (torch.compile)
        total, mean = ending_losses(ours, tokens, mask)
        ref_sum, ref_mean = independent_scores(hf, ex, tiktoken_r50k)
        ref_sum_t, ref_mean_t = torch.tensor(ref_sum, dtype=torch.float64), torch.tensor(ref_mean, dtype=torch.float64)
        assert torch.allclose(total.double(), ref_sum_t, atol=1e-3, rtol=1e-5), (total, ref_sum)
        assert torch.allclose(mean.double(), ref_mean_t, atol=1e-4, rtol=1e-5), (mean, ref_mean)
        assert int(total.argmin()) == min(range(4), key=ref_sum.__getitem__)
        assert int(mean.argmin()) == min(range(4), key=ref_mean.__getitem__)
        hits += min(range(4), key=ref_sum.__getitem__) == label
        hits_norm += min(range(4), key=ref_mean.__getitem__) == label
    result = evaluate_hellaswag(ours, tok, EXAMPLES, 0, 1)
    assert result == {"acc": hits / 5, "acc_norm": hits_norm / 5, "n": 5, "chance": 0.25}


def test_acc_is_summed_loss_and_acc_norm_is_mean_loss():
    """A model with uniform predictions: every token costs log V, so the summed loss prefers the shortest ending
    while the mean loss ties everywhere (argmin -> the first ending)."""
    V = 50

    class Uniform(torch.nn.Module):
        def forward(self, idx):
            return torch.zeros(*idx.shape, V), None

    tokens = torch.tensor([[1, 2, 3, 4, 0], [1, 2, 3, 0, 0], [1, 2, 3, 4, 5], [1, 2, 0, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 0, 0, 0]])
    total, mean = ending_losses(Uniform(), tokens, mask)
    assert torch.allclose(total, torch.tensor([2, 1, 3, 1]) * math.log(V))
    assert torch.allclose(mean, torch.full((4,), math.log(V)))


def test_rows_longer_than_the_context_keep_the_ending(tok):
    ex = dict(EXAMPLES[0], ctx="word " * 300)
    tokens, mask, label = render_example(example(ex), tok, block_size=64)
    assert tokens.shape == (4, 64) and label == 3
    ctx = tok.encode_ordinary(ex["ctx"])
    for i, ending in enumerate(ex["endings"]):
        end = tok.encode_ordinary(" " + ending)
        assert tokens[i].tolist() == (ctx + end)[-64:]  # the context is cut from the left
        assert tokens[i][mask[i].bool()].tolist() == end  # the ending is whole


def test_ranks_split_the_examples_and_their_counts_add_up(hf_model_dir, tok):
    d, _ = hf_model_dir
    model = load_hf_gpt2(str(d)).eval()
    examples = EXAMPLES + EXAMPLES[:2]  # 7
    whole = evaluate_hellaswag(model, tok, examples, 0, 1)
    # without a process group each rank reports its own share (i % world == rank); torchrun test: the reduce
    parts = [evaluate_hellaswag(model, tok, examples, r, 3) for r in range(3)]
    assert [p["n"] for p in parts] == [3, 2, 2]
    assert sum(p["acc"] * p["n"] for p in parts) == pytest.approx(whole["acc"] * 7)
    assert sum(p["acc_norm"] * p["n"] for p in parts) == pytest.approx(whole["acc_norm"] * 7)


# ---- the data file ------------------------------------------------------------------------------------------------


def test_malformed_file_names_the_line(tmp_path):
    bad = EXAMPLES[:2] + [{"ctx": "x", "endings": ["a", "b"], "label": 0}]
    p = write_examples(tmp_path / "bad.jsonl", bad)
    with pytest.raises(UserError, match=r"bad.jsonl line 3 is not a HellaSwag example"):
        load_examples(str(p))
    with pytest.raises(UserError, match="no such file"):
        load_examples(str(tmp_path / "nope.jsonl"))
    assert parse_examples(["", json.dumps(EXAMPLES[0]), ""], "x")[0].label == 3


class _Server:
    """A local HTTP server for the data file; ``truncate`` announces more bytes than it sends."""

    def __init__(self, body: bytes, truncate: bool = False):
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + (100 if truncate else 0)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hellaswag_val.jsonl"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_once_then_cached(tmp_path, monkeypatch):
    body = write_examples(tmp_path / "src.jsonl").read_bytes()
    server = _Server(body)
    monkeypatch.setenv(URL_ENV, server.url)
    try:
        first = load_examples()
    finally:
        server.close()
    assert server.hits == 1 and len(first) == 5 and first[2].label == 0
    assert cache_path().read_bytes() == body and str(cache_path()).startswith(os.environ["HF_HOME"])
    assert load_examples(limit=2) == first[:2]  # the server is gone: served from the cache
    assert server.hits == 1


def test_truncated_download_leaves_nothing(tmp_path, monkeypatch):
    server = _Server(write_examples(tmp_path / "src.jsonl").read_bytes(), truncate=True)
    monkeypatch.setenv(URL_ENV, server.url)
    try:
        with pytest.raises(UserError, match="cannot download HellaSwag"):
            load_examples()
    finally:
        server.close()
    assert not cache_path().exists() and list(cache_path().parent.iterdir()) == []


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/hellaswag_val.jsonl"


def test_no_network_no_file_is_one_clear_line_quickly(tmp_path, hf_model_dir):
    d, _ = hf_model_dir
    env = dict(os.environ, **{URL_ENV: _closed_port_url(), "HF_HOME": str(tmp_path / "hf")})
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "gpt2stream.hellaswag", "--init", str(d)], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=120)
    assert time.monotonic() - t0 < 60
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: cannot download HellaSwag") and "--data PATH" in r.stderr


# ---- the standalone command -----------------------------------------------------------------------------------------


def test_cli_on_local_file_matches_in_process(tmp_path, hf_model_dir, tok):
    d, _ = hf_model_dir
    data = write_examples(tmp_path / "hs.jsonl")
    r = subprocess.run([sys.executable, "-m", "gpt2stream.hellaswag", "--init", str(d), "--hellaswag", str(data),
                        "--json", "--device", "cpu"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    want = evaluate_hellaswag(load_hf_gpt2(str(d)).eval(), tok, EXAMPLES, 0, 1)
    assert {k: got[k] for k in want} == want
    # human-readable form names which figure is which
    r = subprocess.run([sys.executable, "-m", "gpt2stream.hellaswag", "--init", str(d), "--hellaswag", str(data),
                        "--limit", "3"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "acc_norm" in r.stdout and "(mean loss per ending token)" in r.stdout and "(summed loss)" in r.stdout
    assert "| 3 examples |" in r.stdout


@pytest.mark.parametrize("argv, message", [
    ([], "exactly one"),
    (["a", "b"], "unexpected argument 'b'"),
    (["--init", "x", "--dtype", "fp8"], "--dtype 'fp8'"),
    (["--init", "x", "--limit", "-1"], "--limit -1"),
])
def test_cli_argument_errors(argv, message):
    from gpt2stream.evals.command import parse_args
    from gpt2stream.hellaswag import alias_argv

    with pytest.raises(UserError, match=message):
        parse_args(alias_argv(argv))
    assert parse_args(alias_argv(["run", "--limit", "5", "--json"]))[1] == "run"
    _, run, args = parse_args(alias_argv(["--hellaswag", "f.jsonl", "run"]))
    assert (run, args.data) == ("run", "f.jsonl")


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one(tmp_path, hf_model_dir):
    d, _ = hf_model_dir
    data = write_examples(tmp_path / "hs.jsonl")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    args = ["-m", "gpt2stream.evals", "hellaswag", "--init", str(d), "--data", str(data), "--json", "--device", "cpu"]
    one = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    res_one = json.loads(one.stdout.strip().splitlines()[-1])
    lines = [ln for ln in two.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # rank 0 prints
    assert json.loads(lines[0]) == res_one and res_one["n"] == 5


@pytest.mark.slow
def test_works_with_torch_compile(hf_model_dir, tok):
    d, _ = hf_model_dir
    model = load_hf_gpt2(str(d)).eval()
    compiled = torch.compile(model)
    eager = [ending_losses(model, *render_example(example(ex), tok, 128)[:2]) for ex in EXAMPLES]
    comp = [ending_losses(compiled, *render_example(example(ex), tok, 128)[:2]) for ex in EXAMPLES]
    for (a_sum, a_mean), (b_sum, b_mean) in zip(eager, comp, strict=True):
        assert torch.allclose(a_sum, b_sum, atol=1e-3) and torch.allclose(a_mean, b_mean, atol=1e-4)
    assert evaluate_hellaswag(compiled, tok, EXAMPLES) == evaluate_hellaswag(model, tok, EXAMPLES)


def test_download_that_is_not_hellaswag_is_not_cached(tmp_path, monkeypatch):
    """An error page served with 200 (captive portal, broken mirror) must not poison the cache for later runs."""
    server = _Server(b"<html><body>Sign in to the network</body></html>\n")
    monkeypatch.setenv(URL_ENV, server.url)
    try:
        with pytest.raises(UserError, match="is not HellaSwag data") as info:
            load_examples()
    finally:
        server.close()
    assert "line 1" in str(info.value) and "nothing was cached" in str(info.value)
    assert not cache_path().exists() and list(cache_path().parent.iterdir()) == []


def test_cut_off_official_download_is_not_cached(tmp_path, monkeypatch):
    """The official file has 10042 examples: fewer (a stream cut at a line end, no Content-Length) is refused."""
    import gpt2stream.evals.hellaswag as hs

    server = _Server(write_examples(tmp_path / "src.jsonl").read_bytes())
    monkeypatch.setattr(hs, "HELLASWAG_URL", server.url)
    monkeypatch.delenv(URL_ENV, raising=False)
    try:
        with pytest.raises(UserError, match="holds 5 examples, not 10042"):
            load_examples()
    finally:
        server.close()
    assert not cache_path().exists()


def test_binary_or_directory_file_is_one_clear_error(tmp_path, hf_model_dir):
    binary = tmp_path / "data.parquet"
    binary.write_bytes(b"PAR1\x80\x81\xff" * 10)
    with pytest.raises(UserError, match="not UTF-8"):
        load_examples(str(binary))
    with pytest.raises(UserError, match="is a directory"):
        load_examples(str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "gpt2stream.hellaswag", "--init", str(hf_model_dir[0]), "--hellaswag",
                        str(binary)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr


def test_corrupt_cache_names_the_file_to_delete(tmp_path):
    cache_path().parent.mkdir(parents=True, exist_ok=True)
    cache_path().write_text('{"ctx": "x", "endings": ["a"', encoding="utf-8")
    with pytest.raises(UserError, match="delete the cached copy"):
        load_examples()


def test_missing_run_directory_names_this_commands_arguments(tmp_path):
    """Not run_sample's --out-dir/--ckpt flags, which this command does not have."""
    r = subprocess.run([sys.executable, "-m", "gpt2stream.hellaswag", "no/such/run"], capture_output=True, text=True,
                       cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: 'no/such/run' does not exist: give a run directory") and "--ckpt" not in r.stderr
