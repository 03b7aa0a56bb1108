"""run_sample.py end to end: --prompt, piped stdin, errors; plus the pure helpers (the pseudo-terminal session:
test_sample_pty.py; a checkpoint whose trained tokenizer.json is gone: test_e2e_train.py)."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gpt2stream.config import ModelConfig
from gpt2stream.errors import UserError
from gpt2stream.generate import generate
from gpt2stream.hf_interop import export_hf, load_hf_gpt2
from gpt2stream.model import GPT
from gpt2stream.sample import SampleSettings, StreamDecoder, apply_command, prepare_prompt, stream_tokens
from tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
RUN_SAMPLE = str(ROOT / "run_sample.py")


def make_tiny_hf(out: Path) -> Path:
    """A small random GPT-2 with GPT-2's vocabulary, saved in the Hugging Face layout (config.json + safetensors)."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50257))
    return export_hf(model, out, eot_id=50256)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> Path:
    return make_tiny_hf(tmp_path_factory.mktemp("tiny_hf"))


@pytest.fixture(scope="module")
def gpt2_tok():
    return load_tokenizer("gpt2")


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")  # where --init transcripts go by default
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(args: list[str], tmp_path: Path, stdin: str = "", timeout: float = 60, env: dict | None = None):
    return subprocess.run([sys.executable, RUN_SAMPLE, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=env or _env(tmp_path), cwd=tmp_path)


# ---- pure helpers -------------------------------------------------------------------------------------------------


def test_apply_command_changes_validates_and_quits():
    s = SampleSettings()
    s2, msg, quit_ = apply_command("/temp 0.5", s)
    assert (s2.temperature, quit_, s.temperature) == (0.5, False, 0.8)
    assert apply_command("/topk off", s)[0].top_k is None
    assert apply_command("/topk 0", s)[0].top_k is None
    assert apply_command("/topk 40", s)[0].top_k == 40
    assert apply_command("/topp 0.9", s)[0].top_p == 0.9
    assert apply_command("/topp 1", s)[0].top_p is None
    assert apply_command("/max 7", s)[0].max_new_tokens == 7
    assert apply_command("/n 3", s)[0].num_samples == 3
    assert apply_command("/seed 11", s)[0].seed == 11
    assert apply_command("/seed off", apply_command("/seed 11", s)[0])[0].seed is None
    assert apply_command("/eot off", s)[0].stop_at_eot is False
    bad, msg, _ = apply_command("/temp -1", s)
    assert bad is s and "unchanged" in msg and "temperature" in msg
    bad, msg, _ = apply_command("/max lots", s)
    assert bad is s and "not a valid value" in msg
    assert "unknown command" in apply_command("/frobnicate", s)[1]
    assert "/topk" in apply_command("/help", s)[1]
    assert apply_command("/quit", s)[2] is True


def test_stream_decoder_never_splits_a_character(gpt2_tok):
    text = "naïve café — 日本語のテキスト 🙂🚀 done"
    ids = gpt2_tok.encode(text)
    assert any(not gpt2_tok.decode_bytes([i]).decode("utf-8", "ignore") for i in ids)  # some ids are partial chars
    dec = StreamDecoder(gpt2_tok)
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)
    # a cut-off character at the end comes out as one replacement character, as decode() does
    dec = StreamDecoder(gpt2_tok)
    cut = gpt2_tok.encode("🙂")[:1]
    assert "".join(dec.push(i) for i in cut) + dec.flush() == gpt2_tok.decode(cut)


def test_prepare_prompt_empty_long_and_special(gpt2_tok):
    assert prepare_prompt("", gpt2_tok, 64) == ([50256], None)
    ids, notice = prepare_prompt("word " * 100, gpt2_tok, 64)  # 101 tokens: the last " " is one
    assert len(ids) == 64 and ids == gpt2_tok.encode("word " * 100)[-64:]
    assert "101 tokens" in notice and "last 64" in notice
    assert prepare_prompt("a<|endoftext|>b", gpt2_tok, 64)[0] == [64, 50256, 65]


def test_settings_validation_names_the_field():
    with pytest.raises(UserError, match="num-samples=0"):
        SampleSettings(num_samples=0)
    with pytest.raises(UserError, match="top-p"):
        SampleSettings(top_p=-0.5)
    # a seed torch cannot take is refused up front, in the session too (it used to crash the generation)
    s, msg, _ = apply_command("/seed 99999999999999999999999", SampleSettings())
    assert s.seed is None and "seed=99999999999999999999999 is invalid" in msg and "unchanged" in msg
    assert SampleSettings(seed=2**64 - 1).seed == 2**64 - 1 and SampleSettings(seed=-1).seed == -1


