"""Export a trained model to the Hugging Face layout.

    python -m gpt2stream.export RUN_DIR_OR_CHECKPOINT OUT_DIR

writes OUT_DIR/config.json + model.safetensors (``transformers.GPT2LMHeadModel.from_pretrained(OUT_DIR)`` loads
them) and the run's tokenizer as tokenizer.json + tokenizer_config.json + special_tokens_map.json
(``transformers.AutoTokenizer.from_pretrained(OUT_DIR)`` loads it and encodes exactly like the training tokenizer).
OUT_DIR must be new, empty or an earlier export: files of the user's own (a config.json!) are never written over
unless --force is given, and a run directory never is.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from gpt2stream.errors import UserError
from gpt2stream.paths import check_writable_dir

USAGE = "usage: python -m gpt2stream.export RUN_DIR_OR_CHECKPOINT OUT_DIR [--force]"

HELP = f"""{USAGE}

Write a trained model in the Hugging Face GPT-2 layout.

  RUN_DIR_OR_CHECKPOINT  a run directory (its newest valid checkpoint is used) or one checkpoints/step_*.pt file
  OUT_DIR                new, empty or an earlier export; must not be a run directory

Files written to OUT_DIR:
  config.json, model.safetensors      transformers.GPT2LMHeadModel.from_pretrained(OUT_DIR)
  tokenizer.json, tokenizer_config.json, special_tokens_map.json
                                      transformers.AutoTokenizer.from_pretrained(OUT_DIR); the training tokenizer
                                      (GPT-2's, or the tokenizer.json from train_tokenizer.py), same token ids

Options:
  --force                             write into OUT_DIR although it holds other files (those named above are
                                      replaced; the others are left alone)
  -h, --help                          show this text and exit
"""

# what an export writes: a directory holding only these (config.json a GPT-2 one) is an earlier export
EXPORT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json")

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


def foreign_files(out: Path) -> list[str]:
    """The entries of ``out`` an export did not write (a config.json that is not a transformers GPT-2 config
    counts: it is the user's own)."""
    names = sorted(p.name for p in out.iterdir())
    foreign = [n for n in names if n not in EXPORT_FILES]
    if "config.json" in names:
        try:
            cfg = json.loads((out / "config.json").read_text())
        except (OSError, ValueError):
            cfg = None
        if not (isinstance(cfg, dict) and cfg.get("model_type") == "gpt2"):
            foreign.insert(0, "config.json")
    return foreign


def check_out_dir(src: Path, out: Path, force: bool = False) -> None:
    """UserError unless writing the export into ``out`` leaves every file of a run (``src``'s or another) intact,
    and, without ``force``, every file that is not an earlier export's."""
    check_writable_dir(out, "OUT_DIR")
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
    foreign = [] if force else foreign_files(out)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UserError(f"OUT_DIR {out} already holds files the export did not write ({shown}); export to a new or "
                        f"empty directory, or add --force to write {', '.join(EXPORT_FILES[:2])} and the tokenizer "
                        f"files there anyway")


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


def export(src: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    check_out_dir(Path(src), Path(out_dir), force)  # before importing torch: a refusal is instant

    import torch

    from gpt2stream.hf_interop import export_hf
    from gpt2stream.loading import load_source

    src = str(src)
    is_dir = Path(src).is_dir()
    loaded = load_source(src if is_dir else "", "" if is_dir else src, "", "", torch.device("cpu"))
    try:
        out = Path(export_hf(loaded.model, out_dir, eot_id=loaded.tokenizer.eot_id))
        write_tokenizer(loaded.tokenizer, loaded.tokenizer_spec, out, loaded.model.config.block_size)
    except OSError as e:  # read-only filesystem, no space, a name too long, a file where a directory should be
        raise UserError(f"cannot write the export to {out_dir}: {e.strerror or e}; choose another OUT_DIR") from None
    return out


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(HELP, end="")
        return 0
    force = "--force" in argv
    argv = [a for a in argv if a != "--force"]
    options = [a for a in argv if a.startswith("-")]
    if options:
        raise UserError(f"unknown option {options[0]}; {USAGE} (see --help)")
    if len(argv) != 2:
        raise UserError(f"expected 2 arguments, got {len(argv)}; {USAGE} (see --help)")
    out = export(argv[0], argv[1], force)
    print(f"wrote {out / 'config.json'}, {out / 'model.safetensors'} and {out / 'tokenizer.json'}; load with "
          f"transformers.GPT2LMHeadModel.from_pretrained({str(out)!r}) and AutoTokenizer.from_pretrained({str(out)!r})")
    return 0


if __name__ == "__main__":
    from gpt2stream.cli import run_main

    run_main(main)
