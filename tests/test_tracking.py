"""W&B (offline) and TensorBoard mirrors of metrics.jsonl through the real entry point: every record arrives, the
resolved config goes with it, a resumed run continues the same W&B run and TensorBoard shows one history; a missing
package is one line. The start-up memory estimate is checked on the same runs."""

from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2stream.metrics import read_metrics
from gpt2stream.tracking import Trackers, scalars
from tests.test_train_common import ROOT, RUN_TRAIN, TINY, env, make_jsonl

wandb = pytest.importorskip("wandb")  # dev extra: CI installs it, so this never skips there
pytest.importorskip("tensorboard")


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file (LevelDB log format: 32 KiB blocks of checksum, length,
    type, payload; the file starts with a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block is padding
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind == 0 and n == 0:
            continue
        buf += chunk
        if kind in (1, 4):  # FULL or LAST
            r = pb.Record()
            r.ParseFromString(buf)
            out.append(r)
            buf = b""
    return out


def wandb_run(run_dir: Path) -> dict:
    """{'id', 'project', 'name', 'config' (merged), 'history' (list of dicts)} of the one offline run file."""
    out = {"config": {}, "history": []}
    for r in wandb_records(run_dir):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(id=r.run.run_id, project=r.run.project, name=r.run.display_name)
            out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            row = {(i.key or ".".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            out["history"].append({k: v for k, v in row.items() if not k.startswith("_")})
    return out


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """A tiny run to step 4 with --wandb and --tensorboard, then a resume from its step-2 checkpoint to step 6 (so
    steps 3 and 4 are trained twice)."""
    tmp = tmp_path_factory.mktemp("tracked")
    data = make_jsonl(tmp / "docs.jsonl")
    out = tmp / "run"
    e = {k: v for k, v in env().items() if k != "WANDB_DIR"}
    e.update(WANDB_MODE="offline", WANDB_SILENT="true")
    base = [*TINY, "--data", str(data), "--num-workers", "0", "--out-dir", str(out), "--eval-every", "2",
            "--save-every", "2", "--sample-every", "4", "--sample-tokens", "4"]
    first = subprocess.run([sys.executable, RUN_TRAIN, *base, "--max-steps", "4", "--wandb", "gpt2stream-test",
                            "--wandb-run-name", "tiny-tracked", "--tensorboard"], capture_output=True, text=True,
                           env=e, timeout=300, cwd=tmp)
    assert first.returncode == 0, first.stderr[-3000:]
    metrics_first = read_metrics(out / "metrics.jsonl")
    second = subprocess.run([sys.executable, RUN_TRAIN, "--resume", str(out / "checkpoints" / "step_00000002.pt"),
                             "--max-steps", "6"], capture_output=True, text=True, env=e, timeout=300, cwd=tmp)
    assert second.returncode == 0, second.stderr[-3000:]
    return {"out": out, "first": first, "second": second, "metrics_first": metrics_first,
            "metrics": read_metrics(out / "metrics.jsonl")}


@pytest.mark.slow
def test_wandb_offline_gets_every_record_and_config_and_resume_continues_the_run(resumed_run):
    out = resumed_run["out"]
    runs = sorted(glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb")))  # in the run directory
    assert len(runs) == 2, runs
    a, b = wandb_run(Path(runs[0])), wandb_run(Path(runs[1]))
    assert a["id"] == b["id"] and (a["project"], a["name"]) == ("gpt2stream-test", "tiny-tracked")
    ckpt = torch.load(out / "checkpoints" / "step_00000006.pt", map_location="cpu", weights_only=False)
    assert ckpt["trackers"] == {"wandb_run_id": a["id"]}
    # the resolved config: vocab_size filled in from the tokenizer, the resumed run's own max_steps
    assert a["config"]["model"]["vocab_size"] == 50257 and a["config"]["train"]["max_steps"] == 4
    assert b["config"]["train"]["max_steps"] == 6 and b["config"]["eval"]["wandb"] == "gpt2stream-test"
    # every metrics.jsonl record, in order, with the same values (the sample text too)
    assert a["history"] == resumed_run["metrics_first"]
    assert b["history"] == [r for r in resumed_run["metrics"] if r["step"] > 2]
    assert any("sample" in r for r in b["history"]) and any("val_bpb" in r for r in b["history"])


@pytest.mark.slow
def test_tensorboard_event_files_hold_the_same_scalars_as_one_history(resumed_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, metrics = resumed_run["out"], resumed_run["metrics"]
    assert len(glob.glob(str(out / "events.out.tfevents.*"))) == 2
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    for key in ("loss", "lr", "grad_norm", "val_loss", "val_bpb", "tokens"):
        want = [(r["step"], r[key]) for r in metrics if key in r]
        got = [(ev.step, ev.value) for ev in acc.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in want], key  # steps 3-4 of the first run were purged
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), key
    # samples are text (tensor) events, which TensorBoard's purge leaves: step 4 shows the first run's too
    assert sorted({ev.step for ev in acc.Tensors("sample/text_summary")}) == [4, 6]


@pytest.mark.slow
def test_start_up_prints_the_memory_estimate(resumed_run):
    from gpt2stream.config import ModelConfig
    from gpt2stream.memory import GiB, estimate_memory

    line = next(ln for ln in resumed_run["first"].stdout.splitlines() if ln.startswith("memory estimate"))
    est = estimate_memory(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=32), 50257, 4, 32, bf16=False)
    assert line == ("memory estimate per process at micro-batch 4 x 32: " +
                    " + ".join(f"{n} {b / GiB:.2f}" for n, b in est.rows() if b) +
                    f" = {est.total / GiB:.2f} GiB (fp32, eager upper bound)")
    assert line in (resumed_run["out"] / "train.log").read_text()


@pytest.mark.parametrize("module,flags", [("wandb", ["--wandb", "p"]), ("tensorboard", ["--tensorboard"])])
def test_a_missing_package_is_one_line_naming_what_to_install(tmp_path, module, flags):
    data = make_jsonl(tmp_path / "docs.jsonl", n_docs=40)
    code = (f"import sys, runpy; sys.modules[{module!r}] = None; sys.argv = sys.argv[1:]; "
            f"runpy.run_path(sys.argv[0], run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, RUN_TRAIN, *TINY, "--data", str(data), "--num-workers", "0",
                        "--val-docs", "4", "--out-dir", str(tmp_path / "run"), "--max-steps", "1", *flags],
                       capture_output=True, text=True, env=env(), timeout=120, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {flags[0]} needs the {module} package, which is not installed: pip install -e \".[{module}]\" "
        f"(or pip install {module}), or drop {flags[0]}"]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_wandb_without_a_login_is_one_line(tmp_path):
    data = make_jsonl(tmp_path / "docs.jsonl", n_docs=40)
    e = {k: v for k, v in env().items() if not k.startswith("WANDB_")}
    e.update(WANDB_MODE="online", HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "cfg"),
             WANDB_BASE_URL="http://127.0.0.1:9")  # nothing listens on port 9 (discard)
    r = subprocess.run([sys.executable, RUN_TRAIN, *TINY, "--data", str(data), "--num-workers", "0", "--val-docs",
                        "4", "--out-dir", str(tmp_path / "run"), "--max-steps", "1", "--wandb", "p"],
                       capture_output=True, text=True, env=e, timeout=180, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: --wandb p: could not start the W&B run"), r.stderr
    assert "WANDB_MODE=offline" in errors[0] and "Traceback" not in r.stderr


def test_scalars_and_a_failing_tracker_never_stop_training(capsys):
    assert scalars({"step": 2, "loss": 3.0, "tokens": 512, "sample": "x", "lr": "inf"}) == {
        "loss": 3.0, "tokens": 512.0, "lr": float("inf")}

    class Broken:
        def log(self, record):
            raise RuntimeError("dashboard down")

        def state_dict(self):
            return {"broken": 1}

        def close(self, exit_code):
            pass

    seen = []

    class Good(Broken):
        def log(self, record):
            seen.append(record)

        def state_dict(self):
            return {"good": 2}

    t = Trackers([Broken(), Good()])
    assert t.state_dict() == {"broken": 1, "good": 2}
    t.log({"step": 1, "loss": 1.0})
    t.log({"step": 2, "loss": 0.5})
    assert [r["step"] for r in seen] == [1, 2] and t.state_dict() == {"good": 2}
    assert capsys.readouterr().err.count("Broken stopped logging (RuntimeError: dashboard down)") == 1


def test_wandb_run_name_needs_a_project():
    from config import PRESETS
    from gpt2stream.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="needs --wandb PROJECT"):
        load_config(["--wandb-run-name", "x"], PRESETS)
    with pytest.raises(ConfigError, match="WANDB_ENTITY"):
        load_config(["--wandb", "me/proj"], PRESETS)
    assert os.path.basename(load_config(["--wandb", "proj"], PRESETS).eval.wandb) == "proj"


@pytest.mark.slow
def test_report_counts_the_resume_and_spans_both_processes(resumed_run):
    """python -m gpt2stream.report on the resumed run: two launches, one resume, both processes' wall time."""
    out = resumed_run["out"]
    p = subprocess.run([sys.executable, "-m", "gpt2stream.report", str(out)], capture_output=True, text=True,
                       env=env(), cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "launches 2 (1 restarts, 1 resumed from a checkpoint)" in p.stdout
    assert "over 2 process(es)" in p.stdout and "step 6/6" in p.stdout
    starts = [r for r in resumed_run["metrics"] if r.get("event") == "start"]
    assert [r["step"] for r in starts] == [1, 3] and starts[1]["resumed_from"].endswith("step_00000002.pt")
