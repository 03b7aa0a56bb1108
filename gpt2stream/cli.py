"""Command-line plumbing shared by the entry points: flag overrides onto dataclasses, and one-line errors.

Flags are the dataclass field names with ``-`` or ``_`` (``--max-steps 100``, ``--max_steps=100``). Booleans take
``--flag`` / ``--no-flag`` or an explicit ``--flag=true``. An unknown flag suggests the closest known name.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from gpt2stream.errors import USER_ERRORS, UserError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null", "auto"}


def _field_kind(tp: Any) -> tuple[type, bool]:
    """(base type, whether None is allowed) for a dataclass field annotation like ``int | None``."""
    if isinstance(tp, str):  # postponed annotations
        tp = eval(tp, {"Optional": typing.Optional})  # noqa: S307 - our own annotations only
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def parse_value(flag: str, raw: str, tp: type, optional: bool) -> Any:
    """Convert one flag's text to the field's type, or raise UserError naming the flag."""
    low = raw.strip().lower()
    if optional and low in _NONE:
        return None
    try:
        if tp is bool:
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if tp is int:
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)  # allow 1e6, 524_288
            if value != int(value):
                raise ValueError
            return int(value)
        if tp is float:
            return float(raw)
        return raw
    except ValueError:
        kind = "true/false" if tp is bool else tp.__name__
        raise UserError(f"--{flag}: {raw!r} is not a valid {kind}") from None


def flag_table(*configs: Any) -> dict[str, tuple[Any, dataclasses.Field]]:
    """Map flag name (with dashes) -> (dataclass instance, field) over nested dataclasses."""
    table: dict[str, tuple[Any, dataclasses.Field]] = {}

    def walk(obj: Any) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value)
            elif not f.name.startswith("_") and f.metadata.get("flag", True):  # flag=False: saved, not a flag
                flag = f.name.replace("_", "-")
                if flag in table:  # two sections with one field name would make one flag set the other silently
                    other = type(table[flag][0]).__name__
                    raise ValueError(f"flag --{flag} is defined twice ({other} and {type(obj).__name__})")
                table[flag] = (obj, f)

    for c in configs:
        walk(c)
    return table


def take_option(argv: Sequence[str], name: str, hint: str = "") -> tuple[str | None, list[str]]:
    """Remove ``--name VALUE`` / ``--name=VALUE`` from argv and return (VALUE or None, the rest).

    The value is taken verbatim, so it may start with dashes or be empty (``--prompt ''``).
    """
    value, rest, i = None, [], 0
    while i < len(argv):
        tok = argv[i]
        if tok == f"--{name}":
            if i + 1 >= len(argv):
                raise UserError(f"--{name} needs a value{hint}")
            value, i = argv[i + 1], i + 2
            continue
        if tok.startswith(f"--{name}="):
            value = tok.split("=", 1)[1]
        else:
            rest.append(tok)
        i += 1
    return value, rest


def parse_flags(
    argv: Sequence[str], table: dict[str, tuple[Any, dataclasses.Field]], optional_value: dict[str, str] | None = None
) -> dict[str, Any]:
    """Parse ``argv`` into {flag: typed value}. ``optional_value`` gives flags that may stand alone, with the value
    they then take (``--resume`` alone means ``latest``)."""
    optional_value = optional_value or {}
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if not tok.startswith("--") or tok == "--":
            raise UserError(f"unexpected argument {tok!r}: options look like --name value or --name=value")
        name, eq, raw = tok[2:].partition("=")
        name = name.replace("_", "-")
        negated = False
        if name not in table and name.startswith("no-") and name[3:] in table:
            name, negated = name[3:], True
        if name not in table:
            close = difflib.get_close_matches(name, list(table), n=1, cutoff=0.5)
            hint = f"; did you mean --{close[0]}?" if close else "; see --help for the options"
            raise UserError(f"unknown option --{name}{hint}")
        obj, f = table[name]
        tp, optional = _field_kind(f.type)
        if negated:
            if tp is not bool or eq:
                raise UserError(f"--no-{name}: only on/off options can be negated")
            out[name] = False
            continue
        if not eq:
            nxt = argv[i] if i < len(argv) else None
            standalone = nxt is None or nxt.startswith("--")
            literals = _TRUE | _FALSE | (_NONE if optional else set())
            if tp is bool and (nxt is None or standalone or nxt.lower() not in literals):
                out[name] = True
                continue
            if nxt is None or standalone:
                if name in optional_value:
                    out[name] = optional_value[name]
                    continue
                raise UserError(f"--{name} needs a value")
            raw = nxt
            i += 1
        out[name] = parse_value(name, raw, tp, optional)
    return out


def apply_flags(values: dict[str, Any], table: dict[str, tuple[Any, dataclasses.Field]]) -> None:
    for name, value in values.items():
        obj, f = table[name]
        setattr(obj, f.name, value)


def run_main(main: Callable[[list[str]], int | None], argv: list[str] | None = None,
             broken_pipe_ok: bool = True) -> None:
    """Run an entry point: a UserError becomes ``error: <message>`` on stderr and exit status 2, no traceback
    (under torchrun once for the job, not once per rank: gpt2stream.launcher).
    ``broken_pipe_ok``: a BrokenPipeError means ``| head`` has read enough, status 0 (never for training: its
    output cannot break (gpt2stream.console), so a broken pipe there is a real failure)."""
    try:
        code = main(sys.argv[1:] if argv is None else argv)
    except USER_ERRORS as e:
        from gpt2stream.launcher import report_error

        report_error(str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    except BrokenPipeError:  # `... | head` closed our stdout: not an error worth a traceback
        if not broken_pipe_ok:
            raise
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    sys.exit(code or 0)


def _field_comments(cls: type) -> dict[str, str]:
    """{field: the comment on its line} from a dataclass's source, so --help shows what config.py documents."""
    import inspect

    comments: dict[str, str] = {}
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return comments
    for line in lines:
        name, colon, rest = line.strip().partition(":")
        if colon and name.isidentifier() and "#" in rest:
            comments[name] = rest.split("#", 1)[1].strip()
    return comments


def describe_flags(*configs: Any) -> str:
    """One line per flag: name, current value (the preset's default) and the field's documentation."""
    lines = []
    for name, (obj, f) in flag_table(*configs).items():
        doc = _field_comments(type(obj)).get(f.name, "")
        value = getattr(obj, f.name)
        shown = "none" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)
        lines.append(f"  --{name:<20} {shown:<28} {doc}".rstrip())
    return "\n".join(lines)
