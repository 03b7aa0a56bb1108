"""A weighted mixture end to end against the test Hub server (tests/hubserver.py), through run_train.py as a user
runs it: two Hub datasets with different text columns (web ``text``, code ``content``) and one small local jsonl.

One shared set of runs (module fixtures) serves every assert: an uninterrupted 60-step run (the reference: the
document log's proportions and per-step Weyl choice, the small source's epochs, per-source validation, each Hub
source resolved once and pinned), the same run killed with SIGKILL after its step-30 checkpoint and resumed
(bit-identical; the resume reads each pinned sha and lists nothing), that checkpoint resumed on 2 processes (within
1e-5), and a 2-step 2-process run (resolved once per job, as its --plan predicts).
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.hubserver import DEFAULT_REPO, HubServer
from tests.test_mixture_hub import CODE_REPO, build_code_repo
from tests.test_train_common import TINY, assert_same_weights, final_state, make_jsonl, run, run_and_kill_after
from tests.test_train_elastic import assert_close_lines, train_lines

WEIGHTS = {"web": 0.5, "code": 0.3, "mine": 0.2}
STEPS, CUT, BLOCKS = 60, 30, 256 // 32  # TINY: 8 blocks of 32 tokens a step
MINE_DOCS, MINE_VAL = 30, 4  # the local source: ~6 of its epochs' worth of blocks in 60 steps

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hub(hub_repo, tmp_path_factory):
    """The Hub server (web + code) with HF_ENDPOINT pointed at it, the mixture file and the runs' common flags."""
    d = tmp_path_factory.mktemp("mixe2e")
    code = build_code_repo(d / "code", hub_repo)
    mine = make_jsonl(d / "mine.jsonl", n_docs=MINE_DOCS, seed=9)
    mix = d / "mix.yaml"
    mix.write_text(f"sources:\n"
                   f"  - data: {DEFAULT_REPO}\n    name: web\n    config: sample-10BT\n    weight: 0.5\n"
                   f"  - data: {CODE_REPO}\n    name: code\n    config: default\n    text_column: content\n"
                   f"    weight: 0.3\n"
                   f"  - data: {mine}\n    name: mine\n    weight: 0.2\n    val_docs: {MINE_VAL}\n")
    args = [*TINY, "--data", str(mix), "--max-steps", str(STEPS), "--save-every", str(CUT), "--eval-every",
            str(CUT), "--log-docs", "--max-retries", "2"]
    mp = pytest.MonkeyPatch()
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        mp.delenv(var, raising=False)
    mp.setenv("HF_HOME", str(d / "hf_home"))
    try:
        with HubServer({DEFAULT_REPO: hub_repo.root, CODE_REPO: code}, redirect_data=True) as server:
            mp.setenv("HF_ENDPOINT", server.url)
            yield SimpleNamespace(dir=d, args=args, server=server)
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def ref(hub) -> SimpleNamespace:
    """The uninterrupted run: 1 process, no DataLoader workers."""
    out = hub.dir / "ref"
    hub.server.reset_counters()
    p = run([*hub.args, "--num-workers", "0", "--out-dir", str(out)])
    return SimpleNamespace(dir=out, stdout=p.stdout, counts=startup_counts(hub.server))


@pytest.fixture(scope="module")
def killed(hub) -> SimpleNamespace:
    """The same run on 2 DataLoader workers, SIGKILLed once its step-30 checkpoint exists; a copy of what the kill
    left (for the 2-process resume), then the run resumed to the end."""
    cut, other = hub.dir / "cut", hub.dir / "other"
    run_and_kill_after([*hub.args, "--num-workers", "2", "--out-dir", str(cut)],
                       cut / "checkpoints" / f"step_{CUT:08d}.pt")
    shutil.copytree(cut, other)
    hub.server.reset_counters()
    p = run(["--out-dir", str(cut), "--resume"])
    return SimpleNamespace(dir=cut, copy=other, stdout=p.stdout, requests=list(hub.server.requests))


