"""loss_plot.png from metrics.jsonl: train loss (raw and smoothed), validation loss, the eval tasks' accuracy (when
evaluated: every ``<task>_acc_norm`` series, gpt2stream/evals) and the learning rate.

Regenerate a run's plot:  python -m gpt2stream.plot RUN_DIR
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from gpt2stream.errors import UserError


def ema(values: list[float], alpha: float = 0.1) -> list[float]:
    """Exponential moving average, bias-corrected so the start is not pulled towards 0.

    >>> [round(v, 3) for v in ema([1.0, 1.0, 4.0], alpha=0.5)]
    [1.0, 1.0, 2.714]
    """
    out, avg, weight = [], 0.0, 0.0
    for v in values:
        avg = (1 - alpha) * avg + alpha * v
        weight = (1 - alpha) * weight + alpha
        out.append(avg / weight)
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def eval_tasks(records: list[dict[str, Any]]) -> list[str]:
    """The eval tasks a run scored: every ``<task>_acc_norm`` key with a finite value.

    >>> eval_tasks([{"step": 1, "hellaswag_acc_norm": 0.3}, {"step": 1, "loss": 2.0}])
    ['hellaswag']
    """
    return sorted({k[: -len("_acc_norm")] for r in records for k, v in r.items()
                   if k.endswith("_acc_norm") and _finite(v)})


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
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if "loss" in r and _finite(r.get("loss"))]
    val = [(r["step"], r["val_loss"]) for r in records if _finite(r.get("val_loss"))]
    lrs = [(r["step"], r["lr"]) for r in records if "loss" in r and _finite(r.get("lr"))]
    tasks = eval_tasks(records)
    if tasks:  # a middle panel only for runs that score eval tasks
        fig, (ax, ax_ev, ax_lr) = plt.subplots(3, 1, figsize=(9, 8), sharex=True, height_ratios=[3, 1.3, 1])
        eval_panel(ax_ev, records, tasks)
    else:
        fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, height_ratios=[3, 1])
    if train:
        steps, losses = zip(*train, strict=True)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train (raw)")
        alpha = min(1.0, 10.0 / max(len(losses), 10))  # ~ a 1/alpha-step window that scales with run length
        ax.plot(steps, ema(list(losses), alpha), color="tab:blue", linewidth=1.6, label="train (smoothed)")
    if val:
        vs, vl = zip(*val, strict=True)
        ax.plot(vs, vl, "o-", color="tab:orange", markersize=3, linewidth=1.4, label="validation")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    ax.set_title(title or "training")
    if lrs:
        ls, lv = zip(*lrs, strict=True)
        ax_lr.plot(ls, lv, color="tab:green")
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    tmp = out_path.with_name(".tmp-" + out_path.name)
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    tmp.replace(out_path)  # a viewer never sees a half-written png
    return out_path


def plot_run(run_dir: str | Path) -> Path:
    from gpt2stream.metrics import read_metrics

    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise UserError(f"{metrics} does not exist: give a run directory (the --out-dir of run_train.py)")
    return plot_metrics(read_metrics(metrics), run_dir / "loss_plot.png", title=run_dir.name)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m gpt2stream.plot RUN_DIR", file=sys.stderr)
        return 2
    print(plot_run(argv[0]))
    return 0


if __name__ == "__main__":
    from gpt2stream.cli import run_main

    run_main(main)
