"""The whole flow as a user runs it, against the local Hub test server: train_tokenizer.py -> run_train.py --preset
tiny under torchrun x2 -> stop it (SIGTERM, as a scheduler does) -> --resume -> run_sample.py --prompt -> export
(whose trained tokenizer loads in transformers) -> a checkpoint copied away whose tokenizer.json then moved."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from gpt2stream.checkpoint import find_latest
from tests.test_train_common import ROOT, RUN_TRAIN, env, run, torchrun

STEPS, EVERY = 21, 7  # three evaluations, checkpoints and samples; the stop comes after the first


@pytest.mark.slow
def test_tokenizer_train_stop_resume_sample(hub_server, tmp_path):
    e = env()  # HF_ENDPOINT (-> the test server) and HF_HOME come from the fixtures
    tok = tmp_path / "tok.json"
    p = subprocess.run([sys.executable, str(ROOT / "train_tokenizer.py"), "--data", "HuggingFaceFW/fineweb-edu",
                        "--data-config", "sample-10BT", "--vocab-size", "512", "--out", str(tok)],
                       capture_output=True, text=True, env=e, cwd=ROOT, timeout=240)
    assert p.returncode == 0, p.stderr
    assert tok.is_file()

    out = tmp_path / "run"
    args = ["--preset", "tiny", "--data", "HuggingFaceFW/fineweb-edu", "--tokenizer", str(tok), "--out-dir", str(out),
            "--val-docs", "20", "--eval-tokens", "4096", "--max-steps", str(STEPS), "--save-every", str(EVERY),
            "--eval-every", str(EVERY), "--sample-every", str(EVERY), "--log-every", "5"]
    first = subprocess.Popen([*torchrun(2), RUN_TRAIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=e, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoints" / f"step_{EVERY:08d}.pt").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, f"no checkpoint at step {EVERY}"
            time.sleep(0.05)
        first.send_signal(signal.SIGTERM)  # torchrun forwards it to both ranks
        stdout, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert "stopped by SIGTERM after step" in stdout, stdout + stderr
    assert "--resume (under torchrun --nproc_per_node=2)" in stdout
    stopped_at = find_latest(out)[1]["step"]
    assert EVERY <= stopped_at < STEPS

    p = run(["--out-dir", str(out), "--resume"], nproc=2)
    assert f"resumed from {out}/checkpoints/step_{stopped_at:08d}.pt" in p.stdout
    assert f"done: {STEPS} steps" in p.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, STEPS + 1))  # one history across the stop
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(vals) == 3 and vals[-1] < vals[0]
    assert any("sample" in r for r in records)
    assert (out / "loss_plot.png").stat().st_size > 1000 and (out / "tokenizer.json").is_file()
    assert find_latest(out)[1]["tokenizer_identity"].startswith("bpe:")

    p = subprocess.run([sys.executable, str(ROOT / "run_sample.py"), "--out-dir", str(out), "--prompt", "The",
                        "--max-new-tokens", "16", "--seed", "1", "--transcript", "off"],
                       capture_output=True, text=True, env=e, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip(), "no sample text"

    hf = tmp_path / "hf"
    p = subprocess.run([sys.executable, "-m", "gpt2stream.export", str(out), str(hf)], capture_output=True,
                       text=True, env=e, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (hf / "model.safetensors").is_file() and (hf / "tokenizer.json").read_bytes() == tok.read_bytes()
    from transformers import AutoTokenizer  # the exported trained tokenizer gives transformers the same tokens

    from tokenizer import load_tokenizer

    bpe, auto = load_tokenizer(str(tok)), AutoTokenizer.from_pretrained(hf)
    text = "the cat sat on a log<|endoftext|>zebra!"
    assert auto(text)["input_ids"] == bpe.encode(text, allowed_special="all")
    assert auto.eos_token_id == bpe.eot_id

    # a checkpoint copied away from its run directory, whose tokenizer.json is then gone: one line names the fix
    lone = shutil.copy(find_latest(out)[0], tmp_path / "lone.pt")
    tok.rename(tmp_path / "moved.json")
    sample = [sys.executable, str(ROOT / "run_sample.py"), "--ckpt", str(lone), "--prompt", "x", "--transcript", "off"]
    bad = subprocess.run(sample, capture_output=True, text=True, env=e, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "tok.json, which is gone" in bad.stderr and "--tokenizer PATH" in bad.stderr
    ok = subprocess.run([*sample, "--tokenizer", "moved.json", "--max-new-tokens", "3"], capture_output=True, text=True,
                        env=e, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stderr
