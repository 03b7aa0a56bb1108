"""Weighted mixtures streamed exactly (data/mixstream.py): the shares of every window of steps, the same batches on
every layout, exact resume (also on another layout), per-source epochs and max_epochs drops; through the
TrainLoader on local jsonl sources, and a max_epochs drop end to end through run_train.py. The mixture's other
end-to-end properties (the Weyl choice in the document log, kill -9 and 2-process resumes) are proven once, on the
Hub + local mixture, in tests/test_mixture_hub_e2e.py."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch

from gpt2stream.config import DataConfig
from gpt2stream.data.loader import TrainLoader, merge_states
from gpt2stream.data.mixstream import pick, weyl_offset, weyl_point
from gpt2stream.data.mixture import resolve
from gpt2stream.errors import UserError
from tests.mixture_checks import worst_window_error
from tests.test_train_common import TINY, final_state, make_jsonl, run

SEQ = 32
BLOCKS = 16  # blocks a step
WEIGHTS = {"big": 0.5, "mid": 0.3, "small": 0.2}


@pytest.mark.parametrize("weights", [[0.5, 0.3, 0.2], [0.9, 0.07, 0.03], [0.34, 0.33, 0.33]])
@pytest.mark.parametrize("per_step", [4, 16, 512])
def test_weyl_choice_holds_every_window_of_50_steps(weights, per_step):
    off = weyl_offset(7)
    steps = 400 if per_step < 512 else 60
    got = [pick(weyl_point(n, off), weights, [False] * 3) for n in range(steps * per_step)]
    assert worst_window_error(got, dict(enumerate(weights)), per_step) < 0.02
    # a dropped source's share goes to the others in proportion to their weights
    later = Counter(pick(weyl_point(n, off), weights, [False, True, False]) for n in range(4000))
    assert later[1] == 0 and abs(later[0] / 4000 - weights[0] / (weights[0] + weights[2])) < 0.005


# -- through the TrainLoader -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mixdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mix")
    make_jsonl(d / "big.jsonl", n_docs=400, seed=1)
    make_jsonl(d / "mid.jsonl", n_docs=240, seed=2)
    make_jsonl(d / "small.jsonl", n_docs=30, seed=3)
    return d


def mixture_file(d: Path, name: str, **extra: dict) -> Path:
    sources = [{"data": str(d / f"{n}.jsonl"), "weight": w, "val_docs": 5 if n == "small" else 10,
                **extra.get(n, {})} for n, w in WEIGHTS.items()]
    path = d / f"{name}.json"
    path.write_text(json.dumps({"sources": sources}))
    return path


def data_cfg(path: Path, workers: int = 0) -> DataConfig:
    return resolve(DataConfig(data=str(path), seq_len=SEQ, shuffle_buffer=64, block_buffer=64, num_workers=workers))


def loader(cfg: DataConfig, rank: int = 0, world: int = 1, batch: int = 4) -> TrainLoader:
    from tokenizer import load_tokenizer

    return TrainLoader(cfg, batch_size=batch, tokenizer=load_tokenizer("gpt2"), rank=rank, world_size=world, seed=5,
                       total_batch_size=SEQ * BLOCKS)


def global_steps(loaders: list[TrainLoader], n: int) -> list[tuple[torch.Tensor, list[str]]]:
    """n steps of the job: (every block in global step order, their sources), from one loader per rank."""
    return [global_steps_of(loaders, BLOCKS) for _ in range(n)]


def global_steps_of(loaders: list[TrainLoader], blocks: int) -> tuple[torch.Tensor, list[str]]:
    """The job's next step: every block in global step order, and their sources."""
    rows: dict[int, tuple[torch.Tensor, str]] = {}
    for ld in loaders:
        step = ld.next_step()
        x = torch.cat([m[0] for m in step.micro])
        for (i, c), row, src in zip(ld.order, x, ld.last_sources, strict=True):
            rows[i * ld.streams + c] = (row, src)
    js = sorted(rows)
    assert js == list(range(blocks))
    return torch.stack([rows[j][0] for j in js]), [rows[j][1] for j in js]


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x.equal(y) and s == t for (x, s), (y, t) in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def reference(mixdir) -> tuple[DataConfig, list]:
    """60 steps of one process without workers: the sequence every other layout must give."""
    cfg = data_cfg(mixture_file(mixdir, "plain"))
    ld = loader(cfg)
    try:
        return cfg, global_steps([ld], 60)
    finally:
        ld.close()


