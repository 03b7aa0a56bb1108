"""The run's config: the schema (documented, validated dataclasses, one per section, and the saved form), and the
one command-line parse that turns a preset plus flags into it.

Every field is a command-line flag (``--max-steps 100``; the flag plumbing is gpt2stream/cli.py). The presets are
data the entry script passes in (``PRESETS`` of the top-level ``config.py``, the file users edit); nothing here reads
a checkpoint (``--resume`` continues from the checkpoint's config: gpt2stream/checkpoint.py, ``assemble_config``).

Example:
    >>> PRESETS = {"gpt2-124m": {}, "small": {"n_layer": 4, "max_steps": 50}}
    >>> cfg = load_config(["--preset", "small", "--max-steps", "10"], PRESETS)
    >>> cfg.train.max_steps, cfg.model.n_layer
    (10, 4)
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpt2stream.cli import apply_flags, flag_table, parse_flags, take_option
from gpt2stream.errors import UserError

# {preset name: {field: value}}, overrides on top of the dataclass defaults (the top-level config.py's PRESETS)
Presets = Mapping[str, Mapping[str, Any]]
DEFAULT_PRESET = "gpt2-124m"


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
    """The GPT-2 network's shape (gpt2stream/model.py builds it); the defaults are GPT-2 small (124M)."""

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

    @property
    def padded_vocab_size(self) -> int:
        """The embedding's rows: vocab_size rounded up to vocab_multiple (50257 -> 50304)."""
        if self.vocab_size is None:
            raise ValueError("model.vocab_size is unset: take it from the tokenizer first (resolve_vocab)")
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m


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
    streams: int = 0  # canonical streams (a divisor of total_batch_size / seq_len); 0 = the largest divisor <= 512
    block_buffer: int = 8192  # packed blocks mixed together, shared out among the streams; 1 = no block shuffle
    txt_docs: str = "file"  # how a local .txt file splits into documents: "file", "paragraph" or "line"
    val_docs: int = 10000  # documents held out for validation (never trained on)
    max_retries: int = 10  # consecutive failed network requests before the stream gives up
    request_timeout: float = 60.0  # seconds before one network request counts as failed
    rate_limit_wait: float = 900.0  # seconds one request may wait out Hub rate limits (429) before the stream gives up
    accept_data_change: bool = False  # --resume although local data files changed since the run started
    # Not a flag: set from --data (a mixture file or DATA@W,...), saved in config.json and every checkpoint.
    # Not a flag: the readers jsonl/txt files were cut into pieces for when the run started (0 = not recorded yet),
    # saved so that a resume cuts the same pieces whatever streams the run then fixed.
    plan_readers: int = field(default=0, metadata={"flag": False})  # data/streams.py PLAN_READERS or --streams
    mixture: list = field(default_factory=list, metadata={"flag": False})  # resolved sources (data/mixture.py); []=one

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
    schedule: str = "cosine"  # "cosine" (warmup + cosine to min_lr), "wsd" (warmup, stable, decay) or "plateau"
    decay_frac: float = 0.2  # wsd: the last this fraction of max_steps decays the lr to min_lr
    decay_shape: str = "1-sqrt"  # wsd: the decay's shape, "linear" or "1-sqrt" (Hagele et al. 2024)
    plateau_factor: float = 0.5  # plateau: multiply lr by this on a plateau
    plateau_patience: int = 3  # plateau: evaluations without improvement before a cut
    plateau_threshold: float = 0.01  # plateau: relative improvement of val loss that counts as progress
    plateau_cooldown: int = 2  # plateau: evaluations to wait after a cut before counting again
    plateau_window: int = 3  # plateau: judge the median of the last this-many val losses, so one spike decides nothing
    optimizer: str = "adamw"  # "adamw", or "muon" (Muon for the blocks' matrices, AdamW for the rest): optim.py
    weight_decay: float = 0.1  # AdamW decay on 2-D weights only
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay (0.95, not 0.999: steadier at large batch, as GPT-3)
    # 3.6e-3: nanochat's matrix_lr 0.02 under Keller Jordan's scale is an update RMS of 0.02 / sqrt(768) = 0.2 x 3.6e-3
    # at width 768 (Moonlight's rule, AdamW's 6e-4, is more cautious; modded-nanogpt's 0.05 is ~9e-3). docs/training.md
    muon_lr: float = 3.6e-3  # muon: peak lr of the blocks' matrices, on match_rms_adamw's scale (AdamW's update RMS)
    muon_momentum: float = 0.95  # muon: momentum (Nesterov), as Keller Jordan's Muon and nanochat
    muon_weight_decay: float = 0.1  # muon: decoupled weight decay of the matrices (Moonlight: AdamW's 0.1)
    muon_qkv: str = "three"  # muon: orthogonalise c_attn as "three" matrices (q, k, v) or as "one"
    grad_clip: float = 1.0  # clip the global grad norm to this; 0 = off
    device: str = "auto"  # "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:N" or "mps"
    dtype: str = "auto"  # autocast dtype: "auto" (bfloat16 on CUDA, float32 elsewhere), "bfloat16", "float32"
    compile: bool | None = None  # torch.compile the model; None = on for CUDA only
    activation_checkpointing: bool = False  # recompute each block in backward: less memory, one more forward
    deterministic: bool = False  # deterministic kernels (cuBLAS, embedding backward, no Inductor autotuning): slower
    grad_reduce: str = "fp32"  # gradient all-reduce precision: "fp32", or "bf16" (DDP's bf16 compression hook)
    # 100 MB, not DDP's 25: a compiled DDP model is split into one subgraph per bucket, and gpt2-xl's 6.2 GB of
    # fp32 gradients make 250 subgraphs at 25 MB (minutes of compilation) but 63 at 100; the price, the last
    # bucket's all-reduce not overlapping the backward, is ~4 ms at 400 Gb/s (docs/gpu.md)
    bucket_mb: int = 100  # DDP gradient bucket size in MB (--bucket-mb)
    resume: str = ""  # "" = new run, "latest" = newest valid checkpoint in out_dir, "auto" = it or a new run, or a file

    def __post_init__(self) -> None:
        _positive_ints(self, "train", "max_steps", "batch_size", "total_batch_size")
        _check(self.lr > 0, "train", "lr", self.lr, "must be > 0")
        _check(0 <= self.min_lr <= self.lr, "train", "min_lr", self.min_lr, f"must be in [0, lr={self.lr}]")
        _check(self.warmup_steps >= 0, "train", "warmup_steps", self.warmup_steps, "must be >= 0")
        _check(self.schedule in ("cosine", "wsd", "plateau"), "train", "schedule", self.schedule,
               "cosine, wsd or plateau")
        _check(0 < self.decay_frac <= 1, "train", "decay_frac", self.decay_frac, "must be in (0, 1]")
        _check(self.decay_shape in ("linear", "1-sqrt"), "train", "decay_shape", self.decay_shape, "linear or 1-sqrt")
        _check(self.optimizer in ("adamw", "muon"), "train", "optimizer", self.optimizer, "adamw or muon")
        _check(self.muon_lr > 0, "train", "muon_lr", self.muon_lr, "must be > 0")
        _check(0 <= self.muon_momentum < 1, "train", "muon_momentum", self.muon_momentum, "must be in [0, 1)")
        _check(self.muon_weight_decay >= 0, "train", "muon_weight_decay", self.muon_weight_decay, "must be >= 0")
        _check(self.muon_qkv in ("one", "three"), "train", "muon_qkv", self.muon_qkv, "one or three")
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
        _check(self.grad_reduce in ("fp32", "bf16"), "train", "grad_reduce", self.grad_reduce, "fp32 or bf16")
        _check(self.bucket_mb >= 1, "train", "bucket_mb", self.bucket_mb, "must be >= 1 (MB)")


