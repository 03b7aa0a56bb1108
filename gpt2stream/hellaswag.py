"""HellaSwag validation, scored completion-style as the GPT-2 reproductions do (build-nanogpt's hellaswag.py).

Each example is a context and 4 candidate endings. Every ending is appended to the context (with a leading space,
as GPT-2's tokenizer expects between words) and the model's cross-entropy is taken over the ending's tokens only:

* ``acc``      -- the prediction is the ending with the lowest *summed* loss (total log-likelihood);
* ``acc_norm`` -- the prediction is the ending with the lowest *mean* loss per ending token (length-normalised).

For OpenAI's GPT-2 124M this scoring gives acc 0.2859 and acc_norm 0.2955 on the 10,042 validation examples
(Eleuther's harness, which normalises by characters, reports 0.2892 / 0.3114).

Data: ``hellaswag_val.jsonl`` from the original release (github.com/rowanz/hellaswag), downloaded once into
``<HF home>/gpt2stream/hellaswag/`` (``$HF_HOME``, default ``~/.cache/huggingface``), or any local file in the same
format (``ctx``, ``endings``, ``label`` per line) given as ``--hellaswag PATH``.

In the trainer: ``evaluate_hellaswag(model, tokenizer, examples, rank, world, device, autocast_dtype)`` scores
example i on rank ``i % world`` and sums the counts over ranks. Standalone::

    python -m gpt2stream.hellaswag runs/gpt2-124m            # latest checkpoint of a run directory
    python -m gpt2stream.hellaswag runs/x/checkpoints/step_00001000.pt
    python -m gpt2stream.hellaswag --init gpt2               # OpenAI's weights via the Hugging Face Hub
    torchrun --nproc_per_node=8 -m gpt2stream.hellaswag --init gpt2
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from gpt2stream.errors import UserError

HELLASWAG_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
URL_ENV = "GPT2STREAM_HELLASWAG_URL"  # a mirror of the file (also how the tests serve it)
VAL_EXAMPLES = 10042
DOWNLOAD_TIMEOUT = 30.0  # seconds without progress before the download counts as failed
PAD_MULTIPLE = 32  # rows are padded to a multiple of this: few distinct shapes, so torch.compile recompiles little


# ---- the data file --------------------------------------------------------------------------------------------------


def cache_path() -> Path:
    """Where the downloaded validation file is kept: <HF home>/gpt2stream/hellaswag/hellaswag_val.jsonl."""
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(home) / "gpt2stream" / "hellaswag" / "hellaswag_val.jsonl"


def part_path(dest: Path) -> Path:
    """A name for a download in progress that no other process uses, on any machine sharing the cache directory."""
    return dest.with_name(f".{dest.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:12]}.part")


def download(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Fetch url into dest atomically (a temp file renamed into place): a failed download leaves nothing behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_path(dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as f:
            expected = resp.headers.get("Content-Length")
            got = 0
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                got += len(chunk)
        if expected is not None and got != int(expected):
            raise OSError(f"connection closed after {got} of {expected} bytes")
        _check_download(tmp, url)  # never cache an error page or a cut-off file: every later run would read it
        os.replace(tmp, dest)
    except UserError:
        tmp.unlink(missing_ok=True)
        raise
    except (OSError, urllib.error.URLError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise UserError(
            f"cannot download HellaSwag from {url} ({type(e).__name__}: {reason}); with no network, get "
            f"hellaswag_val.jsonl from github.com/rowanz/hellaswag (data/) and pass --hellaswag PATH, or copy it to "
            f"{dest}") from None
    return dest


def _check_download(path: Path, url: str) -> None:
    """UserError unless the downloaded file is HellaSwag data (all of it, when it comes from the official URL)."""
    try:
        examples = _read_examples(path, "downloaded file")
    except UserError as e:
        raise UserError(f"the download from {url} is not HellaSwag data ({e}); nothing was cached: check the URL "
                        f"({URL_ENV}) or pass --hellaswag PATH") from None
    if url == HELLASWAG_URL and len(examples) != VAL_EXAMPLES:
        raise UserError(f"the download from {url} holds {len(examples)} examples, not {VAL_EXAMPLES} (cut off?); "
                        "nothing was cached: try again, or pass --hellaswag PATH")


def resolve_file(path: str = "") -> Path:
    """A given local file, else the cached download, else download it now."""
    if path:
        p = Path(path).expanduser()
        if p.is_dir():
            raise UserError(f"--hellaswag {path} is a directory; give the path of hellaswag_val.jsonl")
        if not p.is_file():
            raise UserError(f"--hellaswag {path}: no such file; give the path of hellaswag_val.jsonl "
                            "(or leave it out to download it)")
        return p
    cached = cache_path()
    if cached.is_file():
        return cached
    return download(os.environ.get(URL_ENV) or HELLASWAG_URL, cached)


def parse_examples(lines, source: str, limit: int | None = None) -> list[dict]:
    """Check and keep ctx / endings / label of each JSON line; UserError naming the line if one is malformed."""
    out: list[dict] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ex = json.loads(line)
            ctx, endings, label = ex["ctx"], ex["endings"], int(ex["label"])
            ok = (isinstance(ctx, str) and isinstance(endings, list) and len(endings) == 4
                  and all(isinstance(e, str) for e in endings) and 0 <= label < 4)
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise UserError(f"{source} line {n} is not a HellaSwag example (needs ctx, 4 endings, label 0-3): "
                            f"{line[:80]!r}")
        out.append({"ctx": ctx, "endings": endings, "label": label})
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise UserError(f"{source} holds no HellaSwag examples")
    return out


def load_examples(path: str = "", limit: int | None = None) -> list[dict]:
    """The validation examples (in file order) from a local file, the cache, or a first download."""
    f = resolve_file(path)
    try:
        return _read_examples(f, str(f), limit)
    except UserError as e:
        if path:
            raise
        raise UserError(f"{e}; delete the cached copy {f} to download it again") from None


def _read_examples(f: Path, source: str, limit: int | None = None) -> list[dict]:
    try:
        with open(f, encoding="utf-8") as fh:
            return parse_examples(fh, source, limit)
    except UnicodeDecodeError as e:
        raise UserError(f"{source} is not a HellaSwag jsonl file (not UTF-8 text: byte {e.start}); give the path of "
                        "hellaswag_val.jsonl") from None
    except OSError as e:
        raise UserError(f"cannot read {source}: {e.strerror or e}") from None


# ---- rendering and scoring -------------------------------------------------------------------------------------------


def render_example(example: dict, tokenizer, block_size: int,
                   pad_multiple: int = PAD_MULTIPLE) -> tuple[torch.Tensor, torch.Tensor, int]:
    """-> tokens (4, T), mask (4, T) with 1 on the ending tokens, label. T is padded (token 0, mask 0).

    A row longer than the context keeps its last block_size tokens (context cut from the left); GPT-2's 1024 never
    needs this on HellaSwag, small models may.
    """
    ctx = tokenizer.encode_ordinary(example["ctx"])
    rows, masks = [], []
    for ending in example["endings"]:
        end = tokenizer.encode_ordinary(" " + ending)  # the space belongs to the ending, as GPT-2 tokenizes text
        row, m = ctx + end, [0] * len(ctx) + [1] * len(end)
        rows.append(row[-block_size:])
        masks.append(m[-block_size:])
    longest = max(len(r) for r in rows)
    T = min(block_size, -(-longest // pad_multiple) * pad_multiple)
    tokens = torch.zeros(4, T, dtype=torch.long)
    mask = torch.zeros(4, T, dtype=torch.long)
    for i, (r, m) in enumerate(zip(rows, masks, strict=True)):
        tokens[i, : len(r)] = torch.tensor(r)
        mask[i, : len(m)] = torch.tensor(m)
    return tokens, mask, int(example["label"])


def ending_losses(model, tokens: torch.Tensor, mask: torch.Tensor,
                  autocast_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, mean loss per token) of each row's masked tokens, each predicted from the tokens before it."""
    device_type = tokens.device.type
    ctx = torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype not in (None, torch.float32) \
        else nullcontext()
    with torch.no_grad(), ctx:
        logits, _ = model(tokens)  # (4, T, V)
    logits = logits[:, :-1, :].float()
    targets = tokens[:, 1:]
    losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    shift_mask = mask[:, 1:].to(losses.dtype)
    total = (losses.view(tokens.size(0), -1) * shift_mask).sum(dim=1)
    return total, total / shift_mask.sum(dim=1)