def test_blocks_follow_the_weights(reference):
    cfg, steps = reference
    sources = [s for _, ss in steps for s in ss]
    counts = Counter(sources)
    assert set(counts) == set(WEIGHTS)
    for n, w in WEIGHTS.items():  # 960 blocks: within a few blocks of the weights
        assert abs(counts[n] / len(sources) - w) < 0.01, counts
    assert worst_window_error(sources, WEIGHTS, BLOCKS) < 0.02  # every window of 50 steps


def test_same_batches_on_every_layout(reference):
    cfg, ref = reference
    two_workers = loader(data_cfg(Path(cfg.data), workers=2))
    ranks = [loader(data_cfg(Path(cfg.data), workers=1), rank=r, world=2, batch=3) for r in range(2)]
    try:
        assert same(global_steps([two_workers], 12), ref[:12])
        assert same(global_steps(ranks, 12), ref[:12])
    finally:
        for ld in (two_workers, *ranks):
            ld.close()


def test_many_streams_keep_each_sources_partly_read_units_apart(tmp_path):
    """A rank with more than 16 streams keeps partly read units on disk (unitspill.py): one file per stream and
    source. The same blocks as 2 ranks of 16 streams each, which keep them in memory."""
    from gpt2stream.data.unitspill import SPILL_ABOVE

    for n in ("a", "b"):
        make_jsonl(tmp_path / f"{n}.jsonl", n_docs=400, seed=ord(n))
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"sources": [{"data": str(tmp_path / "a.jsonl"), "weight": 0.6},
                                           {"data": str(tmp_path / "b.jsonl"), "weight": 0.4}]}))
    cfg = resolve(DataConfig(data=str(mix), seq_len=SEQ, shuffle_buffer=64, block_buffer=32, num_workers=0,
                             streams=32, val_docs=10))
    from tokenizer import load_tokenizer

    tok = load_tokenizer("gpt2")
    one = TrainLoader(cfg, batch_size=8, tokenizer=tok, seed=2, total_batch_size=SEQ * 32)
    two = [TrainLoader(cfg, batch_size=8, tokenizer=tok, rank=r, world_size=2, seed=2, total_batch_size=SEQ * 32)
           for r in range(2)]
    assert len(one.mine) > SPILL_ABOVE >= len(two[0].mine)
    try:
        for _ in range(30):  # ~8 shuffle windows of 2 documents a stream and source: across units
            a, b = global_steps_of([one], 32), global_steps_of(two, 32)
            assert a[0].equal(b[0]) and a[1] == b[1]
    finally:
        for ld in (one, *two):
            ld.close()


def test_resume_exactly_on_the_same_and_another_layout(reference):
    cfg, ref = reference
    ranks = [loader(cfg, rank=r, world=2) for r in range(2)]
    global_steps(ranks, 10)
    saved = merge_states([ld.state_dict() for ld in ranks])
    for ld in ranks:
        ld.close()
    one = loader(cfg)
    one.load_state_dict(saved)
    again = [loader(cfg, rank=r, world=2) for r in range(2)]
    for ld in again:
        ld.load_state_dict(saved)
    try:
        assert same(global_steps([one], 8), ref[10:18])
        assert same(global_steps(again, 8), ref[10:18])
    finally:
        for ld in (one, *again):
            ld.close()


