"""Data sources known by name: ``--data demo`` is the small corpus shipped inside the package.

A named source is a local file like any other; this module only maps the name to its path.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"  # gpt2stream/assets
NAMED: dict[str, Path] = {
    "demo": ASSETS / "demo" / "shakespeare.parquet",  # 38 Shakespeare plays, public domain (see PROVENANCE.md)
}


def named_data_path(spec: str) -> str | None:
    """The local path a data name stands for (``"demo"``), or None when ``spec`` is not a name.

    >>> named_data_path("demo").endswith("shakespeare.parquet"), named_data_path("HuggingFaceFW/fineweb-edu")
    (True, None)
    """
    path = NAMED.get(spec.strip())
    return None if path is None else str(path)