@pytest.fixture(scope="module")
def elastic(killed) -> Path:
    """The killed run's copy resumed on another layout: 2 processes (torchrun, gloo) of 1 worker each."""
    run(["--out-dir", str(killed.copy), "--resume", "--num-workers", "1"], nproc=2, timeout=400)
    return killed.copy


@pytest.fixture(scope="module")
def duo(hub) -> SimpleNamespace:
    """--plan for 2 processes, then those 2 steps on 2 processes (torchrun, gloo) against a fresh count of the
    server's requests: two steps are all start-up (no signed URL expires, no evaluation)."""
    args = [*hub.args, "--max-steps", "2", "--eval-every", "0", "--num-workers", "0"]
    plan = run([*args, "--plan", "--nproc", "2"])
    hub.server.reset_counters()
    run([*args, "--out-dir", str(hub.dir / "duo")], nproc=2, timeout=400)
    return SimpleNamespace(plan=plan.stdout, counts=startup_counts(hub.server), api=hub.server.counts()["api"],
                           resolver=hub.server.counts()["resolver"])


def startup_counts(server: HubServer) -> dict[str, dict[str, int]]:
    """Per Hub repo: api requests, listings and card reads (what opening a source costs; data reads aside)."""
    out = {}
    for repo in (DEFAULT_REPO, CODE_REPO):
        mine = [r for r in server.requests if repo in r.path]
        out[repo] = {"api": sum(r.kind == "api" for r in mine), "tree": sum("/tree/" in r.path for r in mine),
                     "card": sum(r.path.endswith("/README.md") for r in mine)}
    return out


def shas(hub) -> dict[str, str]:
    return {DEFAULT_REPO: hub.server.sha(), CODE_REPO: hub.server.sha(CODE_REPO)}


def doclog(run_dir: Path) -> tuple[dict[int, Counter], dict[int, list[tuple]]]:
    """({step: blocks per source}, {step: its documents, sorted (source, epoch, id)}) over every rank's file."""
    from gpt2stream.data.doclog import read_log

    blocks: dict[int, Counter] = defaultdict(Counter)
    docs: dict[int, list[tuple]] = defaultdict(list)
    for r in read_log(run_dir):
        blocks[r["step"]][r["source"]] += r["blocks"]
        docs[r["step"]] += [(r["source"], r["epoch"], i) for i in r["ids"]]
    return {k: +v for k, v in blocks.items()}, {k: sorted(v) for k, v in docs.items()}


def trained_docs(run_dir: Path) -> dict[str, list[tuple[int, str]]]:
    """{source: its documents as (epoch, id) in the order a 1-process run trained them}."""
    from gpt2stream.data.doclog import read_log

    out: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in sorted(read_log(run_dir), key=lambda r: r["step"]):  # stable: a step's lines keep their order
        out[r["source"]] += [(r["epoch"], i) for i in r["ids"]]
    return dict(out)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_every_50_step_window_holds_the_weights(ref):
    blocks, docs = doclog(ref.dir)[0], trained_docs(ref.dir)
    assert sorted(blocks) == list(range(1, STEPS + 1)) and all(sum(b.values()) == BLOCKS for b in blocks.values())
    assert set(docs) == set(WEIGHTS)
    assert all(i.startswith("code-") for _, i in docs["code"])  # the code source read its own dataset
    for first in range(1, STEPS - 50 + 2):
        window = sum((blocks[s] for s in range(first, first + 50)), Counter())
        for name, w in WEIGHTS.items():
            share = window[name] / (50 * BLOCKS)
            assert abs(share - w) <= 0.02, (first, name, share, w)


def test_each_steps_blocks_per_source_are_the_weyl_choice(ref):
    from gpt2stream.data.mixstream import pick, weyl_offset, weyl_point

    config = json.loads((ref.dir / "config.json").read_text())
    assert config["data"]["streams"] >= 2 and [e["name"] for e in config["data"]["mixture"]] == list(WEIGHTS)
    off, names = weyl_offset(config["train"]["seed"]), list(WEIGHTS)
    for step, got in doclog(ref.dir)[0].items():  # the doclog's blocks per source are the Weyl choice of its blocks
        want = Counter(names[pick(weyl_point(n, off), list(WEIGHTS.values()), [False] * 3)]
                       for n in range((step - 1) * BLOCKS, step * BLOCKS))
        assert got == want, step


