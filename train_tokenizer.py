"""Train a byte-level BPE tokenizer and write tokenizer.json: ``python train_tokenizer.py --help``."""

from __future__ import annotations

import sys

from gpt2stream.errors import UserError


def main() -> int:
    from gpt2stream.tokenizer_cli import main as cli_main

    try:
        cli_main(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