def test_kv_cache_greedy_equals_recomputation_past_the_context(tiny_hf):
    model = load_hf_gpt2(str(tiny_hf)).eval()
    s = SampleSettings(temperature=0.0, max_new_tokens=100, stop_at_eot=False)  # 40 + 100 > context 64: slides
    prompt = list(range(1000, 1040))
    cached = list(stream_tokens(model, prompt, s, 50256, torch.Generator(), use_cache=True))
    plain = list(stream_tokens(model, prompt, s, 50256, torch.Generator(), use_cache=False))
    assert len(cached) == 100 and cached == plain
    # sampled (not greedy) with the same seed: identical too, so the cache changes nothing but speed
    s = SampleSettings(temperature=1.0, top_k=None, max_new_tokens=60, stop_at_eot=False)
    a = list(stream_tokens(model, prompt, s, 50256, torch.Generator().manual_seed(5), use_cache=True))
    b = list(stream_tokens(model, prompt, s, 50256, torch.Generator().manual_seed(5), use_cache=False))
    assert a == b


# ---- non-interactive entry point ------------------------------------------------------------------------------------


def test_prompt_flag_is_reproducible_with_a_seed_and_writes_the_transcript(tiny_hf, tmp_path):
    args = ["--init", str(tiny_hf), "--prompt", "The cat", "--max-new-tokens", "30", "--seed", "7"]
    a = _run(args, tmp_path)
    b = _run(args, tmp_path)
    c = _run([*args[:-1], "8"], tmp_path)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout != c.stdout
    assert len(a.stdout.strip()) > 0
    transcript = tmp_path / "xdg" / "gpt2stream" / "generated.txt"  # the --init default
    log = transcript.read_text()
    assert a.stdout.startswith("The cat")  # the prompt, then the continuation the transcript records
    assert log.count(">>> The cat") == 3 and a.stdout.rstrip("\n").removeprefix("The cat") in log and "seed=7" in log


def test_greedy_prompt_output_matches_the_model(tiny_hf, tmp_path, gpt2_tok):
    r = _run(["--init", str(tiny_hf), "--prompt", "Once upon", "--max-new-tokens", "25", "--temperature", "0",
              "--no-stop-at-eot", "--transcript", "off"], tmp_path)
    assert r.returncode == 0, r.stderr
    model = load_hf_gpt2(str(tiny_hf)).eval()
    idx = torch.tensor([gpt2_tok.encode("Once upon")])
    expect = generate(model, idx, 25, temperature=0.0)[0, idx.size(1):].tolist()
    assert r.stdout == "Once upon" + gpt2_tok.decode(expect) + "\n"  # the prompt, then its continuation
    assert not (tmp_path / "xdg").exists()  # --transcript off writes nothing


def test_piped_stdin_answers_one_prompt_per_line(tiny_hf, tmp_path):
    transcript = tmp_path / "t.txt"
    stdin = "first prompt\n/n 2\nsecond prompt\n\n"
    r = _run(["--init", str(tiny_hf), "--max-new-tokens", "5", "--seed", "1", "--transcript", str(transcript)],
             tmp_path, stdin=stdin)
    assert r.returncode == 0, r.stderr
    assert "num_samples = 2" in r.stderr
    assert r.stdout.count("----- sample 1/2 -----") == 2  # the second prompt and the empty one
    log = transcript.read_text()
    assert [ln for ln in log.splitlines() if ln.startswith(">>>")] == [">>> first prompt", ">>> second prompt", ">>> "]
    assert log.count("--- sample 2/2") == 2


