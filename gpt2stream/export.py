"""Export a trained model to the Hugging Face layout.

    python -m gpt2stream.export RUN_DIR_OR_CHECKPOINT OUT_DIR

writes OUT_DIR/config.json + model.safetensors (``transformers.GPT2LMHeadModel.from_pretrained(OUT_DIR)`` loads
them) and, when the run used a tokenizer.json from train_tokenizer.py, a copy of it (runs with the GPT-2 tokenizer
use transformers' own "gpt2" tokenizer).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gpt2stream.errors import UserError

USAGE = "usage: python -m gpt2stream.export RUN_DIR_OR_CHECKPOINT OUT_DIR"

HELP = f"""{USAGE}

Write a trained model in the Hugging Face GPT-2 layout.

  RUN_DIR_OR_CHECKPOINT  a run directory (its newest valid checkpoint is used) or one checkpoints/step_*.pt file
  OUT_DIR                the directory to write (created if needed)

Files written to OUT_DIR:
  config.json, model.safetensors      transformers.GPT2LMHeadModel.from_pretrained(OUT_DIR)
  tokenizer.json                      a copy of the run's tokenizer.json from train_tokenizer.py, if it used one

Options:
  -h, --help                          show this text and exit
"""


def export(src: str | Path, out_dir: str | Path) -> Path:
    from gpt2stream.checkpoint import load_model
    from gpt2stream.hf_interop import export_hf
    from tokenizer import load_tokenizer

    model, cfg, spec = load_model(src, "cpu")
    tok = load_tokenizer(spec)
    out = Path(export_hf(model, out_dir, eot_id=tok.eot_id))
    if spec != "gpt2":
        shutil.copyfile(spec, out / "tokenizer.json")
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
    if Path(argv[1]).is_file():
        raise UserError(f"{argv[1]} is a file; OUT_DIR must be a directory")
    out = export(argv[0], argv[1])
    print(f"wrote {out / 'config.json'} and {out / 'model.safetensors'}" +
          (f" and {out / 'tokenizer.json'}" if (out / "tokenizer.json").exists() else "") +
          f"; load with transformers.GPT2LMHeadModel.from_pretrained({str(out)!r})")
    return 0


if __name__ == "__main__":
    from gpt2stream.cli import run_main

    run_main(main)
