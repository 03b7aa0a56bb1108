"""Where the Hugging Face tools keep their files on this machine, read at call time (``huggingface_hub.constants``
reads the environment once, at import, so a later ``HF_HOME`` would be missed)."""

from __future__ import annotations

import os
from pathlib import Path


def hf_home() -> Path:
    """$HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface (as huggingface_hub resolves it)."""
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(home)
