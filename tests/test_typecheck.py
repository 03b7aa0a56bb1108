"""The type checker CI runs before the tests (.ci/run: mypy over gpt2stream/ and tokenizer/, [tool.mypy] in
pyproject.toml) catches a call to a function a module does not have: the offline dataset-card crash of issue 26,
``hub.infer_splits``, which no test and no checker noticed."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

PLANTED = '''from gpt2stream.data.hub import resolve as hub


def online(repo):  # no annotations: checked all the same (check_untyped_defs)
    return hub.resolve_dataset(repo)


def offline(card):
    return hub.infer_splits(card)
'''


def test_mypy_flags_a_planted_missing_attribute(tmp_path):
    f = tmp_path / "planted.py"
    f.write_text(PLANTED, encoding="utf-8")
    p = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                        "--follow-imports=silent", str(f)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    errors = [ln for ln in p.stdout.splitlines() if ": error:" in ln]
    assert p.returncode == 1, p.stdout + p.stderr
    assert len(errors) == 1 and 'planted.py:9: error: Module has no attribute "infer_splits"' in errors[0], errors


def test_ci_runs_the_type_checker_before_the_tests():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    mypy = next(i for i, ln in enumerate(ci) if ln.strip().startswith("python -m mypy"))
    pytest = next(i for i, ln in enumerate(ci) if ln.strip().startswith("python -m pytest"))
    assert mypy < pytest and "|| " not in ci[mypy]  # its failure fails CI (set -e)
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"mypy' in pyproject and "[tool.mypy]" in pyproject
