"""Collectives and host reads per training step, at world sizes 1, 2 and 4 (torchrun, gloo on CPU).

Each rank runs run_train.py's real loop with counters around torch.distributed's Python collectives (by group:
``training`` = the default group, i.e. NCCL on GPUs; ``control`` = the gloo control group), torch.cuda.synchronize,
Tensor.item / Tensor.tolist (reads of tensor values on the host; the data loader's own reads are left out) and
CUDA event waits. DDP's gradient-bucket all-reduces run inside its C++ reducer and are not counted here: their
number is the number of buckets, the same at every world size.

    python bench/bench_step_costs.py [--steps 8 --log-every 4]

Prints, per world size, the counts of a step that logs (every --log-every steps), of one that does not, and of the
last step (which also validates and saves). Counts, not times: the machine's load does not change them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_object", "broadcast", "broadcast_object_list", "barrier",
               "all_gather_into_tensor", "reduce_scatter_tensor", "gather_object", "scatter_object_list")


class Counts:
    """Per-step counters; ``begin(step)`` starts the record of a step."""

    def __init__(self) -> None:
        self.steps: list[dict] = []
        self.paused = 0

    def begin(self, step: int) -> None:
        self.steps.append({"step": step, "counts": Counter()})

    def add(self, key: str) -> None:
        if self.steps and not self.paused:
            self.steps[-1]["counts"][key] += 1


def install(counts: Counts) -> None:
    """Wrap what is counted (in this process; call before the run starts)."""
    import torch
    import torch.distributed as dist

    from gpt2stream.train import loop

    def wrap(owner, name: str, key):
        orig = getattr(owner, name)

        def wrapped(*a, **kw):
            counts.add(key(a, kw))
            return orig(*a, **kw)

        setattr(owner, name, wrapped)

    def group_of(a, kw) -> str:
        group = kw.get("group")
        return "training" if group is None or group is dist.group.WORLD else "control"

    for name in COLLECTIVES:
        if hasattr(dist, name):
            wrap(dist, name, lambda a, kw, n=name: f"{group_of(a, kw)} {n}")
    wrap(torch.cuda, "synchronize", lambda a, kw: "cuda.synchronize")
    wrap(torch.cuda.Event, "synchronize", lambda a, kw: "event wait")
    for name in ("item", "tolist"):
        wrap(torch.Tensor, name, lambda a, kw: "host read")
    one_step, fetch = loop.Trainer.one_step, loop.Trainer.fetch

    def counted_step(self, it):
        counts.begin(self.step + 1)
        return one_step(self, it)

    def uncounted_fetch(self, it):  # the data loader's own reads are not the step's
        counts.paused += 1
        try:
            return fetch(self, it)
        finally:
            counts.paused -= 1

    loop.Trainer.one_step, loop.Trainer.fetch = counted_step, uncounted_fetch


def worker(out: Path, args: list[str]) -> None:
    """One rank: run_train.py with the counters; its per-step counts go to out/costs_rank<R>.json."""
    import atexit

    counts = Counts()
    install(counts)
    rank = int(os.environ.get("RANK", "0"))

    def dump() -> None:
        (out / f"costs_rank{rank}.json").write_text(json.dumps(
            [{"step": s["step"], "counts": dict(s["counts"])} for s in counts.steps]))

    import run_train
    from gpt2stream import distributed

    exit_process = distributed.exit_process

    def dumping_exit(code: int) -> None:  # the entry point leaves through os._exit: no atexit
        dump()
        exit_process(code)

    distributed.exit_process = dumping_exit
    atexit.register(dump)
    run_train.main(args)


def tiny_args(data: Path, out: Path, steps: int, log_every: int) -> list[str]:
    return ["--preset", "tiny", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
            "--seq-len", "32", "--batch-size", "2", "--total-batch-size", "256", "--data", str(data),
            "--num-workers", "0", "--shuffle-buffer", "16", "--val-docs", "4", "--eval-tokens", "128",
            "--max-steps", str(steps), "--log-every", str(log_every), "--eval-every", "0", "--save-every", "0",
            "--sample-every", "0", "--dtype", "float32", "--device", "cpu", "--out-dir", str(out)]


def measure(world: int, tmp: Path, steps: int, log_every: int) -> list[dict]:
    """Rank 0's per-step counts of a run on ``world`` processes (all ranks' counts must be equal)."""
    data = tmp / "docs.jsonl"
    if not data.exists():
        import random

        rng = random.Random(0)
        words = "river stone light garden winter market letter engine forest window".split()
        data.write_text("".join(json.dumps({"text": " ".join(rng.choice(words) for _ in range(200))}) + "\n"
                                for _ in range(60)))
    out = tmp / f"ws{world}"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
           str(Path(__file__).resolve()), "--worker", str(out), *tiny_args(data, out / "run", steps, log_every)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"world size {world}: exit {p.returncode}\n{p.stderr[-3000:]}")
    ranks = [json.loads((out / f"costs_rank{r}.json").read_text()) for r in range(world)]
    if any(r != ranks[0] for r in ranks):
        raise RuntimeError(f"world size {world}: the ranks counted differently: {ranks}")
    return ranks[0]


def fmt(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        worker(Path(argv[1]), argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--log-every", type=int, default=4)
    ap.add_argument("--worlds", default="1,2,4")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        for world in (int(w) for w in a.worlds.split(",")):
            steps = measure(world, Path(d), a.steps, a.log_every)
            by = {s["step"]: s["counts"] for s in steps}
            quiet = next(s for s in range(2, a.steps) if s % a.log_every)
            print(f"world size {world}: step {quiet} (no log): {fmt(by[quiet])} | step {a.log_every} (logs): "
                  f"{fmt(by[a.log_every])} | step {a.steps} (last: logs, validates, saves): {fmt(by[a.steps])}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