def test_a_small_source_starts_its_next_epoch_while_the_others_go_on(reference):
    cfg, _ = reference
    ld = loader(cfg)
    seen: dict[tuple[str, int], Counter] = defaultdict(Counter)
    try:
        for _ in range(40):
            step = ld.next_step()
            for e, doc, src in step.docs:
                seen[src, e][doc] += 1
        epochs = ld.source_epochs()
        state = ld.state_dict()
    finally:
        ld.close()
    assert epochs["small"] >= 1 and epochs["big"] == 0 and epochs["mid"] == 0, epochs
    small = [f"doc{i}" for i in range(5, 30)]  # the first 5 are its validation documents
    assert sorted(seen["small", 0]) == sorted(small) and set(seen["small", 0].values()) == {1}
    assert seen["small", 1] and set(seen["small", 1].values()) == {1} and set(seen["small", 1]) <= set(small)
    saved = [s for s in state["streams"] if s]
    assert max(s["sources"][2]["epoch"] for s in saved) == epochs["small"]  # saved with the loader's state


def test_max_epochs_drops_a_source_and_renormalises(mixdir, reference):
    cfg = data_cfg(mixture_file(mixdir, "capped", small={"max_epochs": 1}))
    ld = loader(cfg)
    try:
        steps = global_steps([ld], 30)
        dropped = ld.dropped_sources()
        mid_state = ld.state_dict()
        tail = global_steps([ld], 10)
    finally:
        ld.close()
    assert dropped == {"small"} and all(s["dropped"][2] for s in mid_state["streams"])
    assert same(steps[:5], reference[1][:5])  # the same stream until the drop
    last = [s for _, ss in tail for s in ss]  # every stream has dropped it (streams end their epochs apart)
    assert "small" not in last and abs(Counter(last)["big"] / len(last) - 0.5 / 0.8) < 0.03
    assert "small" in [s for _, ss in steps[:10] for s in ss]
    resumed = loader(cfg)
    resumed.load_state_dict(mid_state)
    try:
        assert same(global_steps([resumed], 10), tail) and resumed.dropped_sources() == {"small"}
    finally:
        resumed.close()


def test_a_changed_mixture_is_refused_naming_what_changed(mixdir, reference):
    cfg, _ = reference
    ld = loader(cfg)
    state = ld.state_dict()
    other = loader(data_cfg(mixture_file(mixdir, "capped2", small={"max_epochs": 2})))
    with pytest.raises(UserError, match=r"max_epochs of source small: saved 0, now 2"):
        other.load_state_dict(state)
    single = loader(DataConfig(data=str(mixdir / "big.jsonl"), seq_len=SEQ, shuffle_buffer=64, block_buffer=64,
                               num_workers=0, streams=ld.streams, val_docs=10))
    with pytest.raises(UserError, match=r"data: saved 'mixture', now '.*big.jsonl'.*mixture sources: saved"):
        single.load_state_dict(state)


# -- end to end through run_train.py ---------------------------------------------------------------------------

def doclog_by_step(run_dir: Path) -> tuple[dict[int, list], dict[int, Counter]]:
    """({step: sorted (source, epoch, id) of its documents}, {step: blocks per source}) over every rank's file."""
    from gpt2stream.data.doclog import read_log

    docs: dict[int, list] = defaultdict(list)
    blocks: dict[int, Counter] = defaultdict(Counter)
    for r in read_log(run_dir):
        docs[r["step"]] += [(r["source"], r["epoch"], i) for i in r["ids"]]
        blocks[r["step"]][r["source"]] += r["blocks"]
    return {k: sorted(v) for k, v in docs.items()}, dict(blocks)


