"""``python -m gpt2stream.evals TASK RUN``: see gpt2stream/evals/command.py."""

from gpt2stream.evals.command import entry

if __name__ == "__main__":
    entry()
