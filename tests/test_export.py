"""python -m gpt2stream.export: a checkpoint -> a directory transformers loads, with the same logits."""

from __future__ import annotations

import subprocess
import sys

import torch

from gpt2stream.checkpoint import save_checkpoint
from gpt2stream.model import GPT, GPTConfig
from tests.test_checkpoint import _state
from tests.test_train_common import ROOT, env


def test_export_checkpoint_loads_in_transformers(tmp_path):
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=50257))
    state = _state(3, model)
    state["config"]["model"]["vocab_size"] = 50257
    save_checkpoint(state, tmp_path / "run", keep_last=1)
    out = tmp_path / "hf"
    p = subprocess.run([sys.executable, "-m", "gpt2stream.export", str(tmp_path / "run"), str(out)],
                       capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "GPT2LMHeadModel.from_pretrained" in p.stdout
    assert not (out / "tokenizer.json").exists()  # GPT-2's own tokenizer: nothing to copy
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    x = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        ours = model.eval()(x)[0]
        theirs = hf(x).logits
    assert (ours - theirs).abs().max().item() < 1e-4
    assert hf.config.eos_token_id == 50256


def test_export_bad_input_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "gpt2stream.export", str(tmp_path / "missing"), str(tmp_path / "o")],
                       capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr
