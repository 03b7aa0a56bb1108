"""Interactive sampling: load a model, read prompts, stream continuations token by token, keep a transcript.

Used by ``run_sample.py`` (see its docstring for the flags). The pieces are small and separately testable:
``SampleSettings`` and ``apply_command`` (sample_settings.py: the knobs, and one ``/command`` line -> new settings),
``StreamDecoder`` (token ids -> complete UTF-8 characters, never half a character), ``prepare_prompt`` (text ->
context ids, cut to the model's context), ``load_source`` (gpt2stream/loading.py: run dir / checkpoint / HF weights ->
model + tokenizer) and ``Session`` (the prompt loop).
"""

from __future__ import annotations

import codecs
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch

from gpt2stream.distributed import pick_device
from gpt2stream.errors import UserError
from gpt2stream.generate import generate_stream
from gpt2stream.loading import Loaded, load_source
from gpt2stream.sample_settings import SampleSettings, apply_command

EOT_TEXT = "<|endoftext|>"


@dataclass
class SampleArgs:
    """Command-line options of run_sample.py (besides --prompt, which is taken verbatim)."""

    out_dir: str = ""  # run directory: sample from its latest valid checkpoint
    ckpt: str = ""  # one checkpoint (file or directory)
    init: str = ""  # Hugging Face GPT-2 weights: "gpt2", "gpt2-medium", ..., or a local directory
    tokenizer: str = ""  # "gpt2" or a tokenizer.json; default: the checkpoint's own, or gpt2 for --init
    device: str = "auto"  # "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:N", "mps"
    transcript: str = ""  # file the session is appended to; default generated.txt in the run directory; "off" = none
    settings: SampleSettings = field(default_factory=SampleSettings)


# ---- settings commands --------------------------------------------------------------------------------------------

# ---- decoding and prompts -----------------------------------------------------------------------------------------


