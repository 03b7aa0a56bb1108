"""Command line of ``train_tokenizer.py``: read documents (gpt2stream's data sources), train, write tokenizer.json.

The tokenizer package itself knows nothing of data sources; this module joins the two.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from gpt2stream.config import DataConfig
from gpt2stream.errors import UserError
from tokenizer.errors import TokenizerError
from tokenizer.patterns import PATTERNS
from tokenizer.progress import Progress, human
from tokenizer.train import check_vocab_size, default_workers, train_bpe

_SUFFIXES = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def count_arg(text: str) -> int:
    """A count written as 1000, 1e9, 500M or 2G (decimal units).

    >>> count_arg("2G"), count_arg("1e6"), count_arg("1500")
    (2000000000, 1000000, 1500)
    """
    t = text.strip().lower().replace("_", "")
    scale = _SUFFIXES.get(t[-1:], 1)
    if scale > 1:
        t = t[:-1]
    try:
        value = float(t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (examples: 5000, 1e9, 500M, 2G)") from None
    if value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


class _Parser(argparse.ArgumentParser):
    """Flag errors become UserError, so they print as one ``error: ...`` line like every other bad input."""

    def error(self, message: str):  # type: ignore[override,unused-ignore]
        extra = message.removeprefix("unrecognized arguments: ")
        if extra != message and all(os.path.exists(x) for x in extra.split()):
            # an unquoted glob the shell expanded into several files: --data takes one path or pattern
            raise UserError(f"--data takes one path or glob, but got several files ({message}); "
                            "quote the glob so the shell leaves it alone: --data 'data/*.parquet'")
        raise UserError(f"{message} (see python train_tokenizer.py --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="train_tokenizer.py",
        description="Train a byte-level BPE tokenizer (GPT-2 style) and write an HF-compatible tokenizer.json.",
    )
    src = p.add_argument_group("data (same sources as model training)")
    src.add_argument("--data", default="HuggingFaceFW/fineweb-edu",
                     help="Hub dataset id, local parquet/jsonl/txt file, directory or glob, or a mixture (mix.yaml or "
                          "'DATA@W,DATA@W': sources sampled by weight) (default: %(default)s)")
    src.add_argument("--data-config", default="sample-10BT", help="Hub dataset config (default: %(default)s)")
    src.add_argument("--split", default="train", help="Hub split (default: %(default)s)")
    src.add_argument("--text-column", default="text", help="column/key holding the text (default: %(default)s)")
    src.add_argument("--txt-docs", choices=("file", "paragraph", "line"), default="file",
                     help="how a local .txt file splits into documents (default: %(default)s)")
    src.add_argument("--max-docs", type=count_arg, default=None,
                     help="read at most this many documents (e.g. 100k); default: all")
    src.add_argument("--max-chars", type=count_arg, default=None,
                     help="read at most this many characters (e.g. 2G); default: all. Set it for the Hub: "
                          "FineWeb-Edu sample-10BT is ~45G characters")
    tr = p.add_argument_group("training")
    tr.add_argument("--vocab-size", type=int, default=50257,
                    help="256 byte tokens + merges + <|endoftext|> (default: %(default)s, as GPT-2)")
    tr.add_argument("--pattern", choices=sorted(PATTERNS), default="gpt2",
                    help="pre-tokenization split regex: GPT-2's or GPT-4's (default: %(default)s)")
    tr.add_argument("--workers", type=int, default=None,
                    help="processes that split the text (default: CPUs, at most 4); never changes the result")
    tr.add_argument("--out", default="tokenizer.json", help="output path (default: %(default)s)")
    tr.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def check_args(args: argparse.Namespace) -> None:
    check_vocab_size(args.vocab_size)
    for name in ("max_docs", "max_chars"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UserError(f"--{name.replace('_', '-')} {v} must be >= 1 (leave it out to read everything)")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers} must be >= 1")
    if not args.out or Path(args.out).is_dir():
        raise UserError(f"--out {args.out!r} is a directory; give a file path such as tokenizer.json")
    out_dir = Path(args.out).resolve().parent
    if not out_dir.is_dir():
        raise UserError(f"cannot write --out {args.out}: directory {out_dir} does not exist")
    if not os.access(out_dir, os.W_OK):
        raise UserError(f"cannot write --out {args.out}: directory {out_dir} is not writable")


_DATA_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".json", ".txt", ".md", ".csv")


def _looks_local(spec: str) -> bool:
    """A local path (even a missing one, which the data pipeline then reports) or a named source, not a Hub id."""
    from gpt2stream.data.sources.named import named_data_path

    return (named_data_path(spec) is not None or os.path.exists(spec) or any(c in spec for c in "*?[")
            or spec.startswith((".", "/", "~")) or spec.lower().endswith(_DATA_SUFFIXES))


def main(argv: list[str] | None = None) -> None:
    """Parse flags, train, save. Raises UserError for bad input (the entry point turns it into ``error: ...``)."""
    try:
        _main(argv)
    except TokenizerError as e:
        raise UserError(str(e)) from None


def _main(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    check_args(args)  # before reading any data: a bad flag should not cost a download

    from gpt2stream.data import iter_documents
    from gpt2stream.data.mixdocs import MixtureDocuments
    from gpt2stream.data.mixture import describe, entries, resolve

    # val_docs=0: the tokenizer reads from the first document (the model's held-out set is not special here)
    data_cfg = resolve(DataConfig(data=args.data, data_config=args.data_config, split=args.split,
                                  text_column=args.text_column, txt_docs=args.txt_docs, val_docs=0))
    progress = Progress(sys.stderr, interval=1.0, enabled=not args.quiet)
    mix = entries(data_cfg)
    if mix and not args.quiet:
        print(describe(mix), file=sys.stderr)
    remote = [e.data for e in mix if not _looks_local(e.data)] if mix else [args.data] * (not _looks_local(args.data))
    if args.max_docs is None and args.max_chars is None and remote:
        print(f"note: no --max-chars or --max-docs: reading all of {', '.join(remote)} (Ctrl-C to stop)",
              file=sys.stderr)
    start = time.perf_counter()
    docs = iter_documents(data_cfg, max_docs=args.max_docs, max_chars=args.max_chars)
    workers = args.workers if args.workers is not None else default_workers()
    tok = train_bpe(docs, args.vocab_size, pattern=args.pattern, workers=workers, progress=progress)
    tok.save(args.out)
    skipped = f", {docs.skipped} unusable skipped" if docs.skipped else ""
    if isinstance(docs, MixtureDocuments):
        skipped += f" (characters: {docs.shares()})"
    print(
        f"wrote {args.out}: {tok.n_vocab} tokens ({args.pattern} split) from {human(docs.docs)} documents, "
        f"{human(docs.chars)} chars{skipped}, in {time.perf_counter() - start:.1f}s",
        file=sys.stderr,
    )