def test_a_kill_9_resume_is_bit_identical(killed, ref):
    assert f"resumed from {killed.dir / 'checkpoints' / f'step_{CUT:08d}.pt'}" in killed.stdout, killed.stdout[-2000:]
    assert train_lines(killed.dir) == train_lines(ref.dir)
    assert doclog(killed.dir) == doclog(ref.dir)
    assert_same_weights(final_state(killed.dir)["model"], final_state(ref.dir)["model"])


def test_a_resume_on_two_processes_is_within_1e5(elastic, ref):
    assert doclog(elastic) == doclog(ref.dir)  # the same documents in the same blocks, per step and source
    assert_close_lines(train_lines(elastic), train_lines(ref.dir))
    vals = [[r for r in records(d) if "val_loss" in r] for d in (elastic, ref.dir)]
    assert [r["step"] for r in vals[0]] == [r["step"] for r in vals[1]] and vals[1][-1]["step"] == STEPS
    for a, b in zip(*vals, strict=True):  # every source's figures, validated on 2 processes, as on 1
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], abs=1e-5) for k in a), (a, b)
    a, b = final_state(elastic)["model"], final_state(ref.dir)["model"]
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)


def test_the_small_source_is_exhausted_and_repeated_while_the_others_go_on(ref):
    steps = [r for r in records(ref.dir) if "loss" in r]
    mine = [r["epoch/mine"] for r in steps]
    assert mine == sorted(mine) and mine[0] == 0 and mine[-1] >= 2, mine  # its epoch advances in metrics.jsonl
    assert {r["epoch/web"] for r in steps} == {r["epoch/code"] for r in steps} == {0}  # the others stay
    for e in range(1, mine[-1] + 1):
        assert f"source mine: epoch {e} begins" in ref.stdout
    docs = trained_docs(ref.dir)
    by_epoch = defaultdict(list)
    for e, i in docs["mine"]:
        by_epoch[e].append(i)
    train = {f"doc{k}" for k in range(MINE_VAL, MINE_DOCS)}  # its first val_docs documents are held out
    assert sorted(by_epoch) == list(range(mine[-1] + 1)) and sorted(by_epoch[0]) == sorted(train)
    # a later epoch is done stream by stream (metrics show the highest): its documents so far, each once
    assert all(len(set(ids)) == len(ids) and set(ids) <= train for ids in by_epoch.values()), by_epoch
    assert not {i for _, i in docs["web"]} & {i for _, i in docs["code"]}


def test_each_source_is_validated_on_its_own(ref):
    vals = [r for r in records(ref.dir) if "val_loss" in r]
    assert [r["step"] for r in vals][-2:] == [CUT, STEPS], vals
    for r in vals:
        assert {f"val/{n}" for n in WEIGHTS} | {f"val/{n}/bpb" for n in WEIGHTS} <= r.keys(), r
        assert abs(r["val_loss"] - sum(w * r[f"val/{n}"] for n, w in WEIGHTS.items())) < 1e-6, r  # the weighted total
        assert len({r[f"val/{n}/bpb"] for n in WEIGHTS}) == 3  # each its own held-out documents
    lines = [ln for ln in (ref.dir / "train.log").read_text().splitlines() if "| val loss " in ln]
    assert len(lines) == len(vals) and all(f" | {n} " in ln for ln in lines for n in WEIGHTS), lines


