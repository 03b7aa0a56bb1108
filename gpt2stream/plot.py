"""loss_plot.png from metrics.jsonl: train loss (raw and smoothed), validation loss (a mixture's weighted total and
one curve per source) and bits per byte, the eval tasks' accuracy (when evaluated: every ``<task>_acc_norm`` series,
gpt2stream/evals) and the learning rate of every parameter group.

Regenerate a run's plot:  python -m gpt2stream.plot RUN_DIR
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from gpt2stream.errors import UserError


def smooth(values: list[float], half: int) -> list[float]:
    """A centred smoother: at each point, the least-squares line through the points within ``half`` on both sides
    (one-sided near the ends), evaluated there.

    A trailing average, even a bias-corrected EMA, lags a falling loss by about its window: early in a run it sits
    well above the raw loss (and above the validation loss). A centred fit has no lag, and being a line it follows
    a steady trend exactly, up to the last point. O(n) with prefix sums.

    >>> smooth([0.0, 1.0, 2.0, 3.0, 4.0], half=2)
    [0.0, 1.0, 2.0, 3.0, 4.0]
    >>> smooth([0.0, 3.0, 0.0, 3.0, 0.0, 3.0, 0.0], half=3)[3]
    1.2857142857142858
    """
    import numpy as np

    y = np.asarray(values, dtype=np.float64)
    n = len(y)
    if n == 0 or half < 1:
        return [float(v) for v in y]
    x = np.arange(n, dtype=np.float64)

    def prefix(a):
        return np.concatenate([[0.0], np.cumsum(a)])

    s1, sx, sy, sxx, sxy = prefix(np.ones(n)), prefix(x), prefix(y), prefix(x * x), prefix(x * y)
    lo, hi = np.maximum(0, x - half).astype(int), np.minimum(n, x + half + 1).astype(int)
    c, cx, cy = s1[hi] - s1[lo], sx[hi] - sx[lo], sy[hi] - sy[lo]
    cxx, cxy = sxx[hi] - sxx[lo], sxy[hi] - sxy[lo]
    var = c * cxx - cx * cx
    slope = np.where(var > 0, (c * cxy - cx * cy) / np.where(var > 0, var, 1.0), 0.0)
    return (cy / c + slope * (x - cx / c)).tolist()


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def lr_curves(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """{label: [(step, lr)]}: one curve per parameter group (``lr_<group>`` fields) when the groups' lrs differ,
    else the one ``lr``.

    >>> lr_curves([{"step": 1, "lr": 0.1, "lr_muon": 0.2, "lr_no_decay": 0.1}])
    {'muon': [(1, 0.2)], 'no_decay': [(1, 0.1)]}
    """
    out: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        groups = {k[3:]: v for k, v in r.items() if k.startswith("lr_") and _finite(v)} or \
            ({"lr": r["lr"]} if _finite(r.get("lr")) else {})
        for name, v in groups.items():
            out.setdefault(name, []).append((r["step"], v))
    return out


def eval_tasks(records: list[dict[str, Any]]) -> list[str]:
    """The eval tasks a run scored: every ``<task>_acc_norm`` key with a finite value.

    >>> eval_tasks([{"step": 1, "hellaswag_acc_norm": 0.3}, {"step": 1, "loss": 2.0}])
    ['hellaswag']
    """
    return sorted({k[: -len("_acc_norm")] for r in records for k, v in r.items()
                   if k.endswith("_acc_norm") and _finite(v)})


def val_sources(records: list[dict[str, Any]]) -> list[str]:
    """The sources of a mixture run's per-source validation (``val/<name>`` keys), in first-seen order.

    >>> val_sources([{"step": 5, "val_loss": 3.0, "val/web": 2.9, "val/web/bpb": 1.1, "val/code": 3.2}])
    ['web', 'code']
    """
    names: dict[str, None] = {}
    for r in records:
        names.update((k[4:], None) for k, v in r.items() if k.startswith("val/") and k.count("/") == 1
                     and _finite(v))
    return list(names)


def val_curves(ax: Any, records: list[dict[str, Any]]) -> bool:
    """The validation loss (a mixture's weighted total) and, for a mixture, one dashed curve per source."""
    val = [(r["step"], r["val_loss"]) for r in records if _finite(r.get("val_loss"))]
    sources = val_sources(records)
    if val:
        vs, vl = zip(*val, strict=True)
        ax.plot(vs, vl, "o-", color="tab:orange", markersize=3, linewidth=1.4,
                label="validation (weighted)" if sources else "validation")
    for name in sources:
        pts = [(r["step"], r[f"val/{name}"]) for r in records if _finite(r.get(f"val/{name}"))]
        ps, pl = zip(*pts, strict=True)
        ax.plot(ps, pl, "^--", markersize=3, linewidth=1, label=f"val {name}")
    return bool(val)


def eval_panel(ax: Any, records: list[dict[str, Any]], tasks: list[str]) -> None:
    """acc_norm (solid) and acc (dashed) of each task, and each task's chance level when it was recorded."""
    for task in tasks:
        rows = [r for r in records if _finite(r.get(f"{task}_acc_norm"))]
        steps = [r["step"] for r in rows]
        line = ax.plot(steps, [r[f"{task}_acc_norm"] for r in rows], "o-", markersize=3, label=f"{task} acc_norm")
        color = line[0].get_color()
        if all(_finite(r.get(f"{task}_acc")) for r in rows):
            ax.plot(steps, [r[f"{task}_acc"] for r in rows], "s--", color=color, markersize=3, linewidth=1,
                    label=f"{task} acc")
        chance = [r[f"{task}_chance"] for r in rows if _finite(r.get(f"{task}_chance"))]
        if chance:
            ax.axhline(chance[-1], color=color, linewidth=0.8, linestyle=":", label=f"{task} chance")
    ax.set_ylabel("evals")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def plot_metrics(records: list[dict[str, Any]], out_path: str | Path, title: str = "") -> Path:
    # a Figure of its own, not pyplot: no backend or global figure state to set up (a third of the cost of drawing
    # in a short run) and nothing changed for a caller that uses pyplot itself
    from matplotlib.figure import Figure

    train = [(r["step"], r["loss"]) for r in records if "loss" in r and _finite(r.get("loss"))]
    lrs = lr_curves([r for r in records if "loss" in r])
    bpb = [(r["step"], r["val_bpb"]) for r in records if _finite(r.get("val_bpb"))]
    tasks = eval_tasks(records)
    if tasks:  # a middle panel only for runs that score eval tasks
        fig = Figure(figsize=(9, 8))
        ax, ax_ev, ax_lr = fig.subplots(3, 1, sharex=True, height_ratios=[3, 1.3, 1])
        eval_panel(ax_ev, records, tasks)
    else:
        fig = Figure(figsize=(9, 6.5))
        ax, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    if train:
        steps, losses = zip(*train, strict=True)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train (raw)")
        half = max(1, len(losses) // 40)  # a window of ~1/20 of the run, centred: no lag
        ax.plot(steps, smooth(list(losses), half), color="tab:blue", linewidth=1.6, label="train (smoothed)")
    val = val_curves(ax, records)
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend(loc="upper left")
    if bpb:  # bits per byte: comparable across tokenizers
        ax_bpb = ax.twinx()
        bs, bv = zip(*bpb, strict=True)
        ax_bpb.plot(bs, bv, "s--", color="tab:brown", markersize=3, linewidth=1, label="val bits/byte")
        ax_bpb.set_ylabel("val bits per byte")
        ax_bpb.legend(loc="upper right")
    ax.set_title(title or "training")
    for name, curve in lrs.items():  # every parameter group's schedule
        ls, lv = zip(*curve, strict=True)
        ax_lr.plot(ls, lv, label=name)
    if len(lrs) > 1:
        ax_lr.legend(fontsize=8)
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    tmp = out_path.with_name(".tmp-" + out_path.name)
    fig.savefig(tmp, dpi=100, format="png")
    tmp.replace(out_path)  # a viewer never sees a half-written png
    return out_path


def plot_run(run_dir: str | Path) -> Path:
    from gpt2stream.metrics import read_metrics

    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise UserError(f"{metrics} does not exist: give a run directory (the --out-dir of run_train.py)")
    return plot_metrics(read_metrics(metrics), run_dir / "loss_plot.png", title=run_dir.name)


USAGE = "usage: python -m gpt2stream.plot RUN_DIR"
HELP = f"""{USAGE}

Redraw RUN_DIR/loss_plot.png from RUN_DIR/metrics.jsonl: train loss (raw and smoothed by a centred window),
validation loss (a mixture's weighted total and each source's), HellaSwag accuracy (when scored) and the learning
rate. Prints the png's path.
"""


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(HELP, end="")
        return 0
    if len(argv) != 1 or argv[0].startswith("-"):
        print(f"{USAGE} (see --help)", file=sys.stderr)
        return 2
    print(plot_run(argv[0]))
    return 0


if __name__ == "__main__":
    from gpt2stream.cli import run_main

    run_main(main)