def _unwrap(model):
    """The GPT inside DDP and torch.compile wrappers (for its config)."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def evaluate_hellaswag(
    model,
    tokenizer,
    examples: list[dict],
    rank: int = 0,
    world: int = 1,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> dict:
    """Score examples i with i % world == rank on this rank, sum the counts over ranks (all ranks must call it).

    Returns {"acc": summed-loss accuracy, "acc_norm": mean-loss accuracy, "n": examples scored in total}, the same
    on every rank (without an initialised process group: this rank's share only). ``model`` may be the plain GPT
    or its torch.compile'd form; ``progress(done, correct_norm, correct)``
    is called every 500 examples with this rank's running counts.
    """
    device = torch.device(device)
    block_size = _unwrap(model).config.block_size
    was_training = model.training
    model.eval()
    correct = correct_norm = n = 0
    try:
        for i in range(rank, len(examples), world):
            tokens, mask, label = render_example(examples[i], tokenizer, block_size)
            total, mean = ending_losses(model, tokens.to(device), mask.to(device), autocast_dtype)
            correct += int(total.argmin().item() == label)
            correct_norm += int(mean.argmin().item() == label)
            n += 1
            if progress is not None and n % 500 == 0:
                progress(n, correct_norm, correct)
    finally:
        model.train(was_training)
    counts = torch.tensor([correct, correct_norm, n], dtype=torch.long, device=device)
    import torch.distributed as dist

    if world > 1 and dist.is_available() and dist.is_initialized():
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    correct, correct_norm, n = (int(c) for c in counts.tolist())
    return {"acc": correct / max(n, 1), "acc_norm": correct_norm / max(n, 1), "n": n}


# ---- standalone command --------------------------------------------------------------------------------------------


@dataclass
class HellaSwagArgs:
    init: str = ""  # Hugging Face GPT-2 weights ("gpt2", ...) or a local HF directory, instead of a run/checkpoint
    hellaswag: str = ""  # local hellaswag_val.jsonl; "" = the cached download
    tokenizer: str = ""  # override the checkpoint's tokenizer (gpt2 for --init)
    device: str = "auto"
    dtype: str = "auto"  # "auto" (bfloat16 on CUDA, float32 elsewhere), "float32", "bfloat16"
    compile: bool = False  # torch.compile the model first
    limit: int = 0  # score only the first N examples (0 = all)
    json: bool = False  # print the result as one JSON line


USAGE = """usage: python -m gpt2stream.hellaswag RUN_DIR | CHECKPOINT | --init gpt2 [options]
  --hellaswag PATH   local hellaswag_val.jsonl (default: download once into the cache)
  --tokenizer SPEC   override the checkpoint's tokenizer     --device DEV  auto, cpu, cuda, cuda:N, mps
  --dtype D          auto, float32, bfloat16                 --compile     torch.compile the model
  --limit N          only the first N examples               --json        print the result as JSON
Runs under torchrun too: examples are split across the processes and the counts summed."""


def parse_args(argv: list[str]) -> tuple[str, HellaSwagArgs]:
    """-> (run directory or checkpoint path, or "" with --init; options)."""
    from gpt2stream.cli import apply_flags, flag_table, parse_flags

    args = HellaSwagArgs()
    table = flag_table(args)
    source, flags, i = "", [], 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a.startswith("--"):
            flags.append(a)
            name = a[2:].replace("_", "-")
            if "=" not in a and name in table and table[name][1].type not in ("bool", bool) and i < len(argv):
                flags.append(argv[i])  # the option's value, even if it looks like a path
                i += 1
        elif source:
            raise UserError(f"unexpected argument {a!r}: give one run directory or checkpoint")
        else:
            source = a
    apply_flags(parse_flags(flags, table), table)
    if bool(source) == bool(args.init):
        raise UserError("give a run directory or checkpoint, or --init NAME (exactly one); --help for usage")
    if args.dtype not in ("auto", "float32", "bfloat16"):
        raise UserError(f"--dtype {args.dtype!r}: use auto, float32 or bfloat16")
    if args.limit < 0:
        raise UserError(f"--limit {args.limit}: must be >= 0 (0 = all examples)")
    return source, args


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(USAGE)
        return 0
    source, args = parse_args(argv)
    if source and not Path(source).expanduser().exists():
        raise UserError(f"{source!r} does not exist: give a run directory (run_train.py --out-dir) or a checkpoint "
                        "file, or --init gpt2")
    from gpt2stream import distributed as D
    from gpt2stream.loading import load_source

    info = D.init_distributed(args.device)
    try:
        is_dir = Path(source).is_dir()
        loaded = load_source(source if is_dir else "", "" if is_dir else source, args.init, args.tokenizer,
                             info.device)
        examples = load_examples(args.hellaswag, args.limit or None)
        dtype = torch.bfloat16 if args.dtype == "bfloat16" or (args.dtype == "auto" and info.device.type == "cuda") \
            else None
        model = torch.compile(loaded.model) if args.compile else loaded.model

        def progress(done: int, correct_norm: int, correct: int) -> None:
            if info.master:
                print(f"hellaswag rank 0: {done} examples, acc_norm so far {correct_norm / done:.4f}",
                      file=sys.stderr, flush=True)

        t0 = time.time()
        result = evaluate_hellaswag(model, loaded.tokenizer, examples, info.rank, info.world_size, info.device,
                                    dtype, progress)
        if info.master:
            if args.json:
                print(json.dumps({**result, "model": loaded.label}), flush=True)
            else:
                print(f"hellaswag {loaded.label}: acc_norm {result['acc_norm']:.4f} (mean loss per ending token) | "
                      f"acc {result['acc']:.4f} (summed loss) | {result['n']} examples | "
                      f"{time.time() - t0:.1f} s", flush=True)
    except BaseException:
        D.shutdown(info, sync=False)  # the other ranks may have failed too: don't wait for them
        raise
    D.shutdown(info)
    return 0


def _entry() -> None:
    from gpt2stream.cli import run_main
    from gpt2stream.distributed import env_world, exit_process

    if env_world()[2] > 1:  # under torchrun: leave through os._exit (gloo may abort at interpreter exit)
        try:
            run_main(main)
        except SystemExit as e:
            exit_process(e.code if isinstance(e.code, int) else 1)
    run_main(main)


if __name__ == "__main__":
    _entry()
