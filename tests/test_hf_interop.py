"""Hugging Face GPT-2 weights: import from a transformers-saved directory, export back, logits agree."""

from __future__ import annotations

import json

import pytest
import torch

from gpt2stream.errors import UserError
from gpt2stream.hf_interop import export_hf, load_hf_gpt2
from gpt2stream.model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")  # a dev extra; CI installs it, so this never skips there


def _random_hf_model(tmp_path, safe=True):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=32, vocab_size=301)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    d = tmp_path / "hf"
    hf.save_pretrained(d, safe_serialization=safe)
    return hf, d


def _max_diff(ours: GPT, hf, idx) -> float:
    with torch.no_grad():
        a, _ = ours(idx)
        b = hf(idx).logits
    return (a - b).abs().max().item()


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pytorch_bin"])
def test_import_matches_transformers_logits(tmp_path, safe):
    hf, d = _random_hf_model(tmp_path, safe)
    ours = GPT.from_pretrained(str(d)).eval()
    assert ours.config.vocab_size == 301 and ours.config.padded_vocab_size == 320
    idx = torch.randint(0, 301, (3, 32), generator=torch.Generator().manual_seed(1))
    assert _max_diff(ours, hf, idx) < 1e-4


def test_export_loads_in_transformers_with_same_logits(tmp_path):
    torch.manual_seed(0)
    ours = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=301)).eval()
    out = export_hf(ours, tmp_path / "export")
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 301
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    idx = torch.randint(0, 301, (3, 32), generator=torch.Generator().manual_seed(2))
    assert _max_diff(ours, hf, idx) < 1e-4
    # and the export imports back to the identical model
    again = GPT.from_pretrained(str(out)).eval()
    with torch.no_grad():
        assert torch.equal(again(idx)[0], ours(idx)[0])


def test_import_rejects_a_directory_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match="only GPT-2"):
        load_hf_gpt2(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "gpt2", "n_layer": 1, "n_head": 1, "n_embd": 8, "n_positions": 8, "vocab_size": 10}))
    with pytest.raises(UserError, match="no model.safetensors"):
        load_hf_gpt2(str(tmp_path))
