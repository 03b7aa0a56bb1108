"""Sample from a trained model (or OpenAI's GPT-2) interactively, with streaming output.

    python run_sample.py                                   # latest checkpoint of runs/gpt2-124m, interactive
    python run_sample.py --out-dir runs/tiny               # latest valid checkpoint of a run directory
    python run_sample.py --ckpt runs/tiny/checkpoints/...  # one checkpoint
    python run_sample.py --init gpt2                       # OpenAI's GPT-2 124M through the Hugging Face Hub
    python run_sample.py --prompt "The meaning of life"    # one prompt, print the continuation, exit
    echo "Hello" | python run_sample.py --seed 1           # one prompt per input line

Options (defaults in brackets):
  --out-dir DIR          run directory to load the latest valid checkpoint from
  --ckpt PATH            a checkpoint
  --init NAME|DIR        Hugging Face GPT-2 weights: gpt2, gpt2-medium, gpt2-large, gpt2-xl, or a local directory
  --tokenizer SPEC       gpt2 or a tokenizer.json [the checkpoint's own; gpt2 with --init]
  --max-new-tokens N     tokens per sample [256]
  --temperature T        0 = greedy [0.8]
  --top-k K              0/none = off [200]
  --top-p P              nucleus sampling, 1/none = off [none]
  --num-samples N        samples per prompt [1]
  --seed S               fixed seed: the same prompt gives the same output [random]
  --no-stop-at-eot       keep going after <|endoftext|> instead of ending the sample there
  --device DEV           auto, cpu, cuda, cuda:N, mps [auto]
  --prompt TEXT          answer this one prompt and exit ('' starts from <|endoftext|>)
  --transcript FILE      append the session here; off = none [generated.txt in the run directory]

In the session, /help lists the commands (/temp 0.8, /topk 50, /topp 0.9, /max 100, /n 2, /seed 1, /quit).
Ctrl-C stops the current generation; Ctrl-D or /quit exits.
"""

from __future__ import annotations

from gpt2stream.cli import run_main


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    from gpt2stream.sample import main as sample_main

    return sample_main(argv)


if __name__ == "__main__":
    run_main(main)