def test_long_prompt_is_cut_with_a_notice(tiny_hf, tmp_path):
    r = _run(["--init", str(tiny_hf), "--prompt", "lorem ipsum " * 60, "--max-new-tokens", "5", "--transcript",
              "off", "--no-stop-at-eot"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "longer than the model's context of 64; kept the last 64" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out-dir", "no/such/run"], "run directory 'no/such/run' does not exist"),
        (["--ckpt", "missing.pt"], "checkpoint 'missing.pt' does not exist"),
        ([], "runs/gpt2-124m' does not exist"),
        (["--init", "{hf}", "--tokenizer", "{tokjson}"], "has 257 tokens but the model's vocabulary is 50257"),
        (["--init", "{hf}", "--ckpt", "x"], "give only one of"),
        (["--init", "{hf}", "--temperature", "hot"], "--temperature: 'hot' is not a valid float"),
        (["--init", "{hf}", "--top-p", "2"], "top-p=2.0 is invalid"),
        (["--init", "{hf}", "--frobnicate", "1"], "unknown option --frobnicate"),
        (["--init", "{hf}", "--device", "cuda:0"], "CUDA is not available"),
        (["--init", "{hf}", "--device", "mps"], "MPS (Apple GPU) is not available"),  # CI: Linux, no MPS
        (["--init", "{hf}", "--device", "meta"], "--device 'meta' is not supported"),
        (["--init", "{hf}", "--seed", "99999999999999999999999"], "seed=99999999999999999999999 is invalid"),
        (["--init", "{hf}", "--temperature", "inf"], "temperature=inf is invalid"),
        (["--init", "{hf}", "--transcript", "no/such/dir/t.txt"], "directory no/such/dir does not exist"),
        (["--init", "{hf}", "--transcript", "."], "--transcript . is a directory"),
    ],
)
def test_bad_input_raises_a_user_error(tiny_hf, tmp_path, monkeypatch, args, message):
    from gpt2stream.sample import main
    from tokenizer.core import Tokenizer

    monkeypatch.chdir(tmp_path)
    tokjson = tmp_path / "tokenizer.json"
    Tokenizer("bytes", r"\S+|\s+", {bytes([i]): i for i in range(256)}, {"<|endoftext|>": 256}).save(tokjson)
    args = [a.format(hf=tiny_hf, tokjson=tokjson) for a in args]
    with pytest.raises(UserError) as info:
        main([*args, "--prompt", "x"] + ([] if "--transcript" in args else ["--transcript", "off"]))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "no").exists()


