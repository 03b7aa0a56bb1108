"""The examples in the package's docstrings (``>>>``) are run and hold: every module of gpt2stream, tokenizer and
config.py that has one. Not pytest's --doctest-modules: that imports every module of the package (GPU-only and
optional-dependency ones included) for the few that have examples."""

from __future__ import annotations

import doctest
import importlib
import re

import pytest

from tests.test_import_graph import ROOT, module_name

# a line that starts with the prompt, or a docstring that does (not a ">>> " inside a string)
EXAMPLE = re.compile(r'^\s*(?:[rR]?""")?>>> ', re.M)


def modules_with_examples() -> list[str]:
    files = [ROOT / "config.py", *ROOT.glob("gpt2stream/**/*.py"), *ROOT.glob("tokenizer/**/*.py")]
    return sorted(module_name(f) for f in files if EXAMPLE.search(f.read_text(encoding="utf-8")))


def test_the_examples_are_found():
    mods = modules_with_examples()
    assert "gpt2stream.report" in mods and "tokenizer.bpe" in mods and len(mods) >= 20


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples_hold(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has '>>> ' that doctest does not run: put examples in docstrings"
    assert result.failed == 0, f"{name}: {result.failed} example(s) failed (output above)"
