"""Validation per source of a weighted mixture (#22 item 4): each source's own held-out documents, its own figures
(``val/<name>``, ``val/<name>/bpb``), and ``val_loss``/``val_bpb`` as the total weighted by the mixture."""

from __future__ import annotations

import dataclasses
import importlib.util
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
from gpt2stream.checkpoint import find_latest
from gpt2stream.config import load_config, resolve_vocab
from gpt2stream.data import TrainLoader, val_batches
from gpt2stream.data.doclog import read_log
from gpt2stream.data.mixture import resolve
from gpt2stream.data.mixval import has_validation, mixture_val_batches
from gpt2stream.data.open import open_data
from gpt2stream.errors import UserError
from gpt2stream.metrics import read_metrics
from gpt2stream.train.build import build_model, check_settings
from gpt2stream.train.evaluate import val_line, validation
from tests.test_train_common import RUN_TRAIN, TINY, env, make_jsonl
from tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
HELD = {"web": 90, "code": 60}  # each source's val_docs: its first rows (ids <name>0, <name>1, ...)


@pytest.fixture(scope="module")
def mix_files(tmp_path_factory) -> dict[str, Path]:
    """Two local jsonl sources of different texts, and a mixture file over them (different val_docs each)."""
    d = tmp_path_factory.mktemp("mixval")
    a, b = (prefixed(make_jsonl(d / f"{name}.jsonl", n, seed=seed), name)
            for name, n, seed in (("web", 300, 1), ("code", 200, 2)))
    mix = d / "mix.yaml"
    mix.write_text(f"sources:\n  - data: {a}\n    weight: 3\n    val_docs: {HELD['web']}\n"
                   f"  - data: {b}\n    weight: 1\n    val_docs: {HELD['code']}\n")
    return {"web": a, "code": b, "mix": mix}


