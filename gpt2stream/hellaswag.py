"""``python -m gpt2stream.hellaswag RUN`` = ``python -m gpt2stream.evals hellaswag RUN`` (``--hellaswag PATH`` is
``--data PATH``). The task lives in gpt2stream/evals/."""

from __future__ import annotations


def alias_argv(argv: list[str]) -> list[str]:
    """The evals command's argv for this one's.

    >>> alias_argv(["run", "--hellaswag", "f.jsonl", "--hellaswag=g"])
    ['hellaswag', 'run', '--data', 'f.jsonl', '--data=g']
    """
    renamed = ["--data" + a[len("--hellaswag"):] if a == "--hellaswag" or a.startswith("--hellaswag=") else a
               for a in argv]
    return ["hellaswag", *renamed]


if __name__ == "__main__":
    import sys

    from gpt2stream.evals.command import entry

    entry(alias_argv(sys.argv[1:]))
