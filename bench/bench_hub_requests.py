"""Requests a training job sends to the Hub, by kind (api, resolver, CDN) and bytes, against the local test server.

    python bench/bench_hub_requests.py [--steps 4] [--worlds 1,2,4] [--workers 0,1,2] [--ranks 1,8,64,512]
                                       [--reference-tree /path/to/other/checkout]

1. torchrun jobs (the real entry point, tiny model) at each world size x DataLoader workers: requests by kind for
   start-up + ``--steps`` steps, and body bytes per training token. With ``--reference-tree``, the same job run from
   another checkout (e.g. the code before a change) in the same run gives the reference bytes/token and requests.
2. In-process, what a job of R ranks x 2 workers sends: rank 0 opens the data (open_data_for_job), the others get it
   by pickling (what the broadcast and the DataLoader do) and read their first unit; next to it the per-rank
   reference, where every rank opens the source itself for training and again for validation (as the code did before
   one resolution per job; it still gets this code's signed-URL reuse inside each process, so it undercounts).
The server redirects parquet files to signed CDN URLs (valid 1 h), as the Hub does for LFS/Xet files.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpt2stream.config import DataConfig  # noqa: E402
from gpt2stream.data.hub import signed  # noqa: E402
from gpt2stream.data.job import open_data_for_job  # noqa: E402
from gpt2stream.data.open import open_source  # noqa: E402
from tests.hubserver import DEFAULT_REPO, HubServer, build_fineweb_repo  # noqa: E402

TINY = ["--preset", "tiny", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
        "--seq-len", "32", "--batch-size", "4", "--warmup-steps", "2", "--eval-tokens", "256", "--val-docs", "20",
        "--shuffle-buffer", "16", "--sample-every", "0", "--log-every", "1", "--eval-every", "1000",
        "--save-every", "1000"]
QUOTAS = {"anonymous": (500, 3000), "free": (1000, 5000), "PRO": (2500, 12000), "Enterprise": (6000, 50000)}
KINDS = ("api", "resolver", "cdn")


def torchrun_job(tree: Path, url: str, out: Path, world: int, workers: int, steps: int) -> tuple[str, float]:
    total = 4 * 32 * world
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
           str(tree / "run_train.py"), *TINY, "--total-batch-size", str(total), "--max-steps", str(steps),
           "--num-workers", str(workers), "--out-dir", str(out)]
    env = dict(os.environ, HF_ENDPOINT=url, HF_HOME=str(out) + ".hf", OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               PYTHONPATH=str(tree))
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tree)
    if p.returncode != 0:
        raise SystemExit(f"job failed ({tree}, world {world}, workers {workers}):\n{p.stderr[-3000:]}")
    return p.stdout, time.monotonic() - t0


def jobs(a, fx_root: Path, tmp: Path) -> None:
    trees = [("this", ROOT)] + ([("reference", Path(a.reference_tree).resolve())] if a.reference_tree else [])
    print(f"\n## torchrun jobs: start-up + {a.steps} steps (tiny model, 4 x 32 tokens per rank per step)\n")
    print("| code | world | workers | api | resolver | cdn | MB | bytes/token | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for world in a.worlds:
        for workers in a.workers:
            for name, tree in trees:
                with HubServer({DEFAULT_REPO: fx_root}, redirect_data=True) as server:
                    _, wall = torchrun_job(tree, server.url, tmp / f"{name}-{world}-{workers}", world, workers,
                                           a.steps)
                    c = server.counts()
                tokens = a.steps * 4 * 32 * world
                print(f"| {name} | {world} | {workers} | {c['api']} | {c['resolver']} | {c['cdn']} | "
                      f"{c['bytes'] / 1e6:.2f} | {c['bytes'] / tokens:.0f} | {wall:.0f} |", flush=True)


def simulated(a, fx_root: Path, tmp: Path) -> dict[int, dict]:
    cfg = DataConfig(data=DEFAULT_REPO, data_config="sample-10BT", seq_len=32, val_docs=20, num_workers=2,
                     max_retries=2, request_timeout=30)
    out = {}
    for ranks in a.ranks:
        row = {}
        with HubServer({DEFAULT_REPO: fx_root}, redirect_data=True) as server:
            os.environ["HF_ENDPOINT"] = server.url
            signed.TARGETS.clear()
            src = open_data_for_job(cfg, SimpleNamespace(rank=0, ddp=False), tmp / f"sim-{ranks}")
            blob = pickle.dumps(src)
            for reader in range(1, ranks * 2):  # every other process of the job: ranks x 2 workers
                signed.TARGETS.clear()  # a fresh process knows no signed URL but the ones shipped with the source
                other = pickle.loads(blob)
                plan = other.plan(cfg.val_docs, ranks * 2)
                other.read_unit(plan.units[reader % len(plan.units)])
            row["job"] = server.counts()
            server.reset_counters()
            if ranks <= a.max_reference_ranks:
                for reader in range(ranks):  # the per-rank reference: each rank opens it twice (train, validation)
                    for _ in range(2):
                        signed.TARGETS.clear()
                        s = open_source(cfg)
                        plan = s.plan(cfg.val_docs, ranks * 2)
                        s.read_unit(plan.units[reader % len(plan.units)])
                row["per-rank"] = server.counts()
        out[ranks] = row
    return out


def print_simulated(rows: dict[int, dict], n_files: int) -> None:
    print("\n## in-process: start-up requests of a job of R ranks x 2 DataLoader workers\n")
    print("| ranks | api (job) | resolver (job) | api (per-rank) | resolver (per-rank) | job / 1-rank job |")
    print("| --- | --- | --- | --- | --- | --- |")
    one = rows[min(rows)]["job"]
    for ranks, row in rows.items():
        j, r = row["job"], row.get("per-rank")
        ratio = (j["api"] + j["resolver"]) / max(1, one["api"] + one["resolver"])
        ref = f"{r['api']} | {r['resolver']}" if r else "- | -"
        print(f"| {ranks} | {j['api']} | {j['resolver']} | {ref} | {ratio:.2f}x |")
    print(f"\nresolver requests after start-up: one per file ({n_files}) per signed-URL lifetime (~1 h) for the whole "
          f"job, shared through the run directory; every ranged GET goes to the CDN, which is not rate-limited.")
    print("\n## against the Hub's quotas (requests per 5-minute window, api / resolvers)\n")
    print("| ranks | job api / resolver | per-rank api / resolver | " + " | ".join(QUOTAS) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in QUOTAS) + " |")
    for ranks, row in rows.items():
        j, r = row["job"], row.get("per-rank")
        fits = ["job fits" + ("" if not r else ", per-rank " + ("fits" if r["api"] <= q[0] and r["resolver"] <= q[1]
                                                                 else "429"))
                if j["api"] <= q[0] and j["resolver"] <= q[1] else "job 429" for q in QUOTAS.values()]
        ref = f"{r['api']} / {r['resolver']}" if r else "-"
        print(f"| {ranks} | {j['api']} / {j['resolver']} | {ref} | " + " | ".join(fits) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--worlds", default="1,2,4")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--ranks", default="1,8,64,512")
    ap.add_argument("--max-reference-ranks", type=int, default=64, help="per-rank reference up to this many ranks")
    ap.add_argument("--files", type=int, default=14, help="parquet files (sample-10BT has 14)")
    ap.add_argument("--reference-tree", default="", help="another checkout to run the same jobs from")
    ap.add_argument("--skip-jobs", action="store_true")
    a = ap.parse_args()
    a.worlds = [int(x) for x in a.worlds.split(",")]
    a.workers = [int(x) for x in a.workers.split(",")]
    a.ranks = [int(x) for x in a.ranks.split(",")]
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        fx = build_fineweb_repo(tmp / "repo", n_files=a.files, row_groups=6, rows_per_group=40,
                                corpus_dir=ROOT.parent / "shared" / "corpus")
        print(f"fixture: {a.files} parquet files, 6 row groups x 40 rows each; machine: {os.cpu_count()} CPUs")
        if not a.skip_jobs:
            jobs(a, fx.root, tmp)
        print_simulated(simulated(a, fx.root, tmp), a.files)


if __name__ == "__main__":
    main()