def test_bad_input_through_the_entry_point_is_one_line_and_exit_2(tmp_path):
    r = _run(["--out-dir", "nowhere", "--prompt", "x"], tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: run directory 'nowhere' does not exist") and r.stderr.count("\n") == 1


def test_init_gpt2_without_the_hub_fails_fast_with_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(tmp_path)
    env.pop("HF_HUB_OFFLINE", None)
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
    env["HF_HOME"] = str(tmp_path / "hf")
    t0 = time.monotonic()
    r = _run(["--init", "gpt2", "--prompt", "hi"], tmp_path, env=env, timeout=180)
    assert time.monotonic() - t0 < 120  # bounded retries, not minutes of backoff (start-up under load: ~30 s)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: cannot get GPT-2 weights 'gpt2'"), r.stderr


# ---- checkpoints written by the trainer ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """Two optimizer steps of a 1-layer model through run_train.py on a tiny local jsonl: a real run directory."""
    import json

    d = tmp_path_factory.mktemp("run")
    with open(d / "docs.jsonl", "w") as f:
        for i in range(200):
            f.write(json.dumps({"text": f"Document {i}: the quick brown fox jumps over the lazy dog. " * 4}) + "\n")
    r = subprocess.run(
        [sys.executable, str(ROOT / "run_train.py"), "--preset", "tiny", "--data", "docs.jsonl", "--out-dir", "run",
         "--max-steps", "2", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "64",
         "--seq-len", "64", "--batch-size", "2", "--total-batch-size", "256", "--val-docs", "20",
         "--eval-tokens", "1024", "--num-workers", "0", "--sample-every", "0"],
        cwd=d, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    return d / "run"


@pytest.mark.slow
def test_sample_from_a_trained_run_directory_and_checkpoint(trained_run, tmp_path):
    from gpt2stream.checkpoint import list_checkpoints

    r = _run(["--out-dir", str(trained_run), "--prompt", "The fox", "--max-new-tokens", "10", "--seed", "2"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip()) > 0
    log = (trained_run / "generated.txt").read_text()  # the default transcript lives in the run directory
    assert ">>> The fox" in log and "step_00000002.pt (step 2)" in log
    ((_, ckpt),) = list_checkpoints(trained_run / "checkpoints")
    r2 = _run(["--ckpt", str(ckpt), "--prompt", "The fox", "--max-new-tokens", "10", "--seed", "2"], tmp_path)
    assert r2.returncode == 0 and r2.stdout == r.stdout
    assert (trained_run / "generated.txt").read_text().count(">>> The fox") == 2


def test_mismatched_tokenizer_for_a_checkpoint_is_refused(trained_run, tmp_path):
    from gpt2stream.sample import load_source
    from tokenizer.core import Tokenizer

    tokjson = tmp_path / "tokenizer.json"
    Tokenizer("bytes", r"\S+|\s+", {bytes([i]): i for i in range(256)}, {"<|endoftext|>": 256}).save(tokjson)
    with pytest.raises(UserError, match="has 257 tokens but the model's vocabulary is 50257"):
        load_source(str(trained_run), "", "", str(tokjson), torch.device("cpu"))
    loaded = load_source(str(trained_run), "", "", "", torch.device("cpu"))
    assert loaded.tokenizer_spec == "gpt2" and loaded.run_dir == trained_run


def test_init_directory_uses_its_own_tokenizer_json(tmp_path):
    """python -m gpt2stream.export copies a trained tokenizer.json next to the weights: --init DIR must use it."""
    from tokenizer.train import train_bpe

    tok = train_bpe(["the cat sat on the mat, the dog sat on the log. " * 20, "Once upon a time there was"], 300,
                    workers=1)
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=64, vocab_size=tok.n_vocab))
    d = export_hf(model, tmp_path / "exported", eot_id=tok.eot_id)
    tok.save(d / "tokenizer.json")
    r = _run(["--init", str(d), "--prompt", "the cat", "--max-new-tokens", "12", "--temperature", "0",
              "--no-stop-at-eot", "--transcript", "off"], tmp_path)
    assert r.returncode == 0, r.stderr
    idx = torch.tensor([tok.encode("the cat")])
    expect = generate(load_hf_gpt2(str(d)).eval(), idx, 12, temperature=0.0)[0, idx.size(1):].tolist()
    assert r.stdout == "the cat" + tok.decode(expect) + "\n"
    # an explicit --tokenizer still wins (and GPT-2's 50257 tokens do not fit this 300-token model)
    bad = _run(["--init", str(d), "--tokenizer", "gpt2", "--prompt", "x", "--transcript", "off"], tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: tokenizer 'gpt2' has 50257 tokens"), bad.stderr


@pytest.mark.parametrize("mode", ["piped", "prompt", "inherited-ignore"])
def test_ctrl_c_stops_a_non_interactive_run_with_status_130(tiny_hf, tmp_path, mode):
    """Piped prompts / --prompt: Ctrl-C stops the whole batch (not just this prompt) and a script sees exit 130;
    also when the sampler was started with SIGINT ignored (a launcher shielding its children)."""
    import signal

    transcript = tmp_path / "t.txt"
    args = [sys.executable, RUN_SAMPLE, "--init", str(tiny_hf), "--max-new-tokens", "100000", "--no-stop-at-eot",
            "--transcript", str(transcript)]
    if mode != "piped":
        args += ["--prompt", "first"]

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(tmp_path), cwd=tmp_path, start_new_session=True,
                            preexec_fn=ignore_sigint if mode == "inherited-ignore" else None)
    if mode == "piped":
        proc.stdin.write(b"first\nsecond\nthird\n")
    proc.stdin.close()
    proc.stdin = None  # closed: communicate() below must not flush it
    deadline = time.monotonic() + 120
    out = b""
    while len(out) < 20:  # wait until the first continuation is streaming
        assert time.monotonic() < deadline and proc.poll() is None, out
        if select.select([proc.stdout], [], [], 1)[0]:
            out += os.read(proc.stdout.fileno(), 4096)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does to the foreground job
    rest, err = proc.communicate(timeout=60)  # read while waiting: a full pipe would block the sampler's last lines
    out += rest
    assert proc.returncode == 130, err
    assert out.count(b"[interrupted]") == 1 and b"Traceback" not in err, (out[-500:], err)
    assert [ln for ln in transcript.read_text().splitlines() if ln.startswith(">>>")] == [">>> first"]


def test_piped_into_head_exits_0(tiny_hf, tmp_path):
    # head leaves after the first line while samples are still streaming: the writes that follow hit a closed pipe
    cmd = (f"{sys.executable} {RUN_SAMPLE} --init {tiny_hf} --prompt hi --num-samples 6 --max-new-tokens 64 "
           f"--temperature 1 --seed 1 --transcript off | head -n 1; echo \"status=${{PIPESTATUS[0]}}\" >&2")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120, env=_env(tmp_path),
                       cwd=tmp_path)
    assert r.stdout.count("\n") == 1, r.stdout
    assert "status=0" in r.stderr and "Traceback" not in r.stderr, r.stderr
