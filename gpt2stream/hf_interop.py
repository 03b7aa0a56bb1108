"""GPT-2 weights in the Hugging Face layout: import (local dir or Hub repo) and export (config.json + safetensors).

HF's GPT-2 stores its matmul weights as Conv1D, i.e. transposed relative to nn.Linear; everything else has the same
name and shape, except that our token embedding may carry padding rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from gpt2stream.config import ModelConfig
from gpt2stream.errors import UserError
from gpt2stream.model import GPT

# Conv1D weights: (in, out) in HF, (out, in) in nn.Linear
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Short names for OpenAI's checkpoints, as transformers accepts them
_ALIASES = {"gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
            "gpt2-large": "openai-community/gpt2-large", "gpt2-xl": "openai-community/gpt2-xl"}


def _fetch(name_or_dir: str) -> Path:
    """A local directory as is, or a Hub repo snapshot (config + weights only) through huggingface_hub."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path
    repo = _ALIASES.get(name_or_dir, name_or_dir)
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(repo, allow_patterns=["config.json", "*.safetensors", "pytorch_model.bin"])
    except Exception as e:  # network, auth or missing repo: all end in the same advice
        raise UserError(
            f"cannot get GPT-2 weights {name_or_dir!r} ({type(e).__name__}): give a local directory with "
            "config.json + model.safetensors, or a reachable Hub repo id (set HF_ENDPOINT for a mirror)"
        ) from None
    return Path(local)


def _read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    st = sorted(directory.glob("*.safetensors"))
    if st:  # preferred: no pickle, memory-mapped
        from safetensors.torch import load_file

        sd: dict[str, torch.Tensor] = {}
        for f in st:
            sd.update(load_file(str(f)))
        return sd
    binary = directory / "pytorch_model.bin"
    if binary.exists():
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise UserError(f"{directory} has no model.safetensors or pytorch_model.bin: not a GPT-2 weight directory")


def config_from_hf(hf: dict, vocab_multiple: int = 64) -> ModelConfig:
    """Our ModelConfig from a transformers GPT2Config dict."""
    if hf.get("model_type") not in (None, "gpt2"):
        raise UserError(f"config.json has model_type={hf.get('model_type')!r}; only GPT-2 weights can be imported")
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise UserError(f"config.json activation_function={act!r}: GPT-2 uses gelu_new (tanh GELU)")
    return ModelConfig(n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                       block_size=hf["n_positions"], vocab_size=hf["vocab_size"], vocab_multiple=vocab_multiple)


def load_hf_gpt2(name_or_dir: str, vocab_multiple: int = 64) -> GPT:
    """GPT with Hugging Face GPT-2 weights (GPT2LMHeadModel or GPT2Model layout)."""
    directory = _fetch(name_or_dir)
    cfg_file = directory / "config.json"
    if not cfg_file.exists():
        raise UserError(f"{directory} has no config.json: not a Hugging Face GPT-2 directory")
    config = config_from_hf(json.loads(cfg_file.read_text()), vocab_multiple)
    model = GPT(config)
    sd = _read_state_dict(directory)
    ours = model.state_dict()
    loaded = set()
    for key, tensor in sd.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")) or key == "lm_head.weight":
            continue  # causal-mask buffers; the head is tied to wte
        name = key if key.startswith("transformer.") else "transformer." + key
        if name not in ours:
            raise UserError(f"unexpected weight {key!r} in {directory}: not a GPT-2 checkpoint")
        if name.endswith(_TRANSPOSED):
            tensor = tensor.t()
        target = ours[name]
        if name == "transformer.wte.weight":  # padded rows stay zero: they are never predicted
            target.zero_()
            target[: tensor.size(0)].copy_(tensor)
        else:
            if target.shape != tensor.shape:
                raise UserError(f"weight {key!r} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)}")
            target.copy_(tensor)
        loaded.add(name)
    missing = [k for k in ours if k not in loaded and k != "lm_head.weight"]
    if missing:
        raise UserError(f"{directory} lacks {len(missing)} GPT-2 weights (first: {missing[0]})")
    return model


def hf_config_dict(config: ModelConfig, eot_id: int | None = None) -> dict:
    """A transformers GPT2Config as a dict for config.json."""
    if config.vocab_size is None:
        raise ValueError("model.vocab_size is unset: take it from the tokenizer first (resolve_vocab)")
    eot = config.vocab_size - 1 if eot_id is None else eot_id
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "n_layer": config.n_layer, "n_head": config.n_head, "n_embd": config.n_embd,
        "n_positions": config.block_size, "n_ctx": config.block_size, "vocab_size": config.vocab_size,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "n_inner": None,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "initializer_range": 0.02,
        "scale_attn_weights": True, "bos_token_id": eot, "eos_token_id": eot, "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


def export_hf(model: GPT, out_dir: str | Path, eot_id: int | None = None) -> Path:
    """Write config.json + model.safetensors that transformers.GPT2LMHeadModel.from_pretrained loads."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    V = model.config.vocab_size
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied: transformers re-ties it to wte
        t = tensor.detach().to("cpu", torch.float32)
        if name.endswith(_TRANSPOSED):
            t = t.t()
        if name == "transformer.wte.weight":
            t = t[:V]  # drop the padding rows
        tensors[name] = t.contiguous()
    weights = out / "model.safetensors"
    save_file(tensors, str(weights), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(weights, 0o666 & ~umask)  # safetensors writes 0600; an export is meant to be shared
    (out / "config.json").write_text(json.dumps(hf_config_dict(model.config, eot_id), indent=2) + "\n")
    return out
