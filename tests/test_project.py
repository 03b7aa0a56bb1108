"""Project-wide promises: the top-level layout, no work at import time, lint, and CI running the README's commands."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

ALLOWED_TOP = {
    "gpt2stream", "tokenizer", "config.py", "run_train.py", "run_sample.py", "train_tokenizer.py", "README.md",
    "pyproject.toml", "tests", "bench", "docs", ".ci", "LICENSE", ".gitignore",
}


def _tracked_top_level() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:  # e.g. a source tarball without .git: look at the directory instead
        return {p.name for p in ROOT.iterdir() if not p.name.startswith(".") or p.name in (".ci", ".gitignore")}
    return {line.split("/")[0] for line in out.stdout.splitlines()}


def test_top_level_is_what_users_were_promised():
    extra = _tracked_top_level() - ALLOWED_TOP
    assert not extra, f"unexpected top-level entries: {sorted(extra)}"
    for entry in ("gpt2stream", "tokenizer", "config.py", "run_train.py", "run_sample.py", "train_tokenizer.py"):
        assert (ROOT / entry).exists(), entry


def test_importing_everything_does_no_work(tmp_path):
    """No files, no process group, no threads started by merely importing the project's modules."""
    modules = ["config", "run_train", "run_sample", "train_tokenizer"]
    for pkg in ("gpt2stream", "tokenizer"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.append(".".join(parts))
    code = (
        "import importlib, sys, threading\n"
        f"mods = {modules!r}\n"
        "for m in mods: importlib.import_module(m)\n"
        "import torch.distributed as dist\n"
        "assert not (dist.is_available() and dist.is_initialized()), 'process group created at import'\n"
        "extra = [t.name for t in threading.enumerate() if t is not threading.main_thread()]\n"
        "assert not extra, f'threads started at import: {extra}'\n"
        "print('ok', len(mods))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert list(tmp_path.iterdir()) == [], "importing created files in the working directory"


def test_install_puts_no_generic_top_level_names_in_site_packages():
    """Only the packages gpt2stream and tokenizer (with every subpackage) are installed; ``config``, ``run_train`` and
    the other scripts stay in the repository, run from its root."""
    import tomllib
    from setuptools import find_packages

    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert "py-modules" not in tool and "packages" in tool, "list the packages with [tool.setuptools.packages.find]"
    found = set(find_packages(str(ROOT), include=tool["packages"]["find"]["include"]))
    assert {p.split(".")[0] for p in found} == {"gpt2stream", "tokenizer"}
    every = {".".join(p.parent.relative_to(ROOT).parts) for pkg in ("gpt2stream", "tokenizer")
             for p in (ROOT / pkg).rglob("__init__.py")}
    assert every == found


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(ROOT / ".venv" / "bin" / "ruff")
    if not os.path.exists(ruff):
        pytest.fail("ruff is not installed: pip install -e '.[dev]' installs it")
    out = subprocess.run([ruff, "check", "--quiet", "."], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]


def test_ci_runs_the_readme_commands_verbatim():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    block = re.search(r"<!-- setup -->\s*```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert block, "README lacks the <!-- setup --> block with the install and test commands"
    commands = [c for c in block.group(1).splitlines() if c.strip() and not c.startswith("#")]
    assert len(commands) == 2, commands
    ci_lines = [ln.strip() for ln in ci.splitlines()]
    for c in commands:
        assert c.strip() in ci_lines, f"{c!r} is in the README but .ci/run does not run it"
