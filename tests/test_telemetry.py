"""Where the time and the requests go: per-step attribution, pipeline and network totals, run_train.py --plan against
the test Hub's request log, and ``python -m gpt2stream.report`` on a copy of a real run directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from gpt2stream.data import counters
from gpt2stream.train import datastats
from gpt2stream.train.timing import PHASES, StepTimer
from tests.test_train_common import RUN_TRAIN, TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, env, timeout=600):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def hub_job(hub_repo, tmp_path_factory):
    """--plan, then the same job for real (2 steps, 2 DataLoader workers), against one Hub server that redirects
    files to signed CDN URLs as the Hub does; the server's request counts after each."""
    from tests.hubserver import DEFAULT_REPO, HubServer

    tmp = tmp_path_factory.mktemp("hubjob")
    out = tmp / "run"
    args = [RUN_TRAIN, *TINY, "--data", DEFAULT_REPO, "--data-config", "sample-10BT", "--out-dir", str(out),
            "--max-steps", "3", "--num-workers", "2", "--eval-every", "2", "--save-every", "2", "--log-every", "2"]
    with HubServer({DEFAULT_REPO: hub_repo.root}, redirect_data=True) as server:
        env = dict(os.environ, HF_ENDPOINT=server.url, HF_HOME=str(tmp / "hf"), PYTHONPATH=ROOT)
        plan = _run([*args, "--plan", "--nproc", "2"], env)
        planned = server.counts()
        server.reset_counters()
        run = _run(args, env)
        parquet = sum(n for f, n in server.bytes_served.items() if f.endswith(".parquet"))
        counted = {**server.counts(), "parquet_bytes": parquet}
    return {"plan": plan, "planned": planned, "run": run, "counted": counted, "out": out, "tmp": tmp}


def test_plan_predicts_the_startup_requests_the_job_sends(hub_job):
    plan, run, counted = hub_job["plan"], hub_job["run"], hub_job["counted"]
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert run.returncode == 0, run.stderr[-3000:]
    m = re.search(r"Hub requests at start-up .*: api (\d+), resolver (\d+)", plan.stdout)
    assert m, plan.stdout
    # the whole run is its start-up here (no signed URL expires in a few seconds): every api and resolver request
    assert (int(m.group(1)), int(m.group(2))) == (counted["api"], counted["resolver"])
    assert counted["cdn"] > 0  # the data itself came from the CDN
    assert "4 files, 12 row groups" in plan.stdout and "plan: OK" in plan.stdout
    assert "anonymous" in plan.stdout and "Enterprise" in plan.stdout
    assert hub_job["planned"]["api"] == counted["api"]  # the plan itself opened the data as rank 0 does


def test_run_records_step_attribution_and_network_totals(hub_job):
    out, counted = hub_job["out"], hub_job["counted"]
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 3
    for r in steps:
        assert all(r[k] >= 0 for k in PHASES), r
        assert sum(r[k] for k in PHASES) <= r["ms"] * 1.01 + 1, r  # parts of the step, not more than it
        assert r["compute_ms"] > 0
    totals = [r for r in records if "net/api" in r]
    assert [r["step"] for r in totals] == [2, 3]  # every --log-every steps, and the last step
    last = totals[-1]
    # the job's totals from the main process and both workers equal what the server saw
    assert (last["net/api"], last["net/resolver"], last["net/cdn"]) == (counted["api"], counted["resolver"],
                                                                       counted["cdn"])
    assert last["net/bytes"] == counted["parquet_bytes"]  # the data files' bytes (not README's, not JSON)
    assert last["data/docs"] > 0 and last["data/tokens"] > last["data/docs"]
    assert last["data/tokenize_tok_s_per_reader"] > 0
    assert "network:" in hub_job["run"].stdout and "waited for data" in hub_job["run"].stdout


def test_report_reads_a_copy_of_the_run_directory(hub_job):
    copy = hub_job["tmp"] / "copied-elsewhere"
    shutil.copytree(hub_job["out"], copy)
    p = _run(["-m", "gpt2stream.report", str(copy)], dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr
    text = p.stdout
    assert f"run {copy}: finished" in text
    assert "step 3/3 | tokens 768" in text
    assert re.search(r"validation: best loss \d+\.\d+ at step \d", text)
    assert "step time split (3 steps" in text and "data wait" in text
    assert f"requests api {hub_job['counted']['api']}, resolver {hub_job['counted']['resolver']}" in text
    assert "launches 1 (0 restarts" in text
    assert f"checkpoint: newest {copy}/checkpoints/step_00000003.pt" in text
    assert f"run_train.py --out-dir {copy} --resume --max-steps N" in text


def test_report_and_plan_refuse_in_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = _run(["-m", "gpt2stream.report", str(tmp_path)], env)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "not a run directory" in p.stderr
    # a plan that cannot work: more checkpoints than any disk holds
    p = _run([RUN_TRAIN, *TINY, "--data", "demo", "--out-dir", str(tmp_path / "r"), "--keep-last", "10000000",
              "--plan"], env)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "plan: cannot work: the checkpoints need" in p.stdout and "Hub requests: none (local files)" in p.stdout
    assert not (tmp_path / "r").exists()


def test_timer_attributes_wall_time_on_cpu():
    t = StepTimer(torch.device("cpu"))
    t.host("data_wait_ms", 0.5)
    t.start()
    sum(range(10000))
    t.mark("compute_ms")
    t.mark("sync_ms")
    t.mark("optim_ms")
    got = t.finish(1)
    assert got["data_wait_ms"] == 500.0 and got["compute_ms"] > 0 and set(got) == set(PHASES)
    assert t.finish(2) == dict.fromkeys(PHASES, 0.0)  # per step


def test_worker_totals_count_each_worker_once_across_restarts():
    w = counters.WorkerTotals()
    w.update(0, {"data/docs": 5})
    w.update(0, {"data/docs": 7})  # newer totals of the same worker replace the older
    w.update(1, {"data/docs": 1})
    w.end()  # the loader stopped its workers; new ones start from zero
    w.update(0, {"data/docs": 2})
    assert w.total() == {"data/docs": 10}


def test_stall_cause_names_the_counter_that_explains_it():
    base = {"data/tokens": 1e6, "data/tokenize_s": 1.0, "net/api": 2, "net/resolver": 5, "net/cdn": 100}
    assert "rate-limit" in datastats.stall_cause({**base, "net/rate_limit_wait_s": 40}, 0.3, 1e3, 4, 2)
    assert "--request-timeout" in datastats.stall_cause({**base, "net/retries": 30}, 0.3, 1e3, 4, 2)
    slow_tok = {**base, "data/tokenize_s": 100.0}  # 10k tok/s per thread
    assert "--num-workers (now 2)" in datastats.stall_cause(slow_tok, 0.3, 1e6, 4, 2)
    assert "mirror" in datastats.stall_cause(base, 0.3, 1e3, 4, 2)