@pytest.mark.slow
def test_train_small_source_repeats_then_max_epochs_drops_it(tmp_path):
    make_jsonl(tmp_path / "big.jsonl", n_docs=200, seed=1)
    make_jsonl(tmp_path / "tiny.jsonl", n_docs=8, seed=4)  # one piece: 1 canonical stream
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"sources": [{"data": str(tmp_path / "big.jsonl"), "weight": 0.4},
                                           {"data": str(tmp_path / "tiny.jsonl"), "weight": 0.6, "val_docs": 2,
                                            "max_epochs": 2}]}))
    out = tmp_path / "run"
    p = run([*TINY, "--data", str(mix), "--max-steps", "10", "--eval-every", "0", "--log-docs", "--num-workers", "0",
             "--out-dir", str(out)])
    drops = [ln for ln in p.stdout.splitlines() if "reached its max_epochs" in ln]
    assert len(drops) == 1 and drops[0].startswith("source tiny reached its max_epochs 2 at step ") \
        and drops[0].endswith("the other weights are renormalised: big 100.0%"), p.stdout[-3000:]
    drop_step = int(drops[0].split(" at step ")[1].split(":")[0])
    assert "source tiny: epoch 1 begins" in p.stdout and drop_step < 10
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in metrics if "loss" in r]
    assert {r["epoch/tiny"] for r in steps} == {0, 1} and {r["epoch/big"] for r in steps} == {0}
    docs, blocks = doclog_by_step(out)
    tiny_epochs = Counter((e, i) for s in docs.values() for src, e, i in s if src == "tiny")
    assert {e for e, _ in tiny_epochs} == {0, 1} and set(tiny_epochs.values()) == {1}  # once per epoch each
    assert len([i for e, i in tiny_epochs if e == 0]) == 6  # its 8 documents less the 2 held out
    assert all(blocks[s]["tiny"] == 0 for s in blocks if s > drop_step) and blocks[drop_step + 1]["big"] == 8
    state = final_state(out)["ranks"][0]["loader"]["streams"][0]
    assert state["dropped"] == [False, True] and state["sources"][1]["epoch"] == 1


# -- Hub sources (tests/hubserver.py) ---------------------------------------------------------------------------

@pytest.fixture
def hub_mixture(hub_repo, tmp_path, monkeypatch) -> Path:
    """Two Hub datasets with different text columns (fineweb ``text``, code ``content``) and a small local jsonl,
    served by the test Hub server; the mixture file."""
    from gpt2stream.data.hub import signed
    from tests.hubserver import DEFAULT_REPO, HubServer
    from tests.test_mixture_hub import CODE_REPO, build_code_repo

    code = build_code_repo(tmp_path / "code", hub_repo)
    mine = make_jsonl(tmp_path / "mine.jsonl", n_docs=30, seed=9)
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"sources": [
        {"data": DEFAULT_REPO, "name": "web", "config": "sample-10BT", "weight": 0.5},
        {"data": CODE_REPO, "name": "code", "config": "default", "text_column": "content", "weight": 0.3},
        {"data": str(mine), "name": "mine", "weight": 0.2}]}))
    monkeypatch.setattr(signed, "TARGETS", {})
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    with HubServer({DEFAULT_REPO: hub_repo.root, CODE_REPO: code}, redirect_data=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield mix


def test_hub_sources_same_blocks_on_two_ranks_exact_resume_and_a_repeated_source(hub_mixture):
    from gpt2stream.data.open import open_mixture

    cfg = resolve(DataConfig(data=str(hub_mixture), seq_len=SEQ, shuffle_buffer=64, block_buffer=64, val_docs=5,
                             num_workers=0, max_retries=2, request_timeout=10))
    source = open_mixture(cfg)  # opened once, as the job does, shared by the ranks' loaders

    def make(rank: int, world: int, workers: int) -> TrainLoader:
        from tokenizer import load_tokenizer

        c = DataConfig(**{**cfg.__dict__, "num_workers": workers})
        return TrainLoader(c, batch_size=4, tokenizer=load_tokenizer("gpt2"), rank=rank, world_size=world, seed=5,
                           total_batch_size=SEQ * BLOCKS, source=source)

    one = make(0, 1, 0)
    ranks = [make(r, 2, 1) for r in range(2)]
    try:
        ref = global_steps([one], 30)
        assert same(global_steps(ranks, 12), ref[:12])
        saved = merge_states([ld.state_dict() for ld in ranks])
        epochs = one.source_epochs()
    finally:
        for ld in (one, *ranks):
            ld.close()
    sources = Counter(s for _, ss in ref for s in ss)
    assert all(abs(sources[n] / (30 * BLOCKS) - w) < 0.02 for n, w in (("web", 0.5), ("code", 0.3), ("mine", 0.2)))
    assert epochs["mine"] >= 1 and epochs["web"] == epochs["code"] == 0, epochs  # the small local source repeats
    again = make(0, 1, 2)
    again.load_state_dict(saved)
    try:
        assert same(global_steps([again], 6), ref[12:18])
    finally:
        again.close()
