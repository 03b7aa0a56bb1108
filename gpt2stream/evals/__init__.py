"""Evaluation tasks by name: ``TASKS`` is the registry that training (``--evals hellaswag --evals-every N``) and
``python -m gpt2stream.evals TASK RUN`` both read, and both score a task with the same call, ``task.evaluate``.

Adding a multiple-choice task is one file and one line: a module that loads its examples and names a
``MultipleChoiceTask`` (hellaswag.py is one), and its entry below. The scorer is multiple_choice.py.
"""

from __future__ import annotations

from gpt2stream.errors import UserError
from gpt2stream.evals import hellaswag
from gpt2stream.evals.multiple_choice import MultipleChoiceTask

TASKS: dict[str, MultipleChoiceTask] = {
    "hellaswag": hellaswag.TASK,
}


def get_task(name: str) -> MultipleChoiceTask:
    if name not in TASKS:
        raise UserError(f"unknown eval {name!r}: choose from {', '.join(sorted(TASKS))}")
    return TASKS[name]


def requested(names: str, data: str) -> dict[str, str]:
    """{task: its local data file, "" = the task's own source} for ``--evals a,b --evals-data a=PATH``; UserError
    for a task that is not registered or data given for a task not asked for."""
    tasks = [get_task(n.strip()).name for n in names.split(",") if n.strip()]
    paths = dict(item.split("=", 1) for item in data.split(",") if item.strip())
    extra = sorted(set(paths) - set(tasks))
    if extra:
        raise UserError(f"--evals-data names {', '.join(extra)}, which --evals does not ask for ({names or 'none'})")
    return {t: paths.get(t, "") for t in tasks}
