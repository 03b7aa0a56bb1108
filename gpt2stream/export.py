"""Export a trained model to the Hugging Face layout.

    python -m gpt2stream.export RUN_DIR_OR_CHECKPOINT OUT_DIR

writes OUT_DIR/config.json + model.safetensors (``transformers.GPT2LMHeadModel.from_pretrained(OUT_DIR)`` loads
them) and the run's tokenizer as tokenizer.json + tokenizer_config.json + special_tokens_map.json
(``transformers.AutoTokenizer.from_pretrained(OUT_DIR)`` loads it and encodes exactly like the training tokenizer).
OUT_DIR must not be a run directory (or hold one): its config.json would be overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from gpt2stream.errors import UserError

USAGE = "usage: python -m gpt2stream.export RUN_DIR_OR_CHECKPOINT OUT_DIR"

HELP = f"""{USAGE}

Write a trained model in the Hugging Face GPT-2 layout.

  RUN_DIR_OR_CHECKPOINT  a run directory (its newest valid checkpoint is used) or one checkpoints/step_*.pt file
  OUT_DIR                the directory to write (created if needed; must not be a run directory)

Files written to OUT_DIR:
  config.json, model.safetensors      transformers.GPT2LMHeadModel.from_pretrained(OUT_DIR)
  tokenizer.json, tokenizer_config.json, special_tokens_map.json
                                      transformers.AutoTokenizer.from_pretrained(OUT_DIR); the training tokenizer
                                      (GPT-2's, or the tokenizer.json from train_tokenizer.py), same token ids

Options:
  -h, --help                          show this text and exit
"""

# files whose presence marks a gpt2stream run directory (exporting there would overwrite its config.json)
_RUN_SECTIONS = {"model", "data", "train", "eval"}


def looks_like_run(d: Path) -> str | None:
    """Why ``d`` holds a gpt2stream run (something an export must not write over), or None."""
    if (d / "checkpoints").is_dir():
        return "has a checkpoints/ directory"
    if (d / "metrics.jsonl").exists():
        return "has a metrics.jsonl"
    if any(d.glob("step_*.pt")):
        return "holds checkpoint files"
    try:
        cfg = json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(cfg, dict) and _RUN_SECTIONS <= set(cfg):
        return "has a gpt2stream config.json"
    return None


def check_out_dir(src: Path, out: Path) -> None:
    """UserError unless writing the export into ``out`` leaves every file of a run (``src``'s or another) intact."""
    if out.exists() and not out.is_dir():
        raise UserError(f"OUT_DIR {out} is a file; give a new or existing directory for the export")
    if not out.is_dir():
        return
    run_dir = src if src.is_dir() else src.parent.parent  # a checkpoint file is RUN/checkpoints/step_N.pt
    if src.is_dir() and src.name == "checkpoints" and not (src / "checkpoints").is_dir():
        run_dir = src.parent
    if out.resolve() == run_dir.resolve() and looks_like_run(out):
        raise UserError(f"OUT_DIR {out} is the run directory itself (its config.json would be overwritten); "
                        f"export to a new directory, e.g. {run_dir.parent / (run_dir.name + '-hf')}")
    why = looks_like_run(out)
    if why:
        run = out.parent if why == "holds checkpoint files" else out
        raise UserError(f"OUT_DIR {out} is part of a gpt2stream run ({why}) whose files the export would overwrite; "
                        f"export to a new directory, e.g. {run.parent / (run.name + '-hf')}")


def write_tokenizer(tok, spec: str, out: Path, max_length: int) -> None:
    """tokenizer.json (the exact vocabulary) + the small files AutoTokenizer reads to name the special tokens."""
    target = out / "tokenizer.json"
    if spec == "gpt2":
        tok.save(target)  # HF-tokenizers format; same ids as tiktoken's r50k_base
    elif not (target.exists() and os.path.samefile(spec, target)):
        shutil.copyfile(spec, target)
    eot = next(text for text, i in tok.special_tokens.items() if i == tok.eot_id)
    special = {"bos_token": eot, "eos_token": eot, "unk_token": eot}
    config = {
        # PreTrainedTokenizerFast takes every behaviour from tokenizer.json (GPT2TokenizerFast would re-derive its
        # pre-tokenizer from add_prefix_space, which a trained tokenizer's split pattern need not match)
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def export(src: str | Path, out_dir: str | Path) -> Path:
    check_out_dir(Path(src), Path(out_dir))  # before importing torch: a refusal is instant

    import torch

    from gpt2stream.hf_interop import export_hf
    from gpt2stream.loading import load_source

    src = str(src)
    is_dir = Path(src).is_dir()
    loaded = load_source(src if is_dir else "", "" if is_dir else src, "", "", torch.device("cpu"))
    out = Path(export_hf(loaded.model, out_dir, eot_id=loaded.tokenizer.eot_id))
    write_tokenizer(loaded.tokenizer, loaded.tokenizer_spec, out, loaded.model.config.block_size)
    return out


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(HELP, end="")
        return 0
    options = [a for a in argv if a.startswith("-")]
    if options:
        raise UserError(f"unknown option {options[0]}; {USAGE} (see --help)")
    if len(argv) != 2:
        raise UserError(f"expected 2 arguments, got {len(argv)}; {USAGE} (see --help)")
    out = export(argv[0], argv[1])
    print(f"wrote {out / 'config.json'}, {out / 'model.safetensors'} and {out / 'tokenizer.json'}; load with "
          f"transformers.GPT2LMHeadModel.from_pretrained({str(out)!r}) and AutoTokenizer.from_pretrained({str(out)!r})")
    return 0


if __name__ == "__main__":
    from gpt2stream.cli import run_main

    run_main(main)
