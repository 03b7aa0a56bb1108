"""Every rank resumes from rank 0's checkpoint, or every rank refuses (2 real gloo processes), and the pure parts."""

from __future__ import annotations

import json

import pytest

from tests.test_checkpoint import _state


def _write_run(run_dir) -> None:
    from gpt2stream.checkpoint import save_checkpoint

    for step in (2, 4):
        save_checkpoint(_state(step), run_dir, keep_last=3)


# One pair of processes runs every scenario in turn (a process start is most of the cost); each test reads its own.
SCENARIOS = ("lagging listing", "other content")


def _worker(rank: int, init_file: str, run_dir: str, out: str) -> None:
    import datetime
    import io
    import sys

    import torch
    import torch.distributed as dist

    import gpt2stream.checkpoint as C
    from config import PRESETS
    from gpt2stream import distributed as D
    from gpt2stream.config import load_config
    from gpt2stream.errors import UserError
    from gpt2stream.train.agree import choose_agreed
    from gpt2stream.train.output import RunLog

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    info = D.DistInfo(rank=rank, local_rank=rank, world_size=2, device=torch.device("cpu"), backend="gloo")
    real_list, real_load, results = C.list_checkpoints, C._load, {}
    for scenario in SCENARIOS:
        if rank == 1 and scenario == "lagging listing":  # this node's directory cache has not seen step 4 yet
            C.list_checkpoints = lambda d: [x for x in real_list(d) if x[0] != 4]
        if rank == 1 and scenario == "other content":  # the same name holds another file on this node
            C._load = lambda path, mmap: {**real_load(path, mmap), "step": 2}
        cfg = load_config(["--preset", "tiny", "--out-dir", run_dir, "--resume"], PRESETS)
        stderr, sys.stderr = sys.stderr, io.StringIO()
        try:
            got = choose_agreed(cfg, info, RunLog(info.master))
            results[scenario] = f"{got[0].name} step {got[1]['step']}"
        except UserError as e:
            results[scenario] = f"refused: {e}"
        finally:
            sys.stderr = stderr
            C.list_checkpoints, C._load = real_list, real_load
        dist.barrier()
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(results, f)


@pytest.fixture(scope="module")
def agreed(tmp_path_factory) -> dict[str, list[str]]:
    """{scenario: [rank 0's result, rank 1's]} from 2 real gloo processes resuming one run directory."""
    import torch.multiprocessing as mp

    tmp = tmp_path_factory.mktemp("agree")
    run_dir = tmp / "run"
    _write_run(run_dir)
    out = str(tmp / "res")
    mp.start_processes(_worker, args=(str(tmp / "init"), str(run_dir), out), nprocs=2, start_method="spawn")
    per_rank = [json.loads(open(f"{out}.{r}").read()) for r in range(2)]
    return {s: [per_rank[r][s] for r in range(2)] for s in SCENARIOS}


@pytest.mark.slow
def test_every_rank_loads_rank_0s_choice_even_when_its_listing_lags(agreed):
    assert agreed["lagging listing"] == ["step_00000004.pt step 4"] * 2


@pytest.mark.slow
def test_ranks_that_read_different_steps_all_refuse(agreed):
    r0, r1 = agreed["other content"]
    assert r0 == r1 and r0.startswith("refused: the ranks would resume differently: rank 1 read step 2 from ")
    assert "rank 0 step 4 from" in r0 and "\n" not in r0


def test_disagreement_names_the_first_rank_that_differs():
    from gpt2stream.train.agree import disagreement

    same = [("a.pt", 4, "c")] * 3
    assert disagreement(same) is None
    msg = disagreement([("a.pt", 4, "c"), ("a.pt", 4, "c"), ("b.pt", 2, "c")])
    assert msg.startswith("the ranks would resume differently: rank 2 read step 2 from b.pt, rank 0 step 4 from a.pt")
    assert "has another config" in disagreement([("a.pt", 4, "c"), ("a.pt", 4, "d")])
    assert "rank 1 read step -1 from nothing" in disagreement([("a.pt", 4, "c"), ("", -1, "c")])


def test_the_config_digest_ignores_only_the_resume_target():
    from config import PRESETS
    from gpt2stream.config import load_config
    from gpt2stream.train.agree import checkpoint_view

    a = load_config(["--preset", "tiny", "--resume", "x/step_00000004.pt"], PRESETS)
    b = load_config(["--preset", "tiny", "--resume", "x/step_00000002.pt"], PRESETS)
    c = load_config(["--preset", "tiny", "--max-steps", "7"], PRESETS)
    assert checkpoint_view(None, a) == checkpoint_view(None, b) != checkpoint_view(None, c)


def test_launch_mistakes_are_refused():
    from gpt2stream.distributed import check_launch
    from gpt2stream.errors import UserError

    torchrun = {"RANK": "3", "LOCAL_RANK": "3", "WORLD_SIZE": "8"}
    check_launch({})
    check_launch(torchrun)
    check_launch({**torchrun, "SLURM_PROCID": "0", "SLURM_NTASKS": "2"})  # srun ... torchrun: fine
    check_launch({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"})
    check_launch({"SLURM_NTASKS": "4"})  # a shell in an allocation (salloc), not a task started by srun
    with pytest.raises(UserError, match="SLURM started 4 tasks but torchrun's variables .* srun --ntasks-per-node=1"):
        check_launch({"SLURM_PROCID": "1", "SLURM_NTASKS": "4"})
    with pytest.raises(UserError, match="RANK is set but LOCAL_RANK is not"):
        check_launch({"RANK": "1", "WORLD_SIZE": "2"})


def test_hellaswag_download_names_are_unique(tmp_path):
    from gpt2stream.evals.hellaswag import part_path

    dest = tmp_path / "hellaswag_val.jsonl"
    names = {part_path(dest) for _ in range(50)}
    assert len(names) == 50 and all(p.parent == tmp_path and p.name.endswith(".part") for p in names)
