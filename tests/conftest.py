"""Shared test fixtures and the CI rule that nothing may skip."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# GPT2STREAM_TEST_HIDE_SHARED=1: behave as on a user's fresh clone, where no ../shared lies beside the checkout
SHARED_CORPUS = None if os.environ.get("GPT2STREAM_TEST_HIDE_SHARED") == "1" else SHARED / "corpus"
if SHARED_CORPUS is not None and not SHARED_CORPUS.is_dir():
    SHARED_CORPUS = None

if str(ROOT) not in sys.path:  # tests import the top-level modules (config, run_train, ...)
    sys.path.insert(0, str(ROOT))

# One torch thread per process (this one and the entry points it starts), set before torch is imported: the tests'
# models are tiny, so a second thread only contends for the 2 cores CI has, with the other rank or a busy neighbour.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def demo_texts() -> list[str]:
    """The documents of the corpus shipped in the package (``--data demo``)."""
    import pyarrow.parquet as pq

    from gpt2stream.data.sources.named import named_data_path

    return pq.read_table(named_data_path("demo"), columns=["text"]).column("text").to_pylist()


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """A directory of real English .txt files: ../shared/corpus (~20 MB) where it is present, else the package's
    demo corpus (~5 MB of Shakespeare) written out as one file per play."""
    if SHARED_CORPUS is not None:
        return SHARED_CORPUS
    out = tmp_path_factory.mktemp("demo_corpus")
    plays: dict[str, list[str]] = {}
    for doc in demo_texts():
        plays.setdefault(doc.split("\n", 1)[0], []).append(doc)
    for i, docs in enumerate(plays.values()):
        (out / f"play_{i:02d}.txt").write_text("\n\n".join(docs), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def corpus_text(corpus_dir: Path) -> str:
    """Several MB of real English text: FineWeb-Edu's sample then War and Peace (../shared), else the demo plays."""
    names = ["fineweb_edu_sample.txt", "war_and_peace.txt"]
    files = [corpus_dir / n for n in names] if SHARED_CORPUS is not None else sorted(corpus_dir.glob("*.txt"))
    return "".join(f.read_text(encoding="utf-8") for f in files)


def _tiktoken_has_cached_r50k() -> bool:
    """Whether tiktoken's cache holds the r50k_base file it downloads (its cache rule: sha1 of the URL)."""
    import hashlib
    import tempfile

    url = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
    cache = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR",
                                                                os.path.join(tempfile.gettempdir(), "data-gym-cache")))
    return bool(cache) and os.path.isfile(os.path.join(cache, hashlib.sha1(url.encode()).hexdigest()))


@pytest.fixture(scope="session")
def tiktoken_r50k():
    """tiktoken's own r50k_base, to compare our GPT-2 tokenizer with: tiktoken.get_encoding where its file is cached
    (or downloadable), else the same Encoding built by tiktoken's own loader from the rank file we ship."""
    import tiktoken
    import tiktoken.load
    import tiktoken_ext.openai_public as openai_public

    from tokenizer.gpt2_ranks import RANKS_FILE, RANKS_SHA256

    if _tiktoken_has_cached_r50k():  # never a download: a blackholed network would hang here
        return tiktoken.get_encoding("r50k_base")
    os.environ["TIKTOKEN_CACHE_DIR"], old = "", os.environ.get("TIKTOKEN_CACHE_DIR")  # "": no cache copy
    try:
        ranks = tiktoken.load.load_tiktoken_bpe(str(RANKS_FILE), expected_hash=RANKS_SHA256)
    finally:
        if old is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old
    return tiktoken.Encoding(name="r50k_base", pat_str=openai_public.r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={openai_public.ENDOFTEXT: 50256}, explicit_n_vocab=50257)


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    """Every test gets its own HF cache so nothing leaks between tests or into the user's cache."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(session, config, items):
    from tests.xdist_order import longest_files_first

    longest_files_first(items)  # xdist hands out whole files in this order (tests/xdist_order.py)


_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    # Under CI every test must run: a skip there is a silent hole in coverage.
    if IN_CI and _skipped:
        print(f"\nCI=true but {len(_skipped)} test(s) skipped: {_skipped[:5]}", file=sys.stderr)
        session.exitstatus = 1


# --- Hub test server (tests/hubserver.py) -------------------------------------------------------------

@pytest.fixture(scope="session")
def hub_repo(tmp_path_factory):
    """A FineWeb-Edu-shaped dataset repo on disk, built once per session (real text when ../shared is present)."""
    from tests.hubserver import build_fineweb_repo

    return build_fineweb_repo(tmp_path_factory.mktemp("hub_repo"), corpus_dir=SHARED_CORPUS)


@pytest.fixture
def hub_server(hub_repo, monkeypatch):
    """A running Hub-compatible server for ``hub_repo`` with HF_ENDPOINT pointed at it; ``.fixture`` = hub_repo."""
    from tests.hubserver import DEFAULT_REPO, HubServer

    with HubServer({DEFAULT_REPO: hub_repo.root}) as server:
        server.fixture = hub_repo
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server
