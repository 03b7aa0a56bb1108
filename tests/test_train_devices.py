"""Device choice and device-side reductions for multi-GPU runs, checked without a GPU (pure functions, gloo)."""

from __future__ import annotations

import pytest
import torch

from gpt2stream import distributed as D
from gpt2stream.errors import UserError
from gpt2stream.precision import autocast_dtype, emulated_bf16_warning


def test_each_local_rank_gets_its_own_gpu():
    assert [D.cuda_index("auto", r, 8, 8) for r in range(8)] == list(range(8))
    assert [D.cuda_index("cuda", r, 8, 8) for r in range(8)] == list(range(8))


def test_single_process_may_pick_a_gpu():
    assert D.cuda_index("cuda:3", 0, 1, 8) == 3
    assert D.cuda_index("cuda", 0, 1, 8) == 0


def test_explicit_gpu_under_torchrun_is_refused():
    # every rank on cuda:0 -> NCCL "Duplicate GPU detected" (or a hang) at the first collective
    with pytest.raises(UserError, match="--device cuda:0 would put all 8 processes"):
        D.cuda_index("cuda:0", 5, 8, 8)


def test_more_processes_than_gpus_is_refused():
    with pytest.raises(UserError, match="8 processes on this node but only 4 CUDA"):
        D.cuda_index("auto", 6, 8, 4)


def test_missing_gpu_index_is_refused():
    with pytest.raises(UserError, match="has 2 CUDA device"):
        D.cuda_index("cuda:5", 0, 1, 2)


