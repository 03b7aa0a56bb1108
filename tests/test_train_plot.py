"""metrics.jsonl writer/reader and the loss plot command."""

from __future__ import annotations

import json
import subprocess
import sys

from gpt2stream.metrics import MetricsLog, read_metrics
from gpt2stream.plot import smooth
from tests.test_train_common import ROOT, env


def test_metrics_log_rewrites_history_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for s in (1, 2, 3):
        log.log(step=s, loss=10.0 - s, lr=1e-3)
    log.log(step=3, val_loss=float("nan"))
    assert json.loads(path.read_text().splitlines()[-1])["val_loss"] == "nan"  # still valid JSON
    # a resume from a checkpoint taken at step 2 keeps its history only; a torn last line is ignored when reading
    MetricsLog(path, history=log.records[:2])
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_smoothed_curve_does_not_lag_a_falling_loss():
    """The issue's shape: a loss falling fast from 10.8 with noise. A trailing average (even bias-corrected) sits
    well above the raw loss at step 25; the centred fit stays on the true curve and removes most of the noise."""
    import math
    import random

    rng = random.Random(0)
    true = [3.0 + 7.8 * math.exp(-s / 12) for s in range(200)]
    noisy = [t + rng.gauss(0, 0.15) for t in true]
    out = smooth(noisy, half=5)
    assert abs(out[25] - true[25]) < 0.12 and abs(out[0] - true[0]) < 0.4 and abs(out[-1] - true[-1]) < 0.15
    err = sum((o - t) ** 2 for o, t in zip(out[20:], true[20:], strict=True)) / 180
    raw = sum((o - t) ** 2 for o, t in zip(noisy[20:], true[20:], strict=True)) / 180
    assert err < raw / 4  # smooths
    assert smooth([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], half=2) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # a line stays itself
    assert smooth([5.0], half=3) == [5.0] and smooth([], half=3) == []


def test_plot_command_regenerates_png(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log = MetricsLog(run_dir / "metrics.jsonl")
    for s in range(1, 41):
        log.log(step=s, loss=8.0 / s**0.3, lr=1e-3 * min(1, s / 5))
        if s % 10 == 0:
            log.log(step=s, val_loss=8.2 / s**0.3)
    p = subprocess.run([sys.executable, "-m", "gpt2stream.plot", str(run_dir)], capture_output=True, text=True,
                       env=env(), cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    png = run_dir / "loss_plot.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    p = subprocess.run([sys.executable, "-m", "gpt2stream.plot", str(tmp_path / "nope")], capture_output=True,
                       text=True, env=env(), cwd=ROOT, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "metrics.jsonl does not exist" in p.stderr
    p = subprocess.run([sys.executable, "-m", "gpt2stream.plot", "--help"], capture_output=True, text=True,
                       env=env(), cwd=ROOT, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("usage: python -m gpt2stream.plot RUN_DIR") and not p.stderr


def test_hellaswag_gets_its_own_panel(tmp_path):
    """Runs that score HellaSwag plot acc_norm/acc between the loss and the lr; others keep two panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    from gpt2stream.plot import plot_metrics

    records = [{"step": s, "loss": 5.0 - s / 20, "lr": 1e-3} for s in range(1, 21)]
    plain = plot_metrics(records, tmp_path / "plain.png")
    with_hs = plot_metrics(records + [{"step": s, "hellaswag_acc_norm": 0.25 + s / 400, "hellaswag_acc": 0.25}
                                      for s in (10, 20)], tmp_path / "hs.png")
    assert mpimg.imread(plain).shape[0] < mpimg.imread(with_hs).shape[0]  # taller figure: the extra panel
