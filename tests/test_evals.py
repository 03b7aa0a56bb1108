"""The eval registry: a new multiple-choice task is one file plus one registry line, and training (in the loop) and
``python -m gpt2stream.evals`` score it with the same code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2stream.errors import UserError
from gpt2stream.evals import TASKS, requested
from tests.test_train_common import ROOT, TINY, env, make_jsonl

# The one file a new task is: its examples (any number of endings each) and its MultipleChoiceTask.
TOY_TASK = '''
from gpt2stream.evals.multiple_choice import Example, MultipleChoiceTask

EXAMPLES = [
    Example("The river runs under the", ("bridge", "candle", "letter"), 0),
    Example("Morning light on the", ("harbor", "engine"), 0),
    Example("A window in the", ("castle", "ocean", "paper", "station", "silver"), 3),
]


def load(path: str, limit: int | None = None) -> list[Example]:
    return EXAMPLES[:limit]


TASK = MultipleChoiceTask(name="toy", title="Toy", load=load)
'''

# ... and the one registry line (here made at run time, before the real entry point runs in the same process).
REGISTER = "import sys; sys.path.insert(0, {dir!r}); import toy_task; from gpt2stream.evals import TASKS; " \
           "TASKS['toy'] = toy_task.TASK; "


def run_with_toy(tmp_path: Path, code: str, args: list[str]) -> subprocess.CompletedProcess:
    (tmp_path / "toy_task.py").write_text(TOY_TASK, encoding="utf-8")
    src = REGISTER.format(dir=str(tmp_path)) + code
    return subprocess.run([sys.executable, "-c", src, *args], capture_output=True, text=True, env=env(), cwd=ROOT,
                          timeout=240)


def test_a_registered_toy_task_scores_the_same_in_the_loop_and_standalone(tmp_path):
    run = tmp_path / "run"
    data = make_jsonl(tmp_path / "docs.jsonl", n_docs=100)
    train = ("import runpy; sys.argv = ['run_train.py', *sys.argv[1:]]; "
             f"runpy.run_path({str(ROOT / 'run_train.py')!r}, run_name='__main__')")
    p = run_with_toy(tmp_path, train, [*TINY, "--data", str(data), "--num-workers", "0", "--max-steps", "2",
                                       "--eval-every", "0", "--evals", "toy", "--evals-every", "2",
                                       "--out-dir", str(run)])
    assert p.returncode == 0, p.stderr[-3000:]
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    in_loop = [r for r in records if "toy_acc_norm" in r]
    assert len(in_loop) == 1 and in_loop[0]["step"] == 2 and in_loop[0]["toy_n"] == 3
    assert in_loop[0]["toy_chance"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 5) / 3)
    assert not any("hellaswag_n" in r for r in records)  # only the evals asked for

    p = run_with_toy(tmp_path, "from gpt2stream.evals.command import entry; entry(sys.argv[1:])",
                     ["toy", str(run), "--json", "--device", "cpu"])
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["n"] == 3 and "step 2" in got["model"]
    assert (got["acc"], got["acc_norm"]) == (in_loop[0]["toy_acc"], in_loop[0]["toy_acc_norm"])


def test_requested_evals_name_registered_tasks_and_their_data():
    assert "hellaswag" in TASKS
    assert requested("hellaswag", "") == {"hellaswag": ""}
    assert requested(" hellaswag ,", "hellaswag=/x/val.jsonl") == {"hellaswag": "/x/val.jsonl"}
    assert requested("", "") == {}
    with pytest.raises(UserError, match="unknown eval 'nope': choose from hellaswag"):
        requested("hellaswag,nope", "")
    with pytest.raises(UserError, match="--evals-data names toy"):
        requested("hellaswag", "toy=a.jsonl")
