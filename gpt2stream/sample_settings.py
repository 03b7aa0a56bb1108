"""The sampling knobs (``SampleSettings``: temperature, top-k, top-p, ...) and the ``/commands`` of an interactive
session that change them (``apply_command``: one line -> new settings, a reply, whether to quit)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gpt2stream.errors import UserError

_OFF = {"off", "none", "0", ""}


@dataclass
class SampleSettings:
    """What a generation does; every field is a flag and most can be changed in the session with a /command."""

    max_new_tokens: int = 256  # tokens generated per sample (at most; <|endoftext|> may end it earlier)
    temperature: float = 0.8  # softmax temperature; 0 = greedy (always the most likely token)
    top_k: int | None = 200  # sample only among the k most likely tokens; None/0 = no limit
    top_p: float | None = None  # nucleus sampling: the smallest set of tokens holding this much probability; None = off
    num_samples: int = 1  # continuations per prompt
    seed: int | None = None  # fixed seed = reproducible output for a given prompt; None = different each time
    stop_at_eot: bool = True  # <|endoftext|> ends a sample (--no-stop-at-eot prints it and goes on)

    def __post_init__(self) -> None:
        if self.top_k == 0:
            self.top_k = None
        if self.top_p == 1.0:
            self.top_p = None
        self.validate()

    def validate(self) -> None:
        def bad(name: str, value: object, allowed: str) -> UserError:
            return UserError(f"{name.replace('_', '-')}={value!r} is invalid: {allowed}")

        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise bad("max_new_tokens", self.max_new_tokens, "must be an integer >= 1")
        if not 0 <= self.temperature < float("inf"):
            raise bad("temperature", self.temperature, "must be a finite number >= 0 (0 = greedy)")
        if self.top_k is not None and self.top_k < 0:
            raise bad("top_k", self.top_k, "must be >= 1, or 0/none for no limit")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise bad("top_p", self.top_p, "must be in (0, 1]; 1 or none = off")
        if not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise bad("num_samples", self.num_samples, "must be an integer >= 1")
        if self.seed is not None and not -(2**63) <= self.seed < 2**64:  # what torch.Generator.manual_seed takes
            raise bad("seed", self.seed, "must be an integer between -2**63 and 2**64-1, or off for random")

    def describe(self) -> str:
        top_k = self.top_k if self.top_k else "off"
        top_p = self.top_p if self.top_p else "off"
        seed = "random" if self.seed is None else self.seed
        eot = "stop" if self.stop_at_eot else "continue"
        return (f"temperature={self.temperature:g} top_k={top_k} top_p={top_p} max_new_tokens={self.max_new_tokens} "
                f"num_samples={self.num_samples} seed={seed} eot={eot}")


HELP = """commands:
  /temp T      temperature (0 = greedy)           /topk K     top-k (0 or off = no limit)
  /topp P      top-p nucleus (1 or off = off)     /max N      max new tokens per sample
  /n N         samples per prompt                 /seed S     fixed seed (off = random)
  /eot on|off  stop a sample at <|endoftext|>     /settings   show the current settings
  /help        this text                          /quit       exit (or Ctrl-D)
Ctrl-C stops the current generation. An empty prompt starts from <|endoftext|>."""

# command -> (field, parser)
_COMMANDS = {
    "/temp": ("temperature", float), "/temperature": ("temperature", float),
    "/topk": ("top_k", "optint"), "/top_k": ("top_k", "optint"),
    "/topp": ("top_p", "optfloat"), "/top_p": ("top_p", "optfloat"),
    "/max": ("max_new_tokens", int), "/max_new_tokens": ("max_new_tokens", int),
    "/n": ("num_samples", int), "/num_samples": ("num_samples", int),
    "/seed": ("seed", "optint"),
    "/eot": ("stop_at_eot", "bool"),
}


def _parse_setting(kind: object, raw: str) -> object:
    low = raw.strip().lower()
    if kind == "optint":
        return None if low in _OFF - {"0"} else int(low)
    if kind == "optfloat":
        return None if low in _OFF else float(low)
    if kind == "bool":
        if low in ("on", "true", "yes", "1", "stop"):
            return True
        if low in ("off", "false", "no", "0", "continue"):
            return False
        raise ValueError(raw)
    return kind(low)  # type: ignore[operator]


def apply_command(line: str, settings: SampleSettings) -> tuple[SampleSettings, str, bool]:
    """Apply one ``/command`` line -> (new settings, message for the user, quit?). Bad input keeps the settings.

    >>> s, msg, quit = apply_command("/temp 0.5", SampleSettings())
    >>> s.temperature, msg, quit
    (0.5, 'temperature = 0.5', False)
    """
    parts = line.strip().split(None, 1)
    cmd = parts[0].lower()
    arg = parts[1] if len(parts) > 1 else ""
    if cmd in ("/quit", "/exit", "/q"):
        return settings, "bye", True
    if cmd in ("/help", "/?", "/h"):
        return settings, HELP, False
    if cmd in ("/settings", "/show"):
        return settings, settings.describe(), False
    if cmd not in _COMMANDS:
        return settings, f"unknown command {cmd}; /help lists the commands", False
    name, kind = _COMMANDS[cmd]
    if not arg:
        return settings, f"{name} = {getattr(settings, name)} (give a value to change it: {cmd} VALUE)", False
    try:
        value: Any = _parse_setting(kind, arg)
        new = dataclasses.replace(settings, **{name: value})  # __post_init__ normalises and validates
    except (ValueError, UserError) as e:
        reason = str(e) if isinstance(e, UserError) else f"{arg!r} is not a valid value"
        return settings, f"{cmd}: {reason}; unchanged", False
    return new, f"{name} = {getattr(new, name)}", False
