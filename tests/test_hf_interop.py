"""Hugging Face GPT-2 weights: import from a transformers-saved directory, export back, logits agree."""

from __future__ import annotations

import json

import pytest
import torch

from gpt2stream.config import ModelConfig
from gpt2stream.errors import UserError
from gpt2stream.hf_interop import export_hf, load_hf_gpt2
from gpt2stream.model import GPT

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
    ours = load_hf_gpt2(str(d)).eval()
    assert ours.config.vocab_size == 301 and ours.config.padded_vocab_size == 320
    idx = torch.randint(0, 301, (3, 32), generator=torch.Generator().manual_seed(1))
    assert _max_diff(ours, hf, idx) < 1e-4


def test_export_loads_in_transformers_with_same_logits(tmp_path):
    torch.manual_seed(0)
    ours = GPT(ModelConfig(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=301)).eval()
    import os

    old = os.umask(0o022)
    try:
        out = export_hf(ours, tmp_path / "export")
    finally:
        os.umask(old)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 301
    assert os.stat(out / "model.safetensors").st_mode & 0o777 == 0o644  # the umask decides, not safetensors' 0600
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    idx = torch.randint(0, 301, (3, 32), generator=torch.Generator().manual_seed(2))
    assert _max_diff(ours, hf, idx) < 1e-4
    # and the export imports back to the identical model
    again = load_hf_gpt2(str(out)).eval()
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


def test_import_by_hub_repo_id_through_hf_endpoint(tmp_path):
    """`load_hf_gpt2("gpt2")` downloads openai-community/gpt2 via huggingface_hub from HF_ENDPOINT."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.hubserver import HubServer

    hf, d = _random_hf_model(tmp_path)
    idx = torch.randint(0, 301, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.save({"idx": idx, "logits": hf(idx).logits}, tmp_path / "ref.pt")
    code = (
        "import torch\nfrom gpt2stream.hf_interop import load_hf_gpt2\n"
        "m = load_hf_gpt2('gpt2').eval()\n"
        f"ref = torch.load({str(tmp_path / 'ref.pt')!r})\n"
        "with torch.no_grad():\n    out, _ = m(ref['idx'])\n"
        "print('maxdiff', (out - ref['logits']).abs().max().item())\n"
    )
    with HubServer({"openai-community/gpt2": d}) as server:
        env = {**os.environ, "HF_ENDPOINT": server.url, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split("maxdiff")[1]) < 1e-4


def test_import_of_an_unreachable_hub_repo_is_one_clear_error(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from tests.conftest import ROOT

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "PYTHONPATH": str(ROOT)}
    code = ("from gpt2stream.cli import run_main\nfrom gpt2stream.hf_interop import load_hf_gpt2\n"
            "run_main(lambda argv: load_hf_gpt2('gpt2-medium') and 0, [])\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.startswith("error: cannot get GPT-2 weights 'gpt2-medium'") and "Traceback" not in out.stderr
