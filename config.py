"""Run configuration: documented, validated dataclasses, presets, and command-line overrides.

A run is configured by a preset (``--preset gpt2-124m``, the default; ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``
or ``tiny``) plus overrides of any
field (``--max-steps 100``). The resolved config is printed by ``--print-config`` and saved as ``config.json`` in the
run directory and inside every checkpoint.

Example:
    >>> cfg = load_config(["--preset", "tiny", "--max-steps", "10"])
    >>> cfg.train.max_steps, cfg.model.n_layer
    (10, 4)
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from gpt2stream.cli import apply_flags, flag_table, parse_flags, take_option
from gpt2stream.errors import UserError


class ConfigError(UserError, ValueError):
    """A config field has a value that is not allowed; the message names the field, the value and what is allowed."""


def _check(ok: bool, section: str, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{section}.{name}={value!r} is invalid: {allowed} (flag --{name.replace('_', '-')})")


def _positive_ints(obj: Any, section: str, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        _check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, section, n, v, "must be an integer >= 1")


@dataclass
class ModelConfig:
    """The GPT-2 network's shape."""

    n_layer: int = 12  # transformer blocks
    n_head: int = 12  # attention heads per block; must divide n_embd
    n_embd: int = 768  # width of the residual stream
    block_size: int = 1024  # context length (learned position embeddings); seq_len may not exceed it
    vocab_size: int | None = None  # real vocabulary size; None = taken from the tokenizer (50257 for GPT-2)
    vocab_multiple: int = 64  # pad the embedding to a multiple of this for faster matmuls (50257 -> 50304)
    dropout: float = 0.0  # dropout in attention/MLP outputs; 0 for pretraining, as GPT-2 reproductions do

    def __post_init__(self) -> None:
        _positive_ints(self, "model", "n_layer", "n_head", "n_embd", "block_size", "vocab_multiple")
        _check(self.n_embd % self.n_head == 0, "model", "n_head", self.n_head, f"must divide n_embd={self.n_embd}")
        if self.vocab_size is not None:
            _positive_ints(self, "model", "vocab_size")
        _check(0.0 <= self.dropout < 1.0, "model", "dropout", self.dropout, "must be in [0, 1)")


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes (x, y) blocks."""

    data: str = "HuggingFaceFW/fineweb-edu"  # Hub dataset id, or local parquet/jsonl/txt file, directory or glob
    data_config: str = "sample-10BT"  # Hub dataset config (subset) name; ignored for local files
    split: str = "train"  # Hub split
    data_revision: str = ""  # Hub dataset branch, tag or sha for a new run ("" = main); a resume keeps its sha
    text_column: str = "text"  # column (parquet) or key (jsonl) holding the document text
    id_column: str = "id"  # column with a stable document id, if the source has one
    tokenizer: str = "gpt2"  # "gpt2" (tiktoken r50k_base) or a path to a tokenizer.json from train_tokenizer.py
    seq_len: int = 1024  # tokens per training sequence (T); blocks of T+1 give inputs and shifted targets
    shuffle_buffer: int = 10000  # documents per epoch-seeded shuffle window; 1 = keep order within a unit (row group)
    num_workers: int = 2  # DataLoader worker processes per rank; 0 = read in the training process
    streams: int = 0  # canonical streams (a divisor of total_batch_size / seq_len); 0 = the largest divisor <= 16
    block_buffer: int = 8192  # packed blocks mixed together, shared out among the streams; 1 = no block shuffle
    txt_docs: str = "file"  # how a local .txt file splits into documents: "file", "paragraph" or "line"
    val_docs: int = 10000  # documents held out for validation (never trained on)
    max_retries: int = 10  # consecutive failed network requests before the stream gives up
    request_timeout: float = 60.0  # seconds before one network request counts as failed
    rate_limit_wait: float = 900.0  # seconds one request may wait out Hub rate limits (429) before the stream gives up

    def __post_init__(self) -> None:
        _check(bool(self.data.strip()), "data", "data", self.data, "give a Hub dataset id or local path")
        _check(bool(self.text_column), "data", "text_column", self.text_column, "must be a column name")
        _check(bool(self.tokenizer), "data", "tokenizer", self.tokenizer, "'gpt2' or a path to tokenizer.json")
        _positive_ints(self, "data", "seq_len", "shuffle_buffer", "max_retries")
        _check(self.num_workers >= 0, "data", "num_workers", self.num_workers, "must be >= 0")
        _check(self.streams >= 0, "data", "streams", self.streams, "must be >= 0 (0 = automatic)")
        _positive_ints(self, "data", "block_buffer")
        _check(self.val_docs >= 0, "data", "val_docs", self.val_docs, "must be >= 0")
        _check(self.txt_docs in ("file", "paragraph", "line"), "data", "txt_docs", self.txt_docs,
               "one of file, paragraph, line")
        _check(self.request_timeout > 0, "data", "request_timeout", self.request_timeout, "must be > 0 seconds")
        _check(self.rate_limit_wait >= 0, "data", "rate_limit_wait", self.rate_limit_wait, "must be >= 0 seconds")
        _check(not any(c.isspace() for c in self.data_revision) and ".." not in self.data_revision, "data",
               "data_revision", self.data_revision, "a branch, tag or commit sha of the dataset")


@dataclass
class TrainConfig:
    """The optimisation: batch, schedule, optimizer, precision, devices and the run directory."""

    seed: int = 1337  # seeds model init, data shuffling and sampling
    out_dir: str = "runs/gpt2-124m"  # run directory: config, metrics, plots, checkpoints
    max_steps: int = 19073  # optimizer steps; 19073 x 524288 tokens ~ 10B tokens, one pass over sample-10BT
    batch_size: int = 16  # micro-batch per rank (sequences per forward pass)
    total_batch_size: int = 524288  # tokens per optimizer step (2**19); gradient accumulation makes up the rest
    lr: float = 6e-4  # peak learning rate
    min_lr: float = 6e-5  # floor of the schedule (cosine ends here; plateau never goes below it)
    warmup_steps: int = 715  # linear warmup steps (375M tokens, as GPT-3 small did)
    schedule: str = "cosine"  # "cosine" (warmup + cosine to min_lr) or "plateau" (cut lr when val loss stalls)
    plateau_factor: float = 0.5  # plateau: multiply lr by this on a plateau
    plateau_patience: int = 3  # plateau: evaluations without improvement before a cut
    plateau_threshold: float = 0.01  # plateau: relative improvement of val loss that counts as progress
    plateau_cooldown: int = 2  # plateau: evaluations to wait after a cut before counting again
    plateau_window: int = 3  # plateau: judge the median of the last this-many val losses, so one spike decides nothing
    weight_decay: float = 0.1  # AdamW decay on 2-D weights only
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay (0.95, not 0.999: steadier at large batch, as GPT-3)
    grad_clip: float = 1.0  # clip the global grad norm to this; 0 = off
    device: str = "auto"  # "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:N" or "mps"
    dtype: str = "auto"  # autocast dtype: "auto" (bfloat16 on CUDA, float32 elsewhere), "bfloat16", "float32"
    compile: bool | None = None  # torch.compile the model; None = on for CUDA only
    activation_checkpointing: bool = False  # recompute each block in backward: less memory, one more forward
    deterministic: bool = False  # deterministic kernels (cuBLAS, embedding backward, no Inductor autotuning): slower
    resume: str = ""  # "" = fresh run, "latest" = newest valid checkpoint in out_dir, or a checkpoint path

    def __post_init__(self) -> None:
        _positive_ints(self, "train", "max_steps", "batch_size", "total_batch_size")
        _check(self.lr > 0, "train", "lr", self.lr, "must be > 0")
        _check(0 <= self.min_lr <= self.lr, "train", "min_lr", self.min_lr, f"must be in [0, lr={self.lr}]")
        _check(self.warmup_steps >= 0, "train", "warmup_steps", self.warmup_steps, "must be >= 0")
        _check(self.schedule in ("cosine", "plateau"), "train", "schedule", self.schedule, "cosine or plateau")
        _check(0 < self.plateau_factor < 1, "train", "plateau_factor", self.plateau_factor, "must be in (0, 1)")
        _check(self.plateau_patience >= 1, "train", "plateau_patience", self.plateau_patience, "must be >= 1")
        _check(self.plateau_threshold >= 0, "train", "plateau_threshold", self.plateau_threshold, "must be >= 0")
        _check(self.plateau_cooldown >= 0, "train", "plateau_cooldown", self.plateau_cooldown, "must be >= 0")
        _check(self.plateau_window >= 1, "train", "plateau_window", self.plateau_window, "must be >= 1")
        _check(self.weight_decay >= 0, "train", "weight_decay", self.weight_decay, "must be >= 0")
        for b in ("beta1", "beta2"):
            _check(0 <= getattr(self, b) < 1, "train", b, getattr(self, b), "must be in [0, 1)")
        _check(self.grad_clip >= 0, "train", "grad_clip", self.grad_clip, "must be >= 0 (0 = no clipping)")
        _check(bool(self.out_dir), "train", "out_dir", self.out_dir, "must be a directory path")
        dev = self.device.split(":")[0]
        _check(dev in ("auto", "cpu", "cuda", "mps"), "train", "device", self.device, "auto, cpu, cuda, cuda:N or mps")
        _check(self.dtype in ("auto", "bfloat16", "float32"), "train", "dtype", self.dtype,
               "auto, bfloat16 or float32")


@dataclass
class EvalConfig:
    """Validation, sampling, HellaSwag, logging and checkpoint cadence."""

    eval_every: int = 250  # steps between validation-loss evaluations (0 = only at the end)
    eval_tokens: int = 10 * 2**20  # validation tokens per evaluation (fixed set, same for every world size)
    save_every: int = 1000  # steps between checkpoints (a checkpoint is also written at the end and on SIGTERM)
    keep_last: int = 3  # checkpoints kept in out_dir/checkpoints; older ones are deleted
    sample_every: int = 1000  # steps between sample generations printed to the log (0 = never)
    sample_tokens: int = 64  # tokens per sample generation
    hellaswag_every: int = 0  # steps between HellaSwag evaluations (0 = never)
    hellaswag: str = ""  # local HellaSwag val jsonl; "" = download once from the original release and cache
    log_every: int = 1  # steps between log lines
    log_docs: bool = False  # write run_dir/docs/rankNNNNN.jsonl: the documents each rank started, per step
    wandb: str = ""  # Weights & Biases project that mirrors metrics.jsonl (rank 0); "" = off; pip install -e ".[wandb]"
    wandb_run_name: str = ""  # W&B run name; "" = the run directory's name
    tensorboard: bool = False  # also write metrics.jsonl's scalars as TensorBoard event files in the run directory

    def __post_init__(self) -> None:
        for n in ("eval_every", "save_every", "sample_every", "hellaswag_every"):
            _check(getattr(self, n) >= 0, "eval", n, getattr(self, n), "must be >= 0 (0 = off)")
        _positive_ints(self, "eval", "eval_tokens", "keep_last", "sample_tokens", "log_every")
        _check(not self.wandb_run_name or bool(self.wandb), "eval", "wandb_run_name", self.wandb_run_name,
               "names a W&B run, so it needs --wandb PROJECT too")
        _check(self.wandb == self.wandb.strip() and "/" not in self.wandb, "eval", "wandb", self.wandb,
               "a W&B project name (set the entity with WANDB_ENTITY)")


@dataclass
class RunConfig:
    """Everything a training run needs; saved as config.json and in every checkpoint."""

    preset: str = "gpt2-124m"  # gpt2-124m, gpt2-medium, gpt2-large, gpt2-xl or tiny; other flags apply on top
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check each section again (fields may have been set after construction) and the cross-field rules."""
        for section in (self.model, self.data, self.train, self.eval):
            section.__post_init__()
        _check(self.data.seq_len <= self.model.block_size, "data", "seq_len", self.data.seq_len,
               f"must be <= block_size={self.model.block_size}")
        # A step is total_batch_size / seq_len blocks from the canonical streams; any micro-batch and world size
        # share them out (gpt2stream/data/streams.py).
        T = self.data.seq_len
        _check(self.train.total_batch_size % T == 0, "train", "total_batch_size", self.train.total_batch_size,
               f"must be a multiple of seq_len = {T}")
        blocks = self.train.total_batch_size // T
        _check(not self.data.streams or blocks % self.data.streams == 0, "data", "streams", self.data.streams,
               f"must divide the {blocks} blocks of a step (total_batch_size / seq_len)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Rebuild a saved config; unknown or missing keys mean it was written by an incompatible version."""
        sections = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "eval": EvalConfig}
        try:
            kwargs = {k: sections[k](**d[k]) for k in sections}
            return cls(preset=d.get("preset", "custom"), **kwargs)
        except (KeyError, TypeError) as e:
            raise UserError(f"saved config is not compatible with this version of gpt2stream ({e})") from None


