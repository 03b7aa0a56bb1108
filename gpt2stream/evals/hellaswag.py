"""HellaSwag's data: the validation examples (a context and 4 endings each), scored by multiple_choice.py.

For OpenAI's GPT-2 124M that scoring gives acc 0.2859 and acc_norm 0.2955 on the 10,042 validation examples
(Eleuther's harness, which normalises by characters, reports 0.2892 / 0.3114).

Data: ``hellaswag_val.jsonl`` from the original release (github.com/rowanz/hellaswag), downloaded once into
``<HF home>/gpt2stream/hellaswag/`` (``$HF_HOME``, default ``~/.cache/huggingface``), or any local file in the same
format (``ctx``, ``endings``, ``label`` per line): ``--data PATH`` to ``python -m gpt2stream.evals hellaswag``,
``--evals-data hellaswag=PATH`` to run_train.py.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path

from gpt2stream.cache_dirs import hf_home
from gpt2stream.errors import UserError
from gpt2stream.evals.multiple_choice import Example, MultipleChoiceTask

HELLASWAG_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
URL_ENV = "GPT2STREAM_HELLASWAG_URL"  # a mirror of the file (also how the tests serve it)
VAL_EXAMPLES = 10042
DOWNLOAD_TIMEOUT = 30.0  # seconds without progress before the download counts as failed
GIVE_PATH = "--data PATH (python -m gpt2stream.evals) or --evals-data hellaswag=PATH (run_train.py)"


# ---- the data file --------------------------------------------------------------------------------------------------


def cache_path() -> Path:
    """Where the downloaded validation file is kept: <HF home>/gpt2stream/hellaswag/hellaswag_val.jsonl."""
    return hf_home() / "gpt2stream" / "hellaswag" / "hellaswag_val.jsonl"


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
            f"hellaswag_val.jsonl from github.com/rowanz/hellaswag (data/) and pass {GIVE_PATH}, or copy it to "
            f"{dest}") from None
    return dest


def _check_download(path: Path, url: str) -> None:
    """UserError unless the downloaded file is HellaSwag data (all of it, when it comes from the official URL)."""
    try:
        examples = _read_examples(path, "downloaded file")
    except UserError as e:
        raise UserError(f"the download from {url} is not HellaSwag data ({e}); nothing was cached: check the URL "
                        f"({URL_ENV}) or pass {GIVE_PATH}") from None
    if url == HELLASWAG_URL and len(examples) != VAL_EXAMPLES:
        raise UserError(f"the download from {url} holds {len(examples)} examples, not {VAL_EXAMPLES} (cut off?); "
                        f"nothing was cached: try again, or pass {GIVE_PATH}")


def resolve_file(path: str = "") -> Path:
    """A given local file, else the cached download, else download it now."""
    if path:
        p = Path(path).expanduser()
        if p.is_dir():
            raise UserError(f"HellaSwag data {path} is a directory; give the path of hellaswag_val.jsonl")
        if not p.is_file():
            raise UserError(f"HellaSwag data {path}: no such file; give the path of hellaswag_val.jsonl "
                            "(or leave it out to download it)")
        return p
    cached = cache_path()
    if cached.is_file():
        return cached
    return download(os.environ.get(URL_ENV) or HELLASWAG_URL, cached)


def parse_examples(lines: Iterable[str], source: str, limit: int | None = None) -> list[Example]:
    """Check and keep ctx / endings / label of each JSON line; UserError naming the line if one is malformed."""
    out: list[Example] = []
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
        out.append(Example(ctx, tuple(endings), label))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise UserError(f"{source} holds no HellaSwag examples")
    return out


def load_examples(path: str = "", limit: int | None = None) -> list[Example]:
    """The validation examples (in file order) from a local file, the cache, or a first download."""
    f = resolve_file(path)
    try:
        return _read_examples(f, str(f), limit)
    except UserError as e:
        if path:
            raise
        raise UserError(f"{e}; delete the cached copy {f} to download it again") from None


def _read_examples(f: Path, source: str, limit: int | None = None) -> list[Example]:
    try:
        with open(f, encoding="utf-8") as fh:
            return parse_examples(fh, source, limit)
    except UnicodeDecodeError as e:
        raise UserError(f"{source} is not a HellaSwag jsonl file (not UTF-8 text: byte {e.start}); give the path of "
                        "hellaswag_val.jsonl") from None
    except OSError as e:
        raise UserError(f"cannot read {source}: {e.strerror or e}") from None


TASK = MultipleChoiceTask(name="hellaswag", title="HellaSwag", load=load_examples)
