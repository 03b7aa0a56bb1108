"""What many canonical streams cost a rank: data-path memory and Hub bytes per trained token at C = 16, 64 and 512
for the 124M preset's step shape (512 blocks of 1024 tokens), as ratios to the pipeline before this change at its
default C = 16, measured in the same run.

Each case runs in its own child process (one rank holding all C streams, --num-workers 0, so everything the data
path holds is in that process) against the Hub test server in this process, over a FineWeb-Edu-shaped fixture of
640 row groups. This machine cannot hold 512 real row groups (~1000 documents each), so the fixture is scaled and
the buffers with it: 32 documents a row group, --shuffle-buffer = 10 row groups (as 10000 documents are on
FineWeb-Edu), --block-buffer 1024 (the preset's 8192 / 8). Memory: the child's peak RSS minus its RSS once the
loader is built (imports, tokenizer and the opened source are not the data path). Hub bytes: parquet bytes the
server sent per token trained, over the whole run (about one epoch) and over its second half (C = 512 opens 512
row groups at once: its reads come earlier, not more). ``--ref-root``: a checkout of the code before (a git
worktree of main before the change); without it the reference is this tree at --streams 16. The case "units kept
in memory" turns the spill to disk off, to show what it saves (it grows with the row groups' size).

    python bench/bench_streams.py --ref-root /tmp/streams-ref [--rows-per-group 32] [--steps 36]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# a child imports gpt2stream from its PYTHONPATH (this tree or --ref-root), so this tree goes last there
sys.path[:0] = [] if "--child" in sys.argv else [str(ROOT)]
sys.path.append(str(ROOT / "tests"))


def child(args) -> None:
    """One case: build the loader, run ``args.steps`` steps, print JSON; "mid" on stdout at half way."""
    import resource

    from bench_data import rss_mb  # bench/, the script's directory, is on sys.path
    from hubserver import DEFAULT_REPO

    from gpt2stream.config import DataConfig
    from gpt2stream.data import TrainLoader
    from tokenizer import load_tokenizer

    if args.no_spill:
        import gpt2stream.data.loader as L

        L.SPILL_ABOVE = 10**9
    cfg = DataConfig(data=DEFAULT_REPO, data_config="sample-10BT", seq_len=1024, num_workers=0, val_docs=0,
                     streams=args.child, shuffle_buffer=args.shuffle_buffer, block_buffer=args.block_buffer)
    loader = TrainLoader(cfg, batch_size=64, tokenizer=load_tokenizer("gpt2"), seed=1, world_size=args.world,
                         total_batch_size=512 * 1024)
    base = rss_mb()
    t0 = time.perf_counter()
    loader.next_step()
    first = time.perf_counter() - t0
    for s in range(1, args.steps):
        if s == args.steps // 2:
            print("mid", flush=True)
        loader.next_step()
    loader.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tokens = args.steps * loader.blocks // args.world * 1024
    print(json.dumps({"data_mb": peak - base, "first_s": first, "tokens": tokens, "streams": loader.streams}))


def run_case(server, root: Path, streams: int, args, no_spill: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root), "HF_ENDPOINT": server.url}
    cmd = [sys.executable, str(ROOT / "bench" / "bench_streams.py"), "--child", str(streams), "--steps",
           str(args.steps), "--world", str(args.world), "--shuffle-buffer", str(args.shuffle_buffer),
           "--block-buffer", str(args.block_buffer)] + (["--no-spill"] if no_spill else [])
    start = sum(list(server.bytes_served.values()))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=root)
    mid = None
    out = ""
    for line in p.stdout:
        if line.strip() == "mid":
            mid = sum(list(server.bytes_served.values()))
        else:
            out = line
    if p.wait() != 0:
        raise SystemExit(f"case C={streams} failed")
    res = json.loads(out)
    end = sum(list(server.bytes_served.values()))
    half = res["tokens"] * (args.steps - args.steps // 2) / args.steps
    res.update(bytes_per_token=(end - start) / res["tokens"], steady_bytes_per_token=(end - mid) / half)
    return res


def show(name: str, r: dict, ref: dict) -> None:
    def ratio(key: str) -> str:
        return f"{r[key] / ref[key]:6.2f}" if ref[key] else "   n/a"

    print(f"{name:32s} {r['data_mb']:8.0f} {ratio('data_mb')} {r['bytes_per_token']:8.2f} {ratio('bytes_per_token')} "
          f"{r['steady_bytes_per_token']:8.2f} {ratio('steady_bytes_per_token')} {r['first_s']:11.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref-root", default="", help="checkout of the code before (default: this tree)")
    ap.add_argument("--rows-per-group", type=int, default=32, help="documents per row group (FineWeb-Edu: ~1000)")
    ap.add_argument("--shuffle-buffer", type=int, default=320, help="10 row groups, as 10000 docs are on FineWeb-Edu")
    ap.add_argument("--block-buffer", type=int, default=1024, help="the preset's 8192 / 8: the fixture is small")
    ap.add_argument("--steps", type=int, default=36, help="about one epoch of the fixture")
    ap.add_argument("--world", type=int, default=1, help="ranks of the job; rank 0 is measured")
    ap.add_argument("--cases", type=int, nargs="+", default=[16, 64, 512], help="C of the cases measured")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--no-spill", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    from hubserver import DEFAULT_REPO, HubServer, build_fineweb_repo

    corpus = ROOT.parent / "shared" / "corpus"
    tmp = tempfile.TemporaryDirectory()
    fx = build_fineweb_repo(Path(tmp.name) / "repo", n_files=4, row_groups=160, rows_per_group=args.rows_per_group,
                            dump_files=0, corpus_dir=corpus if corpus.is_dir() else None, paragraphs_per_doc=(5, 30))
    import pyarrow.parquet as pq

    text = sum(len(t.encode()) for f in fx.files() for t in pq.read_table(fx.root / f, columns=["text"])["text"]
               .to_pylist())
    print(f"fixture: 4 parquet files x 160 row groups x {args.rows_per_group} documents, {text / 1e6:.0f} MB of "
          f"text (~{text / 4.3 / 1e6:.0f} M tokens); {args.steps} steps of 512 x 1024 tokens "
          f"({args.steps * 512 * 1024 / (text / 4.3):.2f} epochs), rank 0 of {args.world}, --num-workers 0, "
          f"--shuffle-buffer {args.shuffle_buffer}, --block-buffer {args.block_buffer}")
    ref_root = Path(args.ref_root) if args.ref_root else ROOT
    print(f"{'case':32s} {'data MB':>8s} {'ratio':>6s} {'B/token':>8s} {'ratio':>6s} {'2nd half':>8s} {'ratio':>6s} "
          f"{'1st batch s':>11s}", flush=True)
    with HubServer({DEFAULT_REPO: fx.root}, max_lifetime=3600) as server:
        ref = run_case(server, ref_root, 16, args)
        show("before, C = 16 (reference)", ref, ref)
        for c in args.cases:
            show(f"C = {c}", run_case(server, ROOT, c, args), ref)
        show("C = 512, units kept in memory", run_case(server, ROOT, 512, args, no_spill=True), ref)
    tmp.cleanup()


if __name__ == "__main__":
    main()