def prefixed(path: Path, prefix: str) -> Path:
    """The jsonl with its ids "doc<i>" renamed "<prefix><i>" (ids unique across the sources)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "id": prefix + r["id"][3:]}) + "\n" for r in rows))
    return path


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
    assert has_validation(cfg.data)


def test_the_training_plan_of_each_source_skips_exactly_its_held_out_rows(mix_files):
    """By construction: the mixture's TrainLoader plans each source with that source's val_docs, and validation
    reads the rows that plan holds out."""
    cfg = mixture_cfg(mix_files["mix"])
    mix = open_data(cfg.data)
    loader = TrainLoader(cfg.data, 4, load_tokenizer("gpt2"), total_batch_size=256, source=mix)
    for e, src, plan in zip(mix.entries, mix.sources, loader.plans, strict=True):
        held = [r.doc_id for r in src.read_val(src.plan(e.val_docs, 1))]
        assert held == [f"{e.name}{i}" for i in range(HELD[e.name])]
        trained = [r.doc_id for u in plan.units for r in src.read_unit(u)]
        n = {"web": 300, "code": 200}[e.name]
        assert sorted(trained + held) == sorted(f"{e.name}{i}" for i in range(n)) and not set(trained) & set(held)


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
    # the plateau schedule judges the weighted validation loss: it needs one source that holds documents out
    plateau = dataclasses.replace(resolve_vocab(cfg, 50257), train=dataclasses.replace(cfg.train, schedule="plateau"),
                                  eval=dataclasses.replace(cfg.eval, eval_every=2))
    check_settings(plateau, load_tokenizer("gpt2"))
    with pytest.raises(UserError, match="needs --val-docs > 0"):
        check_settings(dataclasses.replace(plateau, data=none), load_tokenizer("gpt2"))


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
    from gpt2stream.report import load_run, render

    run = fake_run(tmp_path / "run")
    lines = render(load_run(run)).splitlines()
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


def test_report_names_the_mixtures_sources_and_their_epochs(tmp_path):
    from gpt2stream.report import load_run, render

    run = fake_run(tmp_path / "run")
    mixture = [{"name": "web", "data": "org/web", "weight": 0.75, "revision": "a" * 40},
               {"name": "code", "data": "./code/*.jsonl", "weight": 0.25, "revision": ""}]
    (run / "config.json").write_text(json.dumps({"preset": "tiny", "data": {"data": "mix.yaml", "mixture": mixture},
                                                 "train": {"max_steps": 4}}))
    recs = (run / "metrics.jsonl").read_text().splitlines()
    recs[3] = json.dumps({**json.loads(recs[3]), "epoch": 2, "epoch/web": 0, "epoch/code": 2})
    (run / "metrics.jsonl").write_text("\n".join(recs) + "\n")
    lines = render(load_run(run)).splitlines()
    assert lines[1] == (f"data mix.yaml: a mixture of 2 sources: web 75.0% org/web (revision {'a' * 40}), "
                        "code 25.0% ./code/*.jsonl | preset tiny"), lines[1]  # no '(revision (latest))'
    assert lines[2].endswith("| epochs by source: web 0, code 2 (0 = still in the first pass over that source)")


# -- end to end: run_train.py on a mixture (on 2 processes: tests/test_mixture_hub_e2e.py's 2-process resume) ------

RUN_FLAGS = ["--max-steps", "4", "--eval-every", "2", "--save-every", "4", "--log-docs", "--num-workers", "0",
             "--schedule", "plateau"]


@pytest.fixture(scope="module")
def mix_runs(mix_files, tmp_path_factory) -> dict[str, Path]:
    """A 4-step mixture run on 1 process (with TensorBoard, and W&B offline where it is installed: the dev extra CI
    installs)."""
    d = tmp_path_factory.mktemp("mixruns")
    common = [*TINY, "--data", str(mix_files["mix"]), *RUN_FLAGS]
    e = {k: v for k, v in env().items() if k != "WANDB_DIR"}
    e.update(WANDB_MODE="offline", WANDB_SILENT="true")
    wandb = ["--wandb", "gpt2stream-test"] if importlib.util.find_spec("wandb") else []
    p = subprocess.run([sys.executable, RUN_TRAIN, *common, "--out-dir", str(d / "one"), "--tensorboard", "--plot",
                        "true", *wandb], capture_output=True, text=True, env=e, timeout=300, cwd=d)
    assert p.returncode == 0, p.stderr[-3000:]
    return {"one": d / "one"}


def val_records(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "val_loss" in r]


@pytest.mark.slow
def test_metrics_have_each_source_and_the_weighted_total(mix_runs):
    recs = val_records(mix_runs["one"])
    assert [r["step"] for r in recs] == [2, 4]
    for r in recs:
        assert set(r) == {"step", "val_loss", "val_bpb", "val/web", "val/web/bpb", "val/code", "val/code/bpb"}
        assert r["val_loss"] == pytest.approx(0.75 * r["val/web"] + 0.25 * r["val/code"], abs=1e-9)
        assert r["val_bpb"] == pytest.approx(0.75 * r["val/web/bpb"] + 0.25 * r["val/code/bpb"], abs=1e-9)
    log = (mix_runs["one"] / "train.log").read_text()
    for r in recs:
        assert val_line(r["step"], r) in log
    # the plateau schedule watched the weighted total
    _, ckpt = find_latest(mix_runs["one"])
    assert ckpt["schedule"]["recent"] == pytest.approx([r["val_loss"] for r in recs], abs=1e-12)


@pytest.mark.slow
def test_held_out_documents_of_each_source_are_never_trained_on(mix_runs, mix_files):
    trained = {i for r in read_log(mix_runs["one"]) for i in r["ids"]}
    for name, held in HELD.items():
        assert not trained & {f"{name}{i}" for i in range(held)}, name
        assert any(i.startswith(name) for i in trained), name  # the source is trained on


@pytest.mark.slow
def test_wandb_gets_each_source(mix_runs):
    pytest.importorskip("wandb")  # dev extra: CI installs it, so this never skips there
    from tests.test_tracking import wandb_run

    files = sorted((mix_runs["one"] / "wandb").glob("offline-run-*/run-*.wandb"))
    history = [r for r in wandb_run(files[0])["history"] if "val_loss" in r]
    for key in ("val_loss", "val_bpb", "val/web", "val/web/bpb", "val/code", "val/code/bpb"):
        assert [r[key] for r in history] == pytest.approx([r[key] for r in val_records(mix_runs["one"])]), key


@pytest.mark.slow
def test_tensorboard_plot_and_report_show_each_source(mix_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = mix_runs["one"]
    recs = val_records(out)
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0})
    acc.Reload()
    for key in ("val_loss", "val/web", "val/web/bpb", "val/code", "val/code/bpb"):
        assert [ev.value for ev in acc.Scalars(key)] == pytest.approx([r[key] for r in recs], rel=1e-6), key
    assert (out / "loss_plot.png").stat().st_size > 0
    p = subprocess.run([sys.executable, "-m", "gpt2stream.report", str(out)], capture_output=True, text=True,
                       env=env(), cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    for name in ("web", "code"):
        last = recs[-1]
        line = next(ln for ln in p.stdout.splitlines() if ln.lstrip().startswith(name + " "))
        assert f"last {last[f'val/{name}']:.4f} at step 4, val_bpb {last[f'val/{name}/bpb']:.4f}" in line
