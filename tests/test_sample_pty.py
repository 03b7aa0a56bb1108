"""run_sample.py in a real pseudo-terminal: the interactive session, Ctrl-D and Ctrl-C at the prompt."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_sample import RUN_SAMPLE, _env, make_tiny_hf


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> Path:
    return make_tiny_hf(tmp_path_factory.mktemp("tiny_hf"))


# ---- the interactive session in a real pseudo-terminal ------------------------------------------------------------

# Make the pty the child's controlling terminal, so that Ctrl-C typed into it sends SIGINT like a real terminal.
_CTTY = "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execv(sys.argv[1], sys.argv[1:])"


class Pty:
    def __init__(self, args: list[str], env: dict, cwd: Path):
        import pty

        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-c", _CTTY, sys.executable, RUN_SAMPLE, *args],
                                     stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.buf = b""

    def expect(self, needle: str, timeout: float = 120) -> str:
        """Read until needle appears; return everything read up to and including it (and drop it from the buffer)."""
        want = needle.encode()
        deadline = time.monotonic() + timeout
        while want not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {needle!r}; got {self.buf[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"session ended while waiting for {needle!r}; got {self.buf[-2000:]!r}")
                self.buf += chunk
        i = self.buf.index(want) + len(want)
        head, self.buf = self.buf[:i], self.buf[i:]
        return head.decode("utf-8", "replace")

    def read_some(self, n_bytes: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n_bytes:
            assert time.monotonic() < deadline, f"only {len(self.buf)} bytes of output: {self.buf!r}"
            if select.select([self.master], [], [], 1)[0]:
                self.buf += os.read(self.master, 65536)

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        finally:
            os.close(self.master)


@pytest.mark.slow
def test_interactive_session_in_a_pty(tiny_hf, tmp_path):
    transcript = tmp_path / "session.txt"
    t = Pty(["--init", str(tiny_hf), "--max-new-tokens", "12", "--seed", "3", "--transcript", str(transcript)],
            _env(tmp_path), tmp_path)
    try:
        banner = t.expect("> ")
        assert "/help for commands" in banner and "Ctrl-C stops a generation" in banner
        # a prompt: the continuation streams out, then a new prompt
        t.send("Hello there\r")
        t.expect("Hello there")  # the terminal's echo
        t.expect("\n> ")
        # change a setting
        t.send("/max 1000000\r")
        t.expect("max_new_tokens = 1000000")
        t.send("/eot off\r")
        t.expect("stop_at_eot = False")
        # a long generation, interrupted with Ctrl-C: the session goes on
        t.send("Tell me everything\r")
        t.expect("Tell me everything")
        t.buf = b""
        t.read_some(300)  # it is streaming
        t.send("\x03")
        t.expect("[interrupted]")
        t.expect("> ")
        assert t.proc.poll() is None
        # still usable after the interrupt: greedy output, then /help, then quit
        t.send("/temp 0\r")
        t.expect("temperature = 0.0")
        t.send("/max 5\r")
        t.expect("max_new_tokens = 5")
        t.send("Again\r")
        t.expect("Again")
        t.expect("> ")
        t.send("/help\r")
        t.expect("/quit")
        t.send("/quit\r")
        t.expect("bye")
        assert t.close() == 0
    finally:
        if t.proc.poll() is None:
            t.proc.kill()
            t.close()
    log = transcript.read_text()
    prompts = [ln for ln in log.splitlines() if ln.startswith(">>>")]
    assert prompts == [">>> Hello there", ">>> Tell me everything", ">>> Again"]
    assert log.count("[interrupted]") == 1
    assert "temperature=0 " in log.split(">>> Again")[0].splitlines()[-1]


@pytest.mark.slow
def test_ctrl_d_and_ctrl_c_at_the_prompt(tiny_hf, tmp_path):
    t = Pty(["--init", str(tiny_hf), "--transcript", "off"], _env(tmp_path), tmp_path)
    try:
        t.expect("> ")
        # CPython's readline prints the prompt a moment before it waits in select(); a SIGINT in that gap is only
        # noticed at the next key press. A person never types that fast; the test waits until readline is waiting.
        time.sleep(1.0)
        t.send("\x03")  # Ctrl-C at the prompt: a fresh prompt, not an exit
        t.expect("> ")
        assert t.proc.poll() is None
        t.send("\x04")  # Ctrl-D: exit
        assert t.close() == 0
    finally:
        if t.proc.poll() is None:
            t.proc.kill()
            t.close()
