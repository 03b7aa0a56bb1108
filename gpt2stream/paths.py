"""Can a directory the user named (--out-dir, export's OUT_DIR) be written? Checked before any work, so a wrong path
is one line (UserError) instead of an OSError traceback minutes later. Nothing is created by the check."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gpt2stream.errors import UserError


def _existing_ancestor(path: Path) -> Path:
    """The deepest part of ``path`` that exists (the path itself if it does)."""
    p = path
    while p != p.parent:
        try:
            p.stat()
            return p
        except OSError:  # missing, or a name too long to look up: try the parent
            p = p.parent
    return p


def _name_max(d: Path) -> int:
    try:
        return os.pathconf(d, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_writable_dir(path: str | Path, what: str) -> None:
    """UserError unless ``path`` is, or can become, a directory this process can write. ``what`` names it in the
    message (``--out-dir``)."""
    raw, path = str(path), Path(os.path.abspath(os.path.expanduser(str(path))))
    base = _existing_ancestor(path)
    limit = _name_max(base if base.is_dir() else base.parent)
    for part in path.relative_to(base).parts:
        if len(part.encode()) > limit:
            raise UserError(f"{what} {raw}: the name {part[:20]}... is {len(part.encode())} bytes, longer than "
                            f"this filesystem allows ({limit}); choose a shorter name")
    if not base.is_dir():
        where = "is a file" if base == path else f"cannot be created: {base} is a file"
        raise UserError(f"{what} {raw} {where}, not a directory; choose a directory (a new one is created)")
    try:  # a probe, removed at once: a read-only filesystem refuses even root, which os.access would not show
        Path(tempfile.mkdtemp(prefix=".gpt2stream-probe-", dir=base)).rmdir()
    except OSError as e:
        raise UserError(f"{what} {raw} cannot be written ({base}: {e.strerror}); choose a directory on a writable "
                        f"filesystem") from None