def test_local_world_size_from_env(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert D.local_world_size() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert D.local_world_size() == 8


def test_bf16_autocast_on_cuda_only_by_default():
    assert autocast_dtype("auto", torch.device("cuda", 0), (8, 0)) is torch.bfloat16
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("float32", torch.device("cuda", 0), (9, 0)) is None


def test_auto_dtype_is_fp32_before_ampere():
    # V100 (7.0) and T4 (7.5) emulate bf16, slower than fp32; A100 (8.0), H100 (9.0) have it in their tensor cores
    assert autocast_dtype("auto", torch.device("cuda", 0), (7, 0)) is None
    assert autocast_dtype("auto", torch.device("cuda", 0), (7, 5)) is None
    assert autocast_dtype("auto", torch.device("cuda", 0), (9, 0)) is torch.bfloat16
    assert autocast_dtype("bfloat16", torch.device("cuda", 0), (7, 0)) is torch.bfloat16  # asked for explicitly


# ---- setup failures are agreed on by every rank (2 real gloo processes) -------------------------------------------

# The scenarios, each a tuple of the ranks whose setup fails; one pair of processes runs them all in turn (a process
# start is most of the cost), and each test reads its scenario's result.
AGREE_SCENARIOS = ((1,), (0, 1), ())


def _agree_worker(rank: int, init_file: str, out: str) -> None:
    import datetime
    import io
    import json
    import sys

    import torch.distributed as dist

    from gpt2stream.train.agree import agree_errors
    from gpt2stream.train.loop import Stop as _Stop

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    info = D.DistInfo(rank=rank, local_rank=rank, world_size=2, device=torch.device("cpu"), backend="gloo")
    results = {}
    for fail_ranks in AGREE_SCENARIOS:
        err = UserError(f"bad thing on rank {rank}") if rank in fail_ranks else None
        stderr, sys.stderr = sys.stderr, io.StringIO()
        try:
            agree_errors(err, info)
            result = "continued"
        except _Stop as s:
            result = f"stop {s.code}"
        except UserError as e:
            result = f"raised {e}"
        finally:
            printed, sys.stderr = sys.stderr.getvalue(), stderr
        dist.barrier()  # both ranks got here: nobody was left waiting
        results[repr(fail_ranks)] = {"result": result, "printed": printed}
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(results, f)


@pytest.fixture(scope="module")
def agree_results(tmp_path_factory) -> dict[tuple[int, ...], list[dict]]:
    """{fail_ranks: [rank 0's result, rank 1's]} for every scenario of AGREE_SCENARIOS (2 real gloo processes)."""
    import json

    import torch.multiprocessing as mp

    tmp = tmp_path_factory.mktemp("agree")
    out = str(tmp / "res")
    mp.start_processes(_agree_worker, args=(str(tmp / "init"), out), nprocs=2, start_method="spawn")
    per_rank = [json.loads(open(f"{out}.{r}").read()) for r in range(2)]
    return {f: [per_rank[r][repr(f)] for r in range(2)] for f in AGREE_SCENARIOS}


@pytest.mark.slow
def test_setup_error_on_one_rank_stops_every_rank(agree_results):
    r0, r1 = agree_results[(1,)]
    # before: rank 1's UserError was never printed, and rank 0 went on into DDP's broadcast alone
    assert r0 == {"result": "stop 2", "printed": ""}
    assert r1["result"] == "stop 2" and r1["printed"] == "error: [rank 1] bad thing on rank 1\n"


@pytest.mark.slow
def test_setup_error_on_every_rank_is_reported_once(agree_results):
    r0, r1 = agree_results[(0, 1)]
    assert r0 == {"result": "raised bad thing on rank 0", "printed": ""}  # train() prints it
    assert r1 == {"result": "stop 2", "printed": ""}


@pytest.mark.slow
def test_no_error_continues(agree_results):
    assert agree_results[()] == [{"result": "continued", "printed": ""}] * 2


@pytest.mark.slow
def test_torchrun_hellaswag_failure_stops_both_ranks_with_one_message(tmp_path):
    from tests.test_train_common import TINY, make_jsonl, run

    data = make_jsonl(tmp_path / "docs.jsonl", n_docs=100)
    p = run([*TINY, "--data", str(data), "--num-workers", "0", "--max-steps", "2", "--evals-every", "1",
             "--evals-data", f"hellaswag={tmp_path / 'missing.jsonl'}", "--out-dir", str(tmp_path / "run")],
            nproc=2, check=False, timeout=180)
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert p.returncode != 0, p.stderr[-2000:]
    assert len(errors) == 1 and "missing.jsonl: no such file" in errors[0], p.stderr[-3000:]
    assert "step      1/" not in p.stdout  # stopped before training


def test_reduce_dtype_has_no_float64_on_mps():
    from gpt2stream.precision import reduce_dtype

    # MPS cannot hold float64: the per-step stop/failure agreement and the validation sums crashed on a Mac
    assert reduce_dtype(torch.device("mps")) is torch.float32
    assert reduce_dtype(torch.device("cuda", 0)) is torch.float64
    assert reduce_dtype(torch.device("cpu")) is torch.float64


def test_collective_timeout_outlasts_the_data_retry_budget():
    from config import PRESETS
    from gpt2stream.config import load_config
    from gpt2stream.data.loader import stall_timeout
    from gpt2stream.train import collective_timeout

    for argv in ([], ["--max-retries", "30", "--request-timeout", "120"]):
        data = load_config(argv, PRESETS).data
        budget = data.max_retries * data.request_timeout  # what the retry layer may spend before giving up
        assert collective_timeout(data) > stall_timeout(data) >= budget
        assert collective_timeout(data) > 600  # NCCL's default, which killed the waiting ranks first


def test_bf16_on_a_cpu_without_bf16_kernels_is_warned_about():
    cpu = torch.device("cpu")
    msg = emulated_bf16_warning(torch.bfloat16, cpu, native=False)
    assert "emulated" in msg and "--dtype float32" in msg
    assert emulated_bf16_warning(torch.bfloat16, cpu, native=True) is None
    assert emulated_bf16_warning(None, cpu, native=False) is None  # fp32: nothing to say
    assert emulated_bf16_warning(torch.bfloat16, torch.device("cuda", 0), native=False) is None
    # without an answer given, oneDNN's own answer decides
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert (emulated_bf16_warning(torch.bfloat16, cpu) is None) == native
