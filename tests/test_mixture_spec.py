"""Mixtures as ``--data``: parsing (file and one-line form, the run's flags filling the keys left out), the resume
rule (a resume keeps its own mixture; given again, it must be the same), and every bad mixture refused in one line
through the real entry point, before anything is trained."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from gpt2stream.config import DataConfig, RunConfig
from gpt2stream.data.mixture import entries, for_run, parse_mixture, resolve
from gpt2stream.errors import UserError
from tests.test_train_common import RUN_TRAIN, TINY, env, make_jsonl

ROOT_ARGS = [*TINY, "--max-steps", "2", "--num-workers", "0"]


def write(path, text: str):
    path.write_text(text)
    return path


def test_file_and_one_line_forms_resolve_with_the_runs_flags(tmp_path):
    run = DataConfig(text_column="body", val_docs=7, data_config="cfg", split="train")
    mix = write(tmp_path / "mix.yaml", "sources:\n  - data: org/web\n    weight: 3\n"
                "  - data: ./mine/*.jsonl\n    name: mine\n    text_column: text\n    weight: 1\n    max_epochs: 2\n")
    web, mine = parse_mixture(str(mix), run)
    assert (web.name, web.weight, web.text_column, web.val_docs, web.data_config) == ("web", 0.75, "body", 7, "cfg")
    assert (mine.name, mine.weight, mine.text_column, mine.max_epochs) == ("mine", 0.25, "text", 2)
    same = parse_mixture("org/web@3,./mine/*.jsonl@1", run)
    assert [(e.name, e.weight) for e in same] == [("web", 0.75), ("mine", 0.25)]
    as_json = write(tmp_path / "mix.json", json.dumps({"sources": [e.to_dict() for e in (web, mine)]}))
    assert parse_mixture(str(as_json), run) == (web, mine)  # the saved form reads back as it was
    assert resolve(DataConfig(data="org/web")).mixture == []  # a single source is no mixture


def test_a_resume_keeps_its_mixture_and_refuses_another(tmp_path):
    mix = write(tmp_path / "mix.yaml", "sources:\n  - data: org/web\n    weight: 3\n  - data: org/code\n")
    new = for_run(RunConfig(data=DataConfig(data=str(mix))), data_given=True)
    assert [e.name for e in entries(new.data)] == ["web", "code"]
    sha = "a" * 40
    saved = dataclasses.replace(new.data, mixture=[{**d, "revision": sha} for d in new.data.mixture])
    resumed = RunConfig(data=saved)
    resumed.train.resume = "runs/x/checkpoints/step_00000002.pt"
    write(tmp_path / "mix.yaml", "sources: [{data: org/web, weight: 1}]")  # the file changed since
    assert for_run(resumed, data_given=False).data.mixture == saved.mixture  # not read again: the saved one
    with pytest.raises(UserError, match=r"is not the data this run trained on \(sources \['web', 'code'\] -> "
                                        r"\['web'\]\); drop --data"):
        for_run(resumed, data_given=True)
    write(tmp_path / "mix.yaml", "sources:\n  - data: org/web\n    weight: 3\n  - data: org/code\n    revision: v1\n")
    again = for_run(resumed, data_given=True)  # the same mixture: the shas stay, a revision asked is checked later
    assert [e.revision for e in entries(again.data)] == [sha, "v1"]
    write(tmp_path / "mix.yaml", "sources:\n  - data: org/web\n    weight: 2\n  - data: org/code\n")
    with pytest.raises(UserError, match="source web: weight 0.75 -> 0.6667"):
        for_run(resumed, data_given=True)


def bad_mixtures(tmp_path) -> dict[str, tuple[str, list[str]]]:
    """{case: (--data, the words its one error line must hold)}."""
    docs = make_jsonl(tmp_path / "docs.jsonl", n_docs=60)
    cases = {
        "unknown key": ("sources:\n  - data: demo\n    wieght: 2\n", ["source 1", "unknown key 'wieght'", "weight"]),
        "zero weight": ("sources:\n  - data: demo\n    weight: 0\n", ["source 'demo'", "weight 0", "positive"]),
        "negative weight": ("sources:\n  - data: demo\n    weight: -1\n", ["weight -1", "positive"]),
        "text weight": ("sources:\n  - data: demo\n    weight: lots\n", ["weight 'lots'", "positive"]),
        "duplicate names": ("sources:\n  - data: demo\n  - data: demo\n", ["two sources are named 'demo'", "name:"]),
        "no sources": ("sources: []\n", ["lists no sources"]),
        "not a list": ("data: demo\n", ["one top-level key 'sources:'", "found ['data']"]),
        "bad yaml": ("sources:\n  - data: [demo\n", ["is not valid YAML: expected ',' or ']'", "(line 3, column 1)"]),
        "tabs": ("sources:\n\t- data: demo\n", ["not valid YAML", "(line 2, column 1)", "indent with spaces"]),
        "top-level list": ("- data: demo\n", ["one top-level key 'sources:'", "(found a list)"]),
        "empty file": ("", ["one top-level key 'sources:'", "(found an empty file)"]),
        "nothing matches": (f"sources:\n  - data: demo\n  - data: {tmp_path}/none/*.jsonl\n    name: gone\n",
                            ["mixture source 'gone'", "no files match"]),
        "text column": (f"sources:\n  - data: demo\n  - data: {docs}\n    name: mine\n    text_column: body\n",
                        ["mixture source 'mine'", "no field 'body'", "['id', 'text']", "text_column:"]),
    }
    out = {}
    for i, (case, (text, words)) in enumerate(cases.items()):
        out[case] = (str(write(tmp_path / f"mix{i}.yaml", text)), words)
    out["missing file"] = (str(tmp_path / "nowhere.yaml"), ["no such mixture file"])
    out["bad json"] = (str(write(tmp_path / "mix.json", "{sources: ")), ["is not valid JSON"])
    out["one-line"] = ("demo@0.5,demo", ["'demo' is not DATA@WEIGHT"])
    out["one-line names"] = ("demo@1,demo@2", ["two sources are named 'demo'", "write a mixture file"])
    return out


# Found before anything is opened (the mixture's own text): checked in this process, as run_train.py resolves it.
PARSED = ["unknown key", "zero weight", "negative weight", "text weight", "duplicate names", "no sources",
          "not a list", "bad yaml", "tabs", "top-level list", "empty file", "missing file", "bad json", "one-line",
          "one-line names"]
# Through the real entry point: one found parsing, one found opening the sources (rank 0, before training).
ENTRY = ["unknown key", "text column"]
# Found opening the sources, like "text column": checked in this process, as rank 0 opens them.
OPENED = ["nothing matches"]


def test_every_bad_mixture_is_one_clear_error(tmp_path):
    bad = bad_mixtures(tmp_path)
    assert sorted(bad) == sorted(set(PARSED + ENTRY + OPENED))
    for case in PARSED:
        data, words = bad[case]
        with pytest.raises(UserError) as e:
            for_run(RunConfig(data=DataConfig(data=data)), data_given=True)
        assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), (case, str(e.value))
    with pytest.raises(UserError, match="does not apply to a mixture: set 'revision:' on each Hub source"):
        for_run(RunConfig(data=DataConfig(data="demo@1,demo@1", data_revision="v1")), data_given=True)
    from types import SimpleNamespace

    from gpt2stream.data.job import open_data_for_job

    for case in OPENED:
        data, words = bad[case]
        with pytest.raises(UserError) as e:
            open_data_for_job(resolve(DataConfig(data=data, val_docs=5)), SimpleNamespace(rank=0, ddp=False))
        assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), (case, str(e.value))


@pytest.mark.parametrize("case", ENTRY)
def test_bad_mixture_through_run_train_is_one_line_and_saves_nothing(tmp_path, case):
    """run_train.py: exit 2, one ``error:`` line naming the problem (and the source), no traceback, no checkpoint."""
    data, words = bad_mixtures(tmp_path)[case]
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, RUN_TRAIN, *ROOT_ARGS, "--data", data, "--out-dir", str(out)],
                       capture_output=True, text=True, env=env(), timeout=120, cwd=tmp_path)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert p.returncode == 2 and len(errors) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    for w in words:
        assert w in errors[0], errors[0]
    assert not (out / "checkpoints").exists()


def test_a_source_too_small_for_its_val_docs_is_named_with_the_key_to_change(tmp_path):
    from types import SimpleNamespace

    from gpt2stream.data.job import open_data_for_job

    small = make_jsonl(tmp_path / "small.jsonl", n_docs=10)
    mix = write(tmp_path / "mix.yaml", f"sources:\n  - data: demo\n  - data: {small}\n    val_docs: 20\n")
    with pytest.raises(UserError) as e:
        open_data_for_job(resolve(DataConfig(data=str(mix), val_docs=5)), SimpleNamespace(rank=0, ddp=False))
    assert str(e.value).startswith(f"mixture source 'small' ({small}): val_docs=20 but the last file"), str(e.value)
    assert "lower val_docs: for this source in the mixture" in str(e.value)


def test_print_config_shows_the_resolved_mixture(tmp_path):
    docs = make_jsonl(tmp_path / "docs.jsonl", n_docs=60)
    p = subprocess.run([sys.executable, RUN_TRAIN, *ROOT_ARGS, "--data", f"demo@3,{docs}@1", "--print-config"],
                       capture_output=True, text=True, env=env(), timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    mix = json.loads(p.stdout)["data"]["mixture"]
    assert [(d["name"], d["weight"], d["data"]) for d in mix] == [("demo", 0.75, "demo"), ("docs", 0.25, str(docs))]
    assert "mixture of 2 sources:" in p.stderr and " 75.0%  demo" in p.stderr
    assert f" 25.0%  {docs} (text 'text', val_docs " in p.stderr  # a local source: no Hub config/split shown
