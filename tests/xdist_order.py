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

# Seconds one file takes in a full CI run on 2 cores (the --durations of a loaded full run, halved; approximate:
# only the order matters). A file not listed is estimated from its tests (SLOW_S per test marked slow, UNIT_S per
# other test).
MEASURED_S = {
    "test_mixture_hub_e2e.py": 130, "test_telemetry.py": 95, "test_data_scale.py": 80, "test_readme_offline.py": 80,
    "test_tracking.py": 80, "test_train_failures.py": 75, "test_offline.py": 70, "test_multinode.py": 65,
    "test_hellaswag.py": 60, "test_doclog_epochs.py": 55, "test_train_elastic.py": 55, "test_hub_faults.py": 50,
    "test_export.py": 48, "test_hub_scale_train.py": 48, "test_data_diagnosis.py": 48, "test_presets.py": 44,
    "test_tokenizer_encoding.py": 44, "test_train_muon.py": 43, "test_train_ddp.py": 40, "test_data_hub.py": 38,
    "test_sample.py": 35, "test_activation_checkpointing.py": 35, "test_data_mixing.py": 33, "test_e2e_train.py": 30,
    "test_mixture_hub.py": 30, "test_bench_train.py": 30, "test_train_compile.py": 29, "test_memory.py": 28,
    "test_mixture_stream.py": 28, "test_train_resume.py": 27, "test_step_costs.py": 26, "test_hub_clients.py": 26,
    "test_sample_pty.py": 20, "test_doctests.py": 10,
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
