"""metrics.jsonl writer/reader and the loss plot command."""

from __future__ import annotations

import json
import subprocess
import sys

from gpt2stream.metrics import MetricsLog, read_metrics
from gpt2stream.plot import ema
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


def test_ema_is_bias_corrected():
    assert ema([5.0]) == [5.0]
    # weights 0.5 (4.0), 0.25 (1.0), 0.125 (1.0), normalised by their sum 0.875
    assert abs(ema([1.0, 1.0, 4.0], alpha=0.5)[-1] - (0.5 * 4 + 0.25 + 0.125) / 0.875) < 1e-12
    out = ema([2.0] * 50, alpha=0.1)
    assert max(abs(v - 2.0) for v in out) < 1e-12


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
