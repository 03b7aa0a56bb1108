"""The GPT-2 family: presets with OpenAI's shapes and GPT-3's training defaults, parameter counts against OpenAI's
checkpoint shapes, and OpenAI's weights through the existing import (``--init gpt2-medium``...) from a local Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from config import PRESETS
from gpt2stream.config import ModelConfig, preset_config
from gpt2stream.memory import GiB, estimate_memory, param_count, usable_bytes
from gpt2stream.model import GPT
from tests.conftest import ROOT

transformers = pytest.importorskip("transformers")  # a dev extra; CI installs it, so this never skips there

# OpenAI's released shapes (layers, width, heads) and parameter counts at vocab 50257, context 1024
OPENAI = {
    "gpt2-124m": ("gpt2", 12, 768, 12, 124_439_808),
    "gpt2-medium": ("gpt2-medium", 24, 1024, 16, 354_823_168),
    "gpt2-large": ("gpt2-large", 36, 1280, 20, 774_030_080),
    "gpt2-xl": ("gpt2-xl", 48, 1600, 25, 1_557_611_200),
}
# GPT-3 paper, Table 2.1: (peak lr, batch in tokens) of the nearest size; warmup is 375M tokens (Appendix B)
GPT3 = {"gpt2-124m": (6e-4, 2**19), "gpt2-medium": (3e-4, 2**19), "gpt2-large": (2.5e-4, 2**19),
        "gpt2-xl": (2e-4, 2**20)}


def openai_config(name: str, **shrink) -> dict:
    """OpenAI's config.json as the Hub serves it (openai-community/<name>), optionally with smaller dimensions."""
    _, n_layer, n_embd, n_head, _ = next(v for v in OPENAI.values() if v[0] == name)
    cfg = {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
           "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
           "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": n_embd, "n_head": n_head,
           "n_layer": n_layer, "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": None,
           "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
           "summary_use_proj": True, "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
           "vocab_size": 50257}
    cfg.update(shrink)
    return cfg


@pytest.mark.parametrize("preset", list(OPENAI))
def test_preset_shapes_are_openais(preset):
    _, n_layer, n_embd, n_head, _ = OPENAI[preset]
    m = preset_config(preset, PRESETS).model
    assert (m.n_layer, m.n_embd, m.n_head, m.block_size, m.vocab_multiple) == (n_layer, n_embd, n_head, 1024, 64)
    assert preset_config(preset, PRESETS).data.seq_len == 1024


@pytest.mark.parametrize("preset", list(GPT3))
def test_preset_training_defaults_follow_gpt3_table_2_1(preset):
    t = preset_config(preset, PRESETS).train
    lr, batch = GPT3[preset]
    assert (t.lr, t.total_batch_size) == (lr, batch)
    assert t.min_lr == pytest.approx(lr / 10)  # cosine to 10% of the peak
    assert t.warmup_steps == round(375e6 / batch)
    assert t.max_steps == 10**10 // batch  # one pass over sample-10BT
    assert preset_config(preset, PRESETS).train.out_dir == f"runs/{preset}"


@pytest.mark.parametrize("preset", list(OPENAI))
def test_parameter_counts_equal_openais_checkpoint_shapes(preset):
    hf_name, n_layer, n_embd, n_head, count = OPENAI[preset]
    m = preset_config(preset, PRESETS).model
    with torch.device("meta"):  # no memory, no init cost
        ours = GPT(ModelConfig(n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd, block_size=m.block_size,
                               vocab_size=50257, vocab_multiple=1))
        padded = GPT(ModelConfig(n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd, block_size=m.block_size,
                                 vocab_size=50257))
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**openai_config(hf_name)))
    assert ours.num_params() == count == sum(p.numel() for p in hf.transformer.parameters())
    assert padded.num_params() == count + (50304 - 50257) * n_embd
    assert param_count(n_layer, n_embd, 1024, 50257) == count  # the memory estimate's own count
    # every tensor of OpenAI's layout has our shape (Conv1D weights transposed)
    ours_sd = ours.state_dict()
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    for key, t in hf.transformer.state_dict().items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        shape = tuple(t.shape[::-1]) if key.endswith(conv1d) else tuple(t.shape)
        assert tuple(ours_sd["transformer." + key].shape) == shape, key


@pytest.mark.parametrize("preset", ["gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_preset_micro_batch_fits_an_80gb_gpu_by_the_estimate(preset):
    cfg = preset_config(preset, PRESETS)
    need = estimate_memory(cfg.model, 50257, cfg.train.batch_size, cfg.data.seq_len, bf16=True, ddp=True).total
    assert need <= usable_bytes(80 * GiB)
    assert cfg.train.total_batch_size % (cfg.train.batch_size * cfg.data.seq_len * 8) == 0  # 8 GPUs divide it


def test_unknown_preset_lists_the_family():
    r = subprocess.run([sys.executable, "run_train.py", "--preset", "gpt2-xxl", "--print-config"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert all(name in r.stderr for name in PRESETS)


def _openai_layout_repo(tmp_path, name: str):
    """A random GPT-2 saved as OpenAI's Hub repos are: GPT2Model key names (no ``transformer.`` prefix, no LM head,
    the causal-mask buffers included), OpenAI's config.json with its head count, and two layers of width 8 x heads
    so that the test stays small."""
    from safetensors.torch import save_file

    n_head = openai_config(name)["n_head"]
    cfg = openai_config(name, n_layer=2, n_embd=8 * n_head)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg)).eval()
    sd = {k: v.contiguous() for k, v in hf.transformer.state_dict().items()}
    for i in range(cfg["n_layer"]):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1024, 1024)).view(1, 1, 1024, 1024)
    d = tmp_path / name
    d.mkdir()
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    (d / "config.json").write_text(json.dumps(cfg))
    return hf, d


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_openai_weights_load_through_init_from_the_hub(tmp_path, name):
    """run_sample.py --init gpt2-medium (...) downloads openai-community/<name> and generates what transformers
    generates from the same weights (greedy)."""
    from tests.hubserver import HubServer
    from tokenizer import load_tokenizer

    hf, d = _openai_layout_repo(tmp_path, name)
    tok = load_tokenizer("gpt2")
    prompt = "The history of the river"
    idx = torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        want = hf.generate(idx, max_new_tokens=12, do_sample=False, pad_token_id=50256)[0, idx.size(1):].tolist()
    with HubServer({f"openai-community/{name}": d}) as server:
        env = {**os.environ, "HF_ENDPOINT": server.url, "PYTHONPATH": str(ROOT), "XDG_DATA_HOME": str(tmp_path)}
        r = subprocess.run([sys.executable, str(ROOT / "run_sample.py"), "--init", name, "--prompt", prompt,
                            "--max-new-tokens", "12", "--temperature", "0", "--no-stop-at-eot", "--transcript",
                            "off"], env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == prompt + tok.decode(want) + "\n"  # the prompt is printed before its continuation