# Presets are overrides on top of the defaults, which are GPT-2 124M on FineWeb-Edu sample-10BT.
#
# The larger GPT-2 shapes are OpenAI's (gpt2-medium/-large/-xl: 354,823,168 / 774,030,080 / 1,557,611,200 parameters
# at vocab 50257). Their optimisation follows the GPT-3 paper (Brown et al. 2020, "Language Models are Few-Shot
# Learners", Table 2.1 and Appendix B) for the nearest size: peak lr and batch in tokens from Table 2.1, warmup over
# the first 375M tokens, cosine decay to 10% of the peak lr. A run is one pass over sample-10BT (10B tokens), as
# for gpt2-124m.
#   gpt2-medium 355M ~ GPT-3 Medium 350M (the same 24 x 1024 shape): lr 3.0e-4, batch 0.5M tokens
#   gpt2-large  774M ~ GPT-3 Large  760M:                            lr 2.5e-4, batch 0.5M tokens
#   gpt2-xl     1.56B ~ GPT-3 XL   1.3B:                             lr 2.0e-4, batch 1M tokens
# The micro-batch (per GPU) fits an 80 GB GPU by gpt2stream/memory.py's estimate with room to spare, in bf16 and
# without activation checkpointing; the start-up log prints the largest one that fits the GPU actually present.
PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-124m": {},
    # warmup 715 = 375M / 2**19 tokens, max_steps 19073 = 10B / 2**19; min_lr = lr / 10
    "gpt2-medium": {"n_layer": 24, "n_head": 16, "n_embd": 1024, "out_dir": "runs/gpt2-medium", "batch_size": 32,
                    "total_batch_size": 2**19, "lr": 3.0e-4, "min_lr": 3.0e-5, "warmup_steps": 715,
                    "max_steps": 19073},
    "gpt2-large": {"n_layer": 36, "n_head": 20, "n_embd": 1280, "out_dir": "runs/gpt2-large", "batch_size": 16,
                   "total_batch_size": 2**19, "lr": 2.5e-4, "min_lr": 2.5e-5, "warmup_steps": 715,
                   "max_steps": 19073},
    # warmup 358 = 375M / 2**20 tokens, max_steps 9536 = 10B / 2**20
    "gpt2-xl": {"n_layer": 48, "n_head": 25, "n_embd": 1600, "out_dir": "runs/gpt2-xl", "batch_size": 8,
                "total_batch_size": 2**20, "lr": 2.0e-4, "min_lr": 2.0e-5, "warmup_steps": 358, "max_steps": 9536},
    # Trains in minutes on a 2-core CPU: for demos, smoke tests and the test suite.
    "tiny": {
        "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128,
        "seq_len": 128, "shuffle_buffer": 1000, "block_buffer": 1024, "num_workers": 1, "val_docs": 200,
        "out_dir": "runs/tiny", "max_steps": 200, "batch_size": 8, "total_batch_size": 2048,
        "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 20, "compile": False,
        "eval_every": 50, "eval_tokens": 16384, "save_every": 100, "sample_every": 100, "sample_tokens": 32,
        "log_every": 10,
    },
}


def preset_config(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    cfg = RunConfig(preset=name)
    table = flag_table(cfg)
    apply_flags({k.replace("_", "-"): v for k, v in copy.deepcopy(PRESETS[name]).items()}, table)
    cfg.validate()
    return cfg


def split_preset(argv: list[str]) -> tuple[str, list[str]]:
    """(preset name, the other flags): presets apply before any other override, wherever --preset stands."""
    preset, rest = take_option(argv, "preset", ": " + ", ".join(PRESETS))
    return preset or "gpt2-124m", rest


def load_config(argv: list[str]) -> RunConfig:
    """The preset named by --preset (default gpt2-124m) with every other flag applied on top, validated."""
    preset, rest = split_preset(argv)
    cfg = preset_config(preset)
    table = flag_table(cfg)
    del table["preset"]
    apply_flags(parse_flags(rest, table, optional_value={"resume": "latest"}), table)
    cfg.validate()
    return cfg
