"""How durations and byte counts read in the step line and the report (one place, so they agree)."""

from __future__ import annotations

import math


def hms(seconds: float) -> str:
    """``seconds`` as H:MM:SS, rounded; "?" when unknown (not finite).

    >>> hms(3725.4), hms(59), hms(float("inf"))
    ('1:02:05', '0:00:59', '?')
    """
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def human_bytes(n: float) -> str:
    """``n`` bytes in binary units, one decimal.

    >>> human_bytes(1536), human_bytes(3.2e9)
    ('1.5 KiB', '3.0 GiB')
    """
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"