@dataclass
class EvalConfig:
    """Validation, sampling, eval tasks (HellaSwag), logging and checkpoint cadence."""

    eval_every: int = 250  # steps between validation-loss evaluations (0 = only at the end)
    eval_tokens: int = 10 * 2**20  # validation tokens per evaluation (fixed set, same for every world size)
    save_every: int = 1000  # steps between checkpoints (a checkpoint is also written at the end and on SIGTERM)
    keep_last: int = 3  # checkpoints kept in out_dir/checkpoints; older ones are deleted
    sample_every: int = 1000  # steps between sample generations printed to the log (0 = never)
    sample_tokens: int = 64  # tokens per sample generation
    evals: str = "hellaswag"  # eval tasks scored every evals_every steps: names in gpt2stream/evals (TASKS), a,b
    evals_every: int = 0  # steps between those evals (0 = never)
    evals_data: str = ""  # local data files, TASK=PATH[,TASK=PATH]; a task not named reads its own (a cached download)
    log_every: int = 1  # steps between log lines
    log_docs: bool = False  # write run_dir/docs/rankNNNNN.jsonl: the documents each rank started, per step
    wandb: str = ""  # Weights & Biases project that mirrors metrics.jsonl (rank 0); "" = off; pip install -e ".[wandb]"
    wandb_run_name: str = ""  # W&B run name; "" = the run directory's name
    tensorboard: bool = False  # also write metrics.jsonl's scalars as TensorBoard event files in the run directory
    plot: bool = True  # redraw loss_plot.png at each evaluation and at the end (false: never; gpt2stream.plot draws it)

    def __post_init__(self) -> None:
        for n in ("eval_every", "save_every", "sample_every", "evals_every"):
            _check(getattr(self, n) >= 0, "eval", n, getattr(self, n), "must be >= 0 (0 = off)")
        _positive_ints(self, "eval", "eval_tokens", "keep_last", "sample_tokens", "log_every")
        names = [n.strip() for n in self.evals.split(",") if n.strip()]
        _check(all(n.isidentifier() for n in names), "eval", "evals", self.evals,
               "task names separated by commas (hellaswag)")
        items = [i for i in self.evals_data.split(",") if i.strip()]
        _check(all("=" in i and i.split("=", 1)[0].strip().isidentifier() for i in items), "eval", "evals_data",
               self.evals_data, "TASK=PATH items separated by commas (hellaswag=val.jsonl)")
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


