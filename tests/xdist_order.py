"""The order in which pytest-xdist hands test files to its workers: the most expensive first.

Under ``--dist loadfile`` a worker takes the next whole file when it is nearly done with its last one, so the suite
ends when the file that started last ends. xdist's own order (most tests first, ``--loadscope-reorder``) puts the
files of one or two end-to-end tests (a torchrun run, a compile) at the very end, where one of them keeps one core
busy while the other has nothing left to do. Longest first (conftest's ``pytest_collection_modifyitems``, with
``--no-loadscope-reorder`` in pyproject's addopts) leaves the cheap files of many unit tests to fill the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Seconds one file took in a full CI run on 2 cores (--durations; approximate: only the order matters). A file not
# listed is estimated from its tests (SLOW_S per test marked slow, UNIT_S per other test).
MEASURED_S = {
    "test_train_elastic.py": 150, "test_hub_scale_train.py": 105, "test_train_resume.py": 90,
    "test_train_ddp.py": 72, "test_train_lifecycle.py": 75, "test_train_failures.py": 70, "test_e2e_train.py": 59,
    "test_train_ddp_compile.py": 53, "test_readme_offline.py": 52, "test_activation_checkpointing.py": 46,
    "test_data_scale.py": 45, "test_train_muon.py": 42, "test_doclog_epochs.py": 40, "test_multinode.py": 40,
    "test_tokenizer_encoding.py": 38, "test_telemetry.py": 35, "test_offline.py": 32, "test_step_costs.py": 30,
    "test_hellaswag.py": 30, "test_tracking.py": 28, "test_export.py": 28, "test_train_compile.py": 28,
    "test_bench_train.py": 26, "test_data_diagnosis.py": 25, "test_data_mixing.py": 20,
}
SLOW_S = 10.0
UNIT_S = 0.2


def file_costs(items: Sequence[Any]) -> dict[str, float]:
    """{file path: estimated seconds} for the collected ``items`` (pytest Items)."""
    est: dict[str, float] = {}
    for item in items:
        path = str(item.path)
        est[path] = est.get(path, 0.0) + (SLOW_S if item.get_closest_marker("slow") else UNIT_S)
    return {p: float(MEASURED_S.get(Path(p).name, s)) for p, s in est.items()}


def longest_files_first(items: list[Any]) -> None:
    """Reorder ``items`` in place: whole files, most expensive first; tests keep their order inside a file (module
    fixtures are shared by neighbours) and files of equal cost keep theirs (every worker must collect one order)."""
    cost = file_costs(items)
    first = {}
    for i, item in enumerate(items):
        first.setdefault(str(item.path), i)
    items.sort(key=lambda it: (-cost[str(it.path)], first[str(it.path)]))
