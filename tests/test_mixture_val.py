"""Validation per source of a weighted mixture (#22 item 4): each source's own held-out documents, its own figures
(``val/<name>``, ``val/<name>/bpb``), and ``val_loss``/``val_bpb`` as the total weighted by the mixture."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from config import PRESETS
from gpt2stream import distributed as D
from gpt2stream.config import load_config
from gpt2stream.data import val_batches
from gpt2stream.data.mixture import resolve
from gpt2stream.data.mixval import has_validation, mixture_val_batches
from gpt2stream.data.open import open_data
from gpt2stream.train.build import build_model
from gpt2stream.train.evaluate import val_line, validation
from tests.test_train_common import TINY, env, make_jsonl
from tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mix_files(tmp_path_factory) -> dict[str, Path]:
    """Two local jsonl sources of different texts, and a mixture file over them (different val_docs each)."""
    d = tmp_path_factory.mktemp("mixval")
    a, b = make_jsonl(d / "web.jsonl", 300, seed=1), make_jsonl(d / "code.jsonl", 200, seed=2)
    mix = d / "mix.yaml"
    mix.write_text(f"sources:\n  - data: {a}\n    weight: 3\n    val_docs: 30\n"
                   f"  - data: {b}\n    weight: 1\n    val_docs: 12\n")
    return {"web": a, "code": b, "mix": mix}


def mixture_cfg(mix: Path, *extra: str):
    cfg = load_config([*TINY, "--data", str(mix), *extra], PRESETS)
    return dataclasses.replace(cfg, data=resolve(cfg.data))


def blocks(batches) -> list[tuple[int, ...]]:
    """Every row of (x, y) batches as the block of seq_len+1 tokens it came from."""
    return [tuple(x[i].tolist()) + (int(y[i, -1]),) for x, y in batches for i in range(x.shape[0])]


def test_each_source_validates_on_its_own_held_out_documents(mix_files):
    cfg = mixture_cfg(mix_files["mix"])
    tok = load_tokenizer("gpt2")
    mix = open_data(cfg.data)
    got = mixture_val_batches(cfg.data, 4, tok, num_tokens=256, source=mix)
    assert list(got) == ["web", "code"]
    for e, src in zip(mix.entries, mix.sources, strict=True):
        alone = val_batches(e.data_cfg(cfg.data), 4, tok, num_tokens=256, source=src)
        assert blocks(got[e.name]) == blocks(alone) and len(blocks(alone)) == 8  # 256 tokens / seq_len 32
    assert blocks(got["web"]) != blocks(got["code"])
    # the held-out rows are the source's own first val_docs rows (the ones its training plan skips)
    plan = mix.sources[1].plan(12, 1)
    assert [r.doc_id for r in mix.sources[1].read_val(plan)] == [f"doc{i}" for i in range(12)]
    assert has_validation(cfg.data)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_share_out_each_source_exactly(mix_files, world):
    cfg = mixture_cfg(mix_files["mix"])
    tok = load_tokenizer("gpt2")
    mix = open_data(cfg.data)
    one = mixture_val_batches(cfg.data, 4, tok, num_tokens=300, source=mix)
    ranks = [mixture_val_batches(cfg.data, 4, tok, rank=r, world_size=world, num_tokens=300, source=mix)
             for r in range(world)]
    for name in one:
        shares = [blocks(r[name]) for r in ranks]
        union = [shares[j % world][j // world] for j in range(sum(map(len, shares)))]
        assert union == blocks(one[name])  # block j on rank j % world: the same set in the same order


def test_a_source_without_val_docs_has_no_batches(tmp_path, mix_files):
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"sources": [{"data": str(mix_files["web"]), "weight": 1, "val_docs": 0},
                                           {"data": str(mix_files["code"]), "weight": 1, "val_docs": 5}]}))
    cfg = mixture_cfg(mix)
    got = mixture_val_batches(cfg.data, 4, load_tokenizer("gpt2"), num_tokens=64)
    assert got["web"] == [] and got["code"]
    assert has_validation(cfg.data)
    none = dataclasses.replace(cfg.data, mixture=[{**d, "val_docs": 0} for d in cfg.data.mixture])
    assert not has_validation(none)


def test_validation_reports_each_source_and_the_weighted_total(mix_files):
    cfg = mixture_cfg(mix_files["mix"])
    tok = load_tokenizer("gpt2")
    model = build_model(dataclasses.replace(cfg.model, vocab_size=tok.n_vocab), 0)
    info = D.DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="")
    val = mixture_val_batches(cfg.data, 4, tok, num_tokens=256)
    parts = SimpleNamespace(info=info, tok=tok, fwd_model=model, cfg=cfg, amp=None, val=val)
    got = validation(parts)  # type: ignore[arg-type]
    assert got is not None
    assert set(got) == {"val_loss", "val_bpb", "val/web", "val/web/bpb", "val/code", "val/code/bpb"}
    for name in ("web", "code"):  # each source's figures are those of its batches validated alone
        alone = validation(SimpleNamespace(**{**vars(parts), "val": val[name]}))  # type: ignore[arg-type]
        assert alone is not None
        assert got[f"val/{name}"] == pytest.approx(alone["val_loss"], abs=1e-9)
        assert got[f"val/{name}/bpb"] == pytest.approx(alone["val_bpb"], abs=1e-9)
    assert got["val_loss"] == pytest.approx(0.75 * got["val/web"] + 0.25 * got["val/code"], abs=1e-9)
    assert got["val_bpb"] == pytest.approx(0.75 * got["val/web/bpb"] + 0.25 * got["val/code/bpb"], abs=1e-9)
    assert got["val/web"] != pytest.approx(got["val/code"], abs=1e-6)
    line = val_line(7, got)
    assert line.startswith(f"step      7 | val loss {got['val_loss']:.4f} | val bpb {got['val_bpb']:.4f} | web ")
    assert f"| code {got['val/code']:.4f} ({got['val/code/bpb']:.4f} bpb)" in line


def fake_run(path: Path) -> Path:
    """A run directory whose metrics.jsonl holds a mixture's validation records."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"preset": "tiny", "data": {"data": "mix.yaml"},
                                                  "train": {"max_steps": 4}}))
    recs = [{"step": s, "loss": 5.0 - s / 10, "lr": 1e-3, "ms": 10.0, "tokens": 256 * s} for s in range(1, 5)]
    for s, (w, c) in ((2, (4.0, 5.0)), (4, (3.5, 5.2))):
        recs.append({"step": s, "val_loss": 0.75 * w + 0.25 * c, "val_bpb": 1.0, "val/web": w, "val/web/bpb": w / 3,
                     "val/code": c, "val/code/bpb": c / 3})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_report_and_plot_show_each_source(tmp_path):
    run = fake_run(tmp_path / "run")
    p = subprocess.run([sys.executable, "-m", "gpt2stream.report", str(run)], capture_output=True, text=True,
                       env=env(), cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    total = next(ln for ln in lines if ln.startswith("validation"))
    assert total.startswith("validation (weighted by the mixture): best loss 3.9250 at step 4")
    web = next(ln for ln in lines if ln.lstrip().startswith("web "))
    code = next(ln for ln in lines if ln.lstrip().startswith("code "))
    assert "best loss 3.5000 at step 4" in web and "last 3.5000 at step 4" in web
    assert "best loss 5.0000 at step 2, val_bpb 1.6667" in code and "last 5.2000 at step 4" in code

    import matplotlib

    from gpt2stream.metrics import read_metrics
    from gpt2stream.plot import plot_metrics, val_curves

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert val_curves(ax, read_metrics(run / "metrics.jsonl"))
    curves = {ln.get_label(): list(ln.get_ydata()) for ln in ax.get_lines()}
    plt.close(fig)
    assert curves == {"validation (weighted)": [4.25, 3.925], "val web": [4.0, 3.5], "val code": [5.0, 5.2]}
    assert math.isclose(curves["validation (weighted)"][0], 0.75 * 4.0 + 0.25 * 5.0)
    assert plot_metrics(read_metrics(run / "metrics.jsonl"), run / "loss_plot.png").stat().st_size > 0