class StreamDecoder:
    """Token ids in, complete characters out: a character split across tokens is printed once all its bytes came.

    Feeding every id and then ``flush()`` gives exactly ``tokenizer.decode(ids)`` (invalid bytes become U+FFFD).
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self.tokenizer.decode_bytes([token_id]))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def prepare_prompt(text: str, tokenizer, block_size: int) -> tuple[list[int], str | None]:
    """Prompt text -> (context ids, notice or None). Empty -> [<|endoftext|>]; too long -> the last block_size ids.

    A literal ``<|endoftext|>`` in the prompt is the special token (a document boundary), as in training data.
    """
    ids = tokenizer.encode(text, allowed_special={EOT_TEXT}) if text else []
    if not ids:
        return [tokenizer.eot_id], None
    if len(ids) > block_size:
        notice = (f"note: the prompt is {len(ids)} tokens, longer than the model's context of {block_size}; "
                  f"kept the last {block_size}")
        return ids[-block_size:], notice
    return ids, None


def default_transcript(run_dir: Path | None) -> Path:
    """generated.txt in the run directory; for --init (no run directory) under $XDG_DATA_HOME/gpt2stream."""
    if run_dir is not None:
        return run_dir / "generated.txt"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "gpt2stream" / "generated.txt"


# ---- generation and the session -----------------------------------------------------------------------------------


def stream_tokens(model, ids: list[int], settings: SampleSettings, eot_id: int, generator: torch.Generator,
                  use_cache: bool = True) -> Iterator[int]:
    """Yield new token ids for one sample; <|endoftext|> ends it (not yielded) when settings.stop_at_eot."""
    device = next(model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    for nxt in generate_stream(
        model, idx, settings.max_new_tokens, temperature=settings.temperature, top_k=settings.top_k,
        top_p=settings.top_p, stop_token=eot_id if settings.stop_at_eot else None, generator=generator,
        use_cache=use_cache,
    ):
        t = int(nxt[0])
        if settings.stop_at_eot and t == eot_id:
            return
        yield t


class Session:
    """The prompt loop: one prompt at a time, each answered with settings.num_samples streamed samples."""

    def __init__(self, loaded: Loaded, settings: SampleSettings, out: TextIO, err: TextIO,
                 transcript: Path | None) -> None:
        self.loaded = loaded
        self.settings = settings
        self.out, self.err = out, err
        self.transcript = transcript
        self.device = next(loaded.model.parameters()).device

    def note(self, msg: str) -> None:
        print(msg, file=self.err, flush=True)

    def _generator(self) -> torch.Generator:
        seed = self.settings.seed
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") & (2**63 - 1)
        return torch.Generator(device=self.device).manual_seed(seed)

    def answer(self, prompt: str, echo: bool = False) -> bool:
        """Generate and stream all samples for one prompt; False if Ctrl-C interrupted it. ``echo``: each sample
        starts with the prompt (--prompt: the output then reads as a whole text, not from mid-sentence)."""
        tok = self.loaded.tokenizer
        model = self.loaded.model
        ids, notice = prepare_prompt(prompt, tok, model.config.block_size)
        if notice:
            self.note(notice)
        s = self.settings
        gen = self._generator()  # one generator per prompt: with a seed, the same prompt gives the same samples
        samples: list[str] = []
        completed = True
        for i in range(s.num_samples):
            if s.num_samples > 1:
                self.out.write(f"----- sample {i + 1}/{s.num_samples} -----\n")
            dec = StreamDecoder(tok)
            parts: list[str] = []
            if echo:
                self.out.write(prompt)
            try:
                for t in stream_tokens(model, ids, s, tok.eot_id, gen):
                    text = dec.push(t)
                    if text:
                        parts.append(text)
                        self.out.write(text)
                        self.out.flush()
            except KeyboardInterrupt:
                completed = False
            tail = dec.flush()
            parts.append(tail)
            self.out.write(tail + "\n")
            if not completed:
                self.out.write("[interrupted]\n")
            self.out.flush()
            samples.append("".join(parts) + ("" if completed else "\n[interrupted]"))
            if not completed:
                break
        self._record(prompt, samples)
        return completed

    def _record(self, prompt: str, samples: list[str]) -> None:
        if self.transcript is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        lines = [f"=== {stamp} UTC  {self.loaded.label}  {self.settings.describe()}", f">>> {prompt}"]
        for i, text in enumerate(samples):
            lines.append(f"--- sample {i + 1}/{len(samples)}")
            lines.append(text)
        try:
            self.transcript.parent.mkdir(parents=True, exist_ok=True)
            with open(self.transcript, "a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n\n")
        except OSError as e:
            self.note(f"warning: cannot write the transcript {self.transcript}: {e}; continuing without it")
            self.transcript = None

    def handle_line(self, line: str) -> bool:
        """One input line: a /command or a prompt. Returns False when the session should end."""
        if line.startswith("/"):
            self.settings, msg, quit_ = apply_command(line, self.settings)
            self.note(msg)
            return not quit_
        self.answer(line)
        return True

    def run_interactive(self, inp: TextIO) -> None:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
        while True:
            try:
                line = input("> ") if inp is sys.stdin else _read_line(inp, self.out)
            except EOFError:  # Ctrl-D
                self.out.write("\n")
                self.out.flush()
                return
            except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh prompt, like a shell
                self.out.write("\n")
                continue
            try:
                if not self.handle_line(line):
                    return
            except KeyboardInterrupt:  # outside the generation loop (e.g. while encoding): back to the prompt
                self.out.write("\n[interrupted]\n")

    def run_lines(self, inp: TextIO) -> bool:
        """Piped input: each line is a prompt (or a /command); the answers go to stdout. False if Ctrl-C stopped it:
        with no one at a prompt, Ctrl-C means stop the batch, not go on with the next line."""
        for raw in inp:
            line = raw.rstrip("\r\n")
            if line.startswith("/"):
                if not self.handle_line(line):
                    return True
            elif not self.answer(line):
                return False
        return True


def _read_line(inp: TextIO, out: TextIO) -> str:
    out.write("> ")
    out.flush()
    line = inp.readline()
    if not line:
        raise EOFError
    return line.rstrip("\r\n")


# ---- command line -------------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> tuple[SampleArgs, str | None]:
    from gpt2stream.cli import apply_flags, flag_table, parse_flags, take_option

    prompt, rest = take_option(argv, "prompt", " (--prompt '' starts from <|endoftext|>)")
    args = SampleArgs()
    table = flag_table(args)
    apply_flags(parse_flags(rest, table), table)
    args.settings.__post_init__()
    return args, prompt


def transcript_path(args: SampleArgs, loaded: Loaded) -> Path | None:
    if args.transcript.strip().lower() in ("off", "none"):
        return None
    if not args.transcript:
        return default_transcript(loaded.run_dir)
    path = Path(args.transcript).expanduser()
    if path.is_dir():
        raise UserError(f"--transcript {args.transcript} is a directory; give a file (e.g. {path / 'generated.txt'})"
                        " or off")
    if not path.parent.is_dir():  # a typo must not quietly create a directory tree
        raise UserError(f"--transcript {args.transcript}: directory {path.parent} does not exist; create it, or "
                        "give another file, or off")
    return path


def ctrl_c_works() -> None:
    """Ctrl-C stops a generation even when this process inherited SIGINT ignored or blocked from whatever started it
    (a launcher that shields its children from the terminal's Ctrl-C): the sampler is interactive. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def main(argv: list[str], stdin: TextIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    args, prompt = parse_args(argv)
    ctrl_c_works()
    device = pick_device(args.device)
    loaded = load_source(args.out_dir, args.ckpt, args.init, args.tokenizer, device)
    session = Session(loaded, args.settings, stdout, stderr, transcript_path(args, loaded))
    try:
        if not run_session(session, prompt, stdin, args, loaded, device):
            return 130  # like a shell: a script running --prompt or piped prompts sees the Ctrl-C
    except BrokenPipeError:  # e.g. `| head`: the reader took what it wanted; that is success, as for any filter
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0


def run_session(session: Session, prompt: str | None, stdin: TextIO, args: SampleArgs, loaded: Loaded,
                device: torch.device) -> bool:
    """False when Ctrl-C interrupted a non-interactive run (--prompt or piped prompts)."""
    if prompt is not None:
        return session.answer(prompt, echo=True)
    interactive = stdin.isatty()
    if interactive:
        n = sum(p.numel() for p in loaded.model.parameters())
        session.note(f"{loaded.label}: {n / 1e6:.1f}M parameters, context {loaded.model.config.block_size}, "
                     f"tokenizer {loaded.tokenizer_spec}, on {device}")
        session.note(f"settings: {args.settings.describe()}")
        where = session.transcript if session.transcript else "off"
        session.note(f"transcript: {where}.  /help for commands; Ctrl-C stops a generation, Ctrl-D or /quit exits.")
        session.run_interactive(stdin)
        return True
    return session.run_lines(stdin)
