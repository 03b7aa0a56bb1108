"""The package's import graph, read from the source with ``ast``: no cycles, and the layers of the design.

    entries -> config -> {model, data, train, sample, eval} -> {tokenizer, distributed, checkpoint}

``tokenizer`` imports nothing of ours; no package module imports an entry script or ``config`` (the package takes
the typed dataclasses of ``gpt2stream.config``, which import nothing above ``errors`` and ``cli``); ``checkpoint``
and ``distributed`` import none of the layer above; bench/ and the package never import tests/; ``data.sources``
never imports ``data.hub`` (the Hub builds on the sources); ``evals`` never imports ``train``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRIES = {"run_train", "run_sample", "train_tokenizer"}
OURS = ("gpt2stream", "tokenizer", "config", "tests", *ENTRIES)
# The bottom layer and what it may import of ours besides the tokenizer: the leaf modules every layer shares.
BOTTOM = {"gpt2stream.distributed", "gpt2stream.checkpoint"}
LEAVES = {"gpt2stream", "gpt2stream.errors", "gpt2stream.cli", "gpt2stream.config", "gpt2stream.setup_signals",
          "gpt2stream.netif", "gpt2stream.launcher"}
# Leaves with a tighter rule: all they may import of ours. The config (schema and argv parse) sits on the flag
# plumbing of cli, which sits on errors.
ONLY = {"gpt2stream.config": {"gpt2stream", "gpt2stream.errors", "gpt2stream.cli"},
        "gpt2stream.cli": {"gpt2stream", "gpt2stream.errors", "gpt2stream.launcher"},
        "gpt2stream.launcher": set()}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module of ours that ``path`` imports, at module level or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return {m for m in found if m.split(".")[0] in OURS}


def graph() -> dict[str, set[str]]:
    files = [*ROOT.glob("*.py"), *ROOT.glob("gpt2stream/**/*.py"), *ROOT.glob("tokenizer/**/*.py"),
             *ROOT.glob("bench/*.py")]
    names = {module_name(f): f for f in files}
    out: dict[str, set[str]] = {}
    for name, f in names.items():
        out[name] = {m for m in imports_of(f) if m in names and m != name}
    return out


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None. Every edge counts, a package's ``__init__`` importing its own submodules
    included: a submodule that imports its package back (``from pkg import sibling``) closes a cycle."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_find_cycle_finds_one_and_accepts_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    # the package -> submodule edge counts: the cycle train/ had (train -> main -> loop -> train)
    pkg = {"p": {"p.main"}, "p.main": {"p.loop"}, "p.loop": {"p", "p.evaluate"}, "p.evaluate": set()}
    assert find_cycle(pkg) == ["p", "p.main", "p.loop", "p"]


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def _in(mod: str, package: str) -> bool:
    return mod == package or mod.startswith(package + ".")


def violations(g: dict[str, set[str]]) -> list[str]:
    """One line per import that breaks the layers."""
    out = []
    for mod, deps in sorted(g.items()):
        top = mod.split(".")[0]
        if top == "tokenizer" and not all(d.startswith("tokenizer") for d in deps):
            out.append(f"{mod} imports {sorted(deps)}: tokenizer stands alone")
        if top in ("gpt2stream", "tokenizer", "config") and deps & ENTRIES:
            out.append(f"{mod} imports an entry script: {sorted(deps & ENTRIES)}")
        if top in ("gpt2stream", "tokenizer") and "config" in deps:
            out.append(f"{mod} imports config: take the dataclasses of gpt2stream.config")
        if mod in ONLY and deps - ONLY[mod]:
            out.append(f"{mod} imports {sorted(deps - ONLY[mod])}: it may import only {sorted(ONLY[mod])}")
        if mod in BOTTOM or mod in LEAVES - {"gpt2stream"}:
            above = sorted(d for d in deps if d not in LEAVES and not d.startswith("tokenizer"))
            if above:
                out.append(f"{mod} imports {above}: only the leaves and the tokenizer are below it")
        if mod.startswith("gpt2stream.evals") and any(d.startswith("gpt2stream.train") for d in deps):
            out.append(f"{mod} imports the trainer: evals stand below train (which iterates their registry)")
        if top in ("gpt2stream", "tokenizer", "bench") and any(d.startswith("tests") for d in deps):
            out.append(f"{mod} imports the test suite")
        if _in(mod, "gpt2stream.data.sources") and any(_in(d, "gpt2stream.data.hub") for d in deps):
            out.append(f"{mod} imports the Hub: data.sources never imports data.hub (the Hub builds on the sources)")
    return out


def test_layers():
    assert violations(graph()) == []


@pytest.mark.parametrize("mod, dep", [
    ("gpt2stream.memory", "config"),  # the package reaching up to the presets
    ("gpt2stream.train.main", "run_train"),
    ("config", "run_sample"),
    ("tokenizer.core", "gpt2stream.errors"),
    ("gpt2stream.checkpoint", "gpt2stream.train.build"),
    ("gpt2stream.distributed", "gpt2stream.data.loader"),
    ("gpt2stream.config", "gpt2stream.checkpoint"),  # the config reading checkpoints
    ("gpt2stream.config", "gpt2stream.model"),
    ("gpt2stream.cli", "gpt2stream.config"),
    ("bench.bench_data", "tests.hubserver"),
    ("gpt2stream.evals.multiple_choice", "gpt2stream.train.evaluate"),
    ("gpt2stream.evals", "gpt2stream.train"),
    ("gpt2stream.data.sources.base", "gpt2stream.data.hub.file"),
    ("gpt2stream.data.sources", "gpt2stream.data.hub"),
])
def test_each_layer_rule_catches_its_violation(mod, dep):
    g = graph()
    assert violations({**g, mod: g.get(mod, set()) | {dep}})


def test_lazy_imports_count(tmp_path, monkeypatch):
    """A function-level import is an edge too: that is how the package used to reach config.py."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "gpt2stream").mkdir()
    f = tmp_path / "gpt2stream" / "m.py"
    f.write_text("def late():\n    from config import RunConfig\n    import run_train\n", encoding="utf-8")
    assert {"config", "config.RunConfig", "run_train"} <= imports_of(f)