def resolve_vocab(cfg: RunConfig, n_vocab: int) -> RunConfig:
    """``cfg`` with ``model.vocab_size`` taken from the tokenizer (its ``n_vocab``) when it is unset: the one place
    the vocabulary is resolved, for training and ``--print-config`` alike. A new config; ``cfg`` is not changed.

    >>> resolve_vocab(RunConfig(), 50257).model.vocab_size
    50257
    """
    if cfg.model.vocab_size is not None:
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=n_vocab))


def with_streams(cfg: RunConfig, streams: int, plan_readers: int = 0) -> RunConfig:
    """``cfg`` recording the canonical streams the loader chose (``data.streams`` 0 means "automatic") and the
    readers its pieces were planned for. A new config; ``cfg`` is not changed."""
    data = dataclasses.replace(cfg.data, streams=streams, plan_readers=plan_readers or cfg.data.plan_readers)
    return dataclasses.replace(cfg, data=data)


@dataclass
class Actions:
    """run_train.py's own switches; every other flag is a config field."""

    help: bool = False  # list the flags with their values in the chosen preset and exit
    print_config: bool = False  # print the resolved config as JSON and exit (memory estimate, param groups: stderr)
    memory_table: bool = False  # print the largest micro-batch per preset and GPU size (markdown) and exit
    plan: bool = False  # print what the run will read, ask the Hub, save and hold; no training (exit 2: can't work)
    nproc: int = 1  # with --plan: processes (GPUs) per node to plan for
    nnodes: int = 1  # with --plan: nodes to plan for


def preset_config(name: str, presets: Presets) -> RunConfig:
    """The preset ``name``'s overrides applied on the defaults, validated."""
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(presets)}")
    cfg = RunConfig(preset=name)
    apply_flags({k.replace("_", "-"): v for k, v in copy.deepcopy(dict(presets[name])).items()}, flag_table(cfg))
    cfg.validate()
    return cfg


def preset_shapes(presets: Presets) -> dict[str, tuple[ModelConfig, int]]:
    """{preset: (its model shape, its vocabulary size)}, for the memory table (gpt2stream/memory.py)."""
    out = {}
    for name in presets:
        m = preset_config(name, presets).model
        out[name] = (m, m.vocab_size or 50257)  # presets train GPT-2's tokenizer: 50257 tokens
    return out


def split_preset(argv: list[str], presets: Presets) -> tuple[str, list[str]]:
    """(preset name, the other flags): presets apply before any other override, wherever --preset stands."""
    preset, rest = take_option(argv, "preset", ": " + ", ".join(presets))
    return preset or DEFAULT_PRESET, rest


def parse_argv(argv: list[str], presets: Presets, options: Any = None) -> tuple[RunConfig, dict[str, Any]]:
    """The command line, parsed once: (the preset's config, {flag: typed value} for every other flag given).

    ``options``, a dataclass of an entry point's own switches (``Actions``), gets its flags set and they are left
    out of the dict. A bad flag raises UserError before anything is read.
    """
    preset, rest = split_preset(argv, presets)
    base = preset_config(preset, presets)
    table = flag_table(base, *([options] if options is not None else []))
    del table["preset"]
    flags = parse_flags(rest, table, optional_value={"resume": "latest"})
    own = {k: v for k, v in flags.items() if table[k][0] is options}
    apply_flags(own, table)
    return base, {k: v for k, v in flags.items() if k not in own}


def with_flags(cfg: RunConfig, flags: dict[str, Any]) -> RunConfig:
    """``cfg`` with the parsed ``flags`` applied, validated."""
    apply_flags(flags, flag_table(cfg))
    cfg.validate()
    return cfg


def load_config(argv: list[str], presets: Presets) -> RunConfig:
    """The preset named by --preset (default gpt2-124m) with every other flag applied on top, validated.
    ``--resume`` is only recorded here; ``checkpoint.assemble_config`` continues from the checkpoint's config."""
    return with_flags(*parse_argv(argv, presets))