def test_each_hub_source_validates_on_its_own_text_column(ref, hub, monkeypatch):
    from gpt2stream.data.hub import signed
    from gpt2stream.data.mixval import mixture_val_batches
    from tests.test_mixture_val import mixture_cfg
    from tokenizer import load_tokenizer

    for r in (r for r in records(ref.dir) if "val_loss" in r):
        assert set(r) == {"step", "val_loss", "val_bpb", *(f"val/{n}{b}" for n in WEIGHTS for b in ("", "/bpb"))}
        assert r["val_loss"] == pytest.approx(sum(w * r[f"val/{n}"] for n, w in WEIGHTS.items()), abs=1e-9)
    monkeypatch.setattr(signed, "TARGETS", {})
    tok = load_tokenizer("gpt2")
    val = mixture_val_batches(mixture_cfg(hub.dir / "mix.yaml").data, 4, tok, num_tokens=64)
    assert tok.decode(val["code"][0][0][0].tolist()).startswith("def f")  # the content column, held out
    assert not tok.decode(val["web"][0][0][0].tolist()).startswith("def f")


def test_each_hub_source_is_resolved_once_per_job_and_pinned(ref, duo, hub):
    once = {"api": 2, "tree": 1, "card": 1}  # the revision info + one listing (api), one card, whatever the ranks
    assert ref.counts == {DEFAULT_REPO: once, CODE_REPO: once}, ref.counts
    assert duo.counts == ref.counts
    sha = shas(hub)
    mixture = json.loads((ref.dir / "config.json").read_text())["data"]["mixture"]
    assert [(d["name"], d["revision"]) for d in mixture] == [("web", sha[DEFAULT_REPO]), ("code", sha[CODE_REPO]),
                                                            ("mine", "")]
    ckpt = torch.load(ref.dir / f"checkpoints/step_{CUT:08d}.pt", map_location="cpu", weights_only=False, mmap=True)
    assert ckpt["config"]["data"]["mixture"] == mixture
    log = (ref.dir / "train.log").read_text()
    assert "mixture of 3 sources:" in log and f"revision {sha[CODE_REPO]}, text 'content'" in log
    assert sorted(p.name for p in ref.dir.glob("data-*.json")) == ["data-files-mine.json", "data-manifest-code.json",
                                                                   "data-manifest-web.json"]


def test_plan_predicts_each_source_and_the_startup_requests_of_the_job(duo, hub):
    plan, sha = duo.plan, shas(hub)
    assert "data: a mixture of 3 sources" in plan and "plan: OK" in plan, plan
    assert f"  web (50.0%): {DEFAULT_REPO} (revision {sha[DEFAULT_REPO]}): 4 files, 12 row groups" in plan, plan
    assert f"  code (30.0%): {CODE_REPO} (revision {sha[CODE_REPO]}): 2 files, 4 row groups" in plan, plan
    assert "  mine (20.0%): " in plan and "(revision local files): 1 files" in plan, plan
    m = re.search(r"Hub requests at start-up .*: api (\d+), resolver (\d+)", plan)
    assert m, plan
    # every api and resolver request the 2-process job sent (so none per rank)
    assert (int(m.group(1)), int(m.group(2))) == (duo.api, duo.resolver), plan


def test_a_resume_reads_each_pinned_sha_and_lists_nothing(killed, hub):
    api = sorted(r.path.rsplit("/", 1)[-1] for r in killed.requests if r.kind == "api")
    assert api == sorted(shas(hub).values()), api  # one check per Hub source: its pinned sha, never main
    assert not [r for r in killed.requests if "/tree/" in r.path or r.path.endswith("/README.md")]
    assert [r["step"] for r in records(killed.dir) if "loss" in r][-1] == STEPS


def test_a_resume_given_another_mixture_is_refused_in_one_line(ref, hub, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text((hub.dir / "mix.yaml").read_text().replace("weight: 0.3", "weight: 0.5"))
    p = run(["--out-dir", str(ref.dir), "--resume", "--data", str(other)], check=False)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert p.returncode == 2 and len(errors) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert "is not the data this run trained on (source web: weight 0.5 -> 0.4167; source code: weight 0.3 -> " \
           "0.4167" in errors[0] and "drop --data to resume" in errors[0], errors[0]
