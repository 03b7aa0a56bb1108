"""Parquet reads through HubFile (data/hub/file.py) from the local Hub test server vs the same files on local disk.

    python bench/bench_hub_read.py [--rows-per-group 400] [--row-groups 8] [--files 2] [--repeat 3]

Prints, per read-ahead size: throughput as a RATIO to pyarrow reading the local files with its own native file
reader (``pq.ParquetFile(path)``: no Python file object), the two measured in alternation, round after round, and
compared by their medians; the number of HTTP requests, and bytes fetched / bytes of the columns read (over-fetch).
Loopback HTTP isolates our client's overhead (requests, buffering, copies) from real network latency.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow.parquet as pq  # noqa: E402

from gpt2stream.data.hub.file import HubFile  # noqa: E402
from gpt2stream.data.hub.resolve import resolve_dataset  # noqa: E402
from gpt2stream.data.hub.retry import RetryPolicy  # noqa: E402
from tests.hubserver import DEFAULT_REPO, HubServer, build_fineweb_repo  # noqa: E402

COLUMNS = ["text", "id"]


def read_all(open_file, paths) -> tuple[int, int]:
    """Every row group of every file; ``open_file(p)`` gives a file object, or a path for pyarrow's own reader."""
    rows = nbytes = 0
    for p in paths:
        f = open_file(p)
        pf = pq.ParquetFile(f)
        for i in range(pf.metadata.num_row_groups):
            t = pf.read_row_group(i, columns=COLUMNS)
            rows += t.num_rows
            nbytes += t.nbytes
        pf.close()
        if hasattr(f, "close"):
            f.close()
    return rows, nbytes


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2)
    ap.add_argument("--row-groups", type=int, default=8)
    ap.add_argument("--rows-per-group", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    corpus = ROOT.parent / "shared" / "corpus"
    with tempfile.TemporaryDirectory() as tmp:
        fx = build_fineweb_repo(Path(tmp), n_files=a.files, row_groups=a.row_groups, rows_per_group=a.rows_per_group,
                                corpus_dir=corpus if corpus.is_dir() else None, paragraphs_per_doc=(3, 20))
        paths = fx.files()
        file_bytes = sum((fx.root / p).stat().st_size for p in paths)
        col_bytes = 0
        for p in paths:
            md = pq.ParquetFile(fx.root / p).metadata
            for g in range(md.num_row_groups):
                for c in range(md.num_columns):
                    if md.row_group(g).column(c).path_in_schema in COLUMNS:
                        col_bytes += md.row_group(g).column(c).total_compressed_size
        local = lambda: read_all(lambda p: str(fx.root / p), paths)  # noqa: E731 - pyarrow opens the path itself
        _, (rows, _) = timed(local)  # warm the page cache
        print(f"{len(paths)} files, {file_bytes / 1e6:.1f} MB, {rows} rows; columns {COLUMNS} = "
              f"{col_bytes / 1e6:.1f} MB compressed; machine shared and loaded: compare the ratios")
        with HubServer({DEFAULT_REPO: fx.root}) as server:
            os.environ["HF_ENDPOINT"] = server.url
            policy = RetryPolicy()
            files = {f.path: f for f in resolve_dataset(DEFAULT_REPO, "sample-10BT", policy=policy).files}
            for readahead in (64 << 10, 1 << 20, 4 << 20):
                opened: list[HubFile] = []

                def open_remote(p, readahead=readahead, opened=opened):
                    f = HubFile.open(files[p], policy, readahead=readahead)
                    opened.append(f)
                    return f

                t_local, t_hub = [], []
                for r in range(a.repeat):  # alternated, the first side alternating: load hits both alike
                    for side in (("local", "hub") if r % 2 == 0 else ("hub", "local")):
                        if side == "local":
                            t_local.append(timed(local)[0])
                        else:
                            dt, (rows_hub, _) = timed(lambda: read_all(open_remote, paths))
                            assert rows_hub == rows
                            t_hub.append(dt)
                last = opened[-len(paths):]
                reqs = sum(f.requests for f in last)
                fetched = sum(f.bytes_fetched for f in last)
                ml, mh = statistics.median(t_local), statistics.median(t_hub)
                print(f"HubFile readahead {readahead >> 10:>5} KiB: {mh * 1e3:6.0f} ms vs local {ml * 1e3:6.0f} ms "
                      f"(medians of {a.repeat})  throughput ratio vs local disk = {ml / mh:.2f}  requests = {reqs}  "
                      f"fetched/column bytes = {fetched / col_bytes:.2f}  "
                      f"fetched/file bytes = {fetched / file_bytes:.2f}")


if __name__ == "__main__":
    main()
