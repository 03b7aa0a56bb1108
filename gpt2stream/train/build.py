"""Building a run: the tokenizer and settings checks, the model, optimizer, schedule, loader and validation batches
(``build_parts``, each rank by itself), the restore from a checkpoint, and the DDP wrap (a collective).

Nothing here writes to the run directory: that happens once everything is built and restored (``open_run_dir``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gpt2stream import distributed as D
from gpt2stream.checkpoint import check_compatible, restore_parts
from gpt2stream.config import ModelConfig, RunConfig, resolve_vocab, with_streams
from gpt2stream.data.mixsource import MixtureSource
from gpt2stream.data.sources import Source
from gpt2stream.errors import UserError
from gpt2stream.loading import gpt_from_config
from gpt2stream.metrics import MetricsLog
from gpt2stream.model import GPT
from gpt2stream.optim import build_optimizer, load_state
from gpt2stream.precision import autocast_dtype
from gpt2stream.schedules import LRSchedule, make_schedule
from gpt2stream.tracking import Trackers
from gpt2stream.train.state import LoaderPosition, Progress, RNGState
from tokenizer import Tokenizer


@dataclass
class Parts:
    """Everything a run is made of once built. ``model`` is the plain module (state_dict without _orig_mod./module.
    prefixes, generation); ``fwd_model`` the (compiled) one for training and eval forwards; ``ddp_model`` the one
    the step runs (DDP-wrapped under torchrun)."""

    cfg: RunConfig  # resolved: vocab_size from the tokenizer, streams as the loader chose them
    info: D.DistInfo
    tok: Tokenizer
    tok_spec: str
    model: GPT
    fwd_model: Any  # the model, or torch.compile's wrapper of it (what forward passes outside DDP call)
    ddp_model: Any  # fwd_model, or under DDP its wrapper (compiled when fwd_model is): what training steps call
    optimizer: Any  # a torch optimizer, or optim.Chained (gpt2stream/optim.py builds it)
    schedule: LRSchedule
    loader: Any
    position: LoaderPosition
    val: list | dict[str, list]  # this rank's validation batches; a mixture's by source name (data/mixval.py)
    accum: int  # micro-steps every rank runs per step (the busiest rank's; others pad with weight-0 ones)
    amp: torch.dtype | None
    compile: bool
    progress: Progress = field(default_factory=Progress)
    metrics: MetricsLog = field(default_factory=lambda: MetricsLog(None))
    rng: RNGState | None = None
    evals: dict[str, list] = field(default_factory=dict)  # {task: its examples}, the evals due every evals_every
    trackers: Trackers = field(default_factory=Trackers)  # W&B / TensorBoard: rank 0 opens them (main.py)
    notes: list[str] = field(default_factory=list)  # what the restore wants said in the log (a changed schedule)

    def __post_init__(self) -> None:
        self.metrics.mirror = self.trackers  # every metrics.jsonl record goes to them too

    @property
    def shared(self) -> dict[str, Any]:
        """The checkpoint parts kept once (rank 0's copy)."""
        return {"model": self.model, "optimizer": self.optimizer, "schedule": self.schedule, "metrics": self.metrics,
                "trackers": self.trackers}

    @property
    def mine(self) -> dict[str, Any]:
        """This rank's own checkpoint parts."""
        return {"loader": self.position, "rng": self.rng}


def tokenizer_spec(spec: str) -> str:
    """"gpt2", or the absolute path of a tokenizer.json (what checkpoints record)."""
    return spec if spec == "gpt2" else str(Path(spec).resolve())


def check_settings(cfg: RunConfig, tok: Tokenizer) -> None:
    """The settings only a built tokenizer (or the combination of fields) can judge."""
    if cfg.model.vocab_size != tok.n_vocab:
        raise UserError(f"--vocab-size {cfg.model.vocab_size} does not match the tokenizer ({tok.n_vocab} tokens); "
                        f"leave vocab_size unset so it is taken from the tokenizer")
    from gpt2stream.data.mixval import has_validation

    if cfg.train.schedule == "plateau" and not (has_validation(cfg.data) and cfg.eval.eval_every):
        raise UserError("--schedule plateau judges the validation loss: it needs --val-docs > 0 and "
                        "--eval-every > 0 (or use --schedule cosine)")


def build_model(m: ModelConfig, seed: int) -> GPT:
    """The GPT of a ModelConfig, initialised from ``seed`` (identical on every rank)."""
    torch.manual_seed(seed)
    return gpt_from_config(m)


def configure_kernels(device: torch.device, deterministic: bool) -> None:
    """TF32 for the fp32 matmuls that remain under autocast; with ``deterministic``, kernels that give the same bits
    on every run: deterministic algorithms (an op without one warns instead of stopping the run), cuBLAS's fixed
    workspace, cuDNN without benchmarking and Inductor without on-device autotuning."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    if not deterministic:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before the first matmul
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    import torch._inductor.config as inductor_config

    inductor_config.deterministic = True


def make_loader(cfg: RunConfig, info: D.DistInfo, tok: Tokenizer, source: Source | MixtureSource | None
                ) -> tuple[Any, int]:
    """This rank's training loader and the micro-steps of a step. An elastic run fixes its canonical streams at
    the start (``loader.streams``, saved with the run as ``data.streams``): every layout then trains the same global
    batches."""
    t = cfg.train
    from gpt2stream.data import TrainLoader
    from gpt2stream.data.streams import accum_steps

    loader = TrainLoader(cfg.data, batch_size=t.batch_size, tokenizer=tok, rank=info.rank,
                         world_size=info.world_size, seed=t.seed, total_batch_size=t.total_batch_size,
                         pin_memory=info.device.type == "cuda", source=source)
    return loader, accum_steps(loader.streams, loader.k, info.world_size, t.batch_size)


def make_val(cfg: RunConfig, info: D.DistInfo, tok: Tokenizer, source: Any) -> list | dict[str, list]:
    """This rank's validation batches: a list for one source, {name: batches} for a mixture (data/mixval.py)."""
    from gpt2stream.data import val_batches
    from gpt2stream.data.mixval import mixture_val_batches

    make = mixture_val_batches if cfg.data.mixture else val_batches
    return make(cfg.data, batch_size=cfg.train.batch_size, tokenizer=tok, rank=info.rank,
                world_size=info.world_size, num_tokens=cfg.eval.eval_tokens, source=source)


def build_parts(cfg: RunConfig, info: D.DistInfo, resume: tuple[Path, dict] | None,
                source: Source | MixtureSource | None = None) -> Parts:
    """Everything one rank builds by itself (no collective, nothing written), checked against ``resume``'s
    checkpoint before anything large is built. ``source``: the job's opened data (open_data_for_job; None = the
    loader opens it); training and validation share the loader's. ``Parts.cfg`` is ``cfg`` resolved (vocab_size,
    streams); ``cfg`` is not changed."""
    from gpt2stream.data.job import check_pinned_revision
    from gpt2stream.data.loader import check_resumable
    from tokenizer import load_tokenizer

    tok = load_tokenizer(cfg.data.tokenizer)
    cfg = resolve_vocab(cfg, tok.n_vocab)
    if resume is not None:
        check_compatible(resume[0], resume[1], cfg, tok.identity)
        check_resumable(resume[0], [r["loader"] for r in resume[1]["ranks"]])
        if source is not None:
            check_pinned_revision(resume[1]["config"], source, resume[0])
    check_settings(cfg, tok)
    t, dev = cfg.train, info.device
    configure_kernels(dev, t.deterministic)
    model = build_model(cfg.model, t.seed).to(dev)
    model.activation_checkpointing = t.activation_checkpointing
    use_compile = t.compile if t.compile is not None else dev.type == "cuda"
    fwd = torch.compile(model) if use_compile else model
    optimizer = build_optimizer(model, t, dev.type)
    loader, accum = make_loader(cfg, info, tok, source)
    cfg = with_streams(cfg, loader.streams, loader.plan_readers)
    torch.manual_seed(t.seed + 1000 * info.rank)  # dropout masks differ across ranks (a resume restores its own)
    val = make_val(cfg, info, tok, loader.source)
    return Parts(cfg=cfg, info=info, tok=tok, tok_spec=tokenizer_spec(cfg.data.tokenizer), model=model,
                 fwd_model=fwd, ddp_model=fwd, optimizer=optimizer, schedule=make_schedule(t), loader=loader,
                 position=LoaderPosition(loader), val=val, accum=accum, amp=autocast_dtype(t.dtype, dev),
                 compile=use_compile, rng=RNGState(dev))


def restore(parts: Parts, state: dict) -> None:
    """Load every saved part; the flags given on resume win over the optimizer's saved hyperparameters (the lr is
    set per step; optim.load_state). An elastic loader continues from every rank's saved streams merged (any
    layout); a rank the checkpoint did not have draws its RNG from its own seed. A new --max-steps leaves a note
    of what the schedule does (``parts.notes``)."""
    from gpt2stream.data.loader import merge_states

    info, ranks = parts.info, state["ranks"]
    restore_parts(state, {k: v for k, v in parts.shared.items() if k != "optimizer"}, {}, info.rank)
    load_state(parts.optimizer, state["optimizer"])  # the flags' hyperparameters win over the saved ones
    parts.progress.load_state_dict(state)
    parts.position.load_state_dict(merge_states([r["loader"] for r in ranks]))
    if info.rank < len(ranks):
        assert parts.rng is not None  # build_parts made it
        parts.rng.load_state_dict(ranks[info.rank]["rng"])
    else:
        torch.manual_seed(parts.cfg.train.seed + 1000 * info.rank + parts.progress.step)
    note = parts.schedule.resumed_at(parts.progress.step)  # a new --max-steps: what happens to the lr
    if note:
        parts.notes.append(note)


def _bf16_compress_gloo(state, bucket):
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import _compress_hook

    return _compress_hook(torch.bfloat16, state, bucket)


def bf16_hook(backend: str):
    """DDP's bf16 compression hook. DDP accepts ``bf16_compress_hook`` itself only on NCCL; on gloo (CPU) the same
    function body (torch's ``_compress_hook`` in bf16) under another name."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import bf16_compress_hook

    return bf16_compress_hook if backend == "nccl" else _bf16_compress_gloo


def wrap_ddp(parts: Parts, always: bool = False) -> None:
    """Collective: DDP broadcasts rank 0's weights. The DDP-wrapped module is what gets compiled, so Dynamo splits
    the graph at the gradient buckets (``--bucket-mb``) and each bucket's all-reduce overlaps the rest of the
    backward; gradients are views into the buckets (no copy; train/step.py zeroes them in place). ``--grad-reduce
    bf16`` all-reduces the buckets in bf16 (half the bytes; the sum is cast back into the fp32 buckets).
    Evaluation keeps the plain compiled module (no collective in its forward). ``always``: wrap a single process
    too (bench/gpu_check.py checks the compiled wrapper on one GPU)."""
    if parts.info.ddp or always:
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev, t = parts.info.device, parts.cfg.train
        ddp = DDP(parts.model, device_ids=[dev.index] if dev.type == "cuda" else None, gradient_as_bucket_view=True,
                  bucket_cap_mb=t.bucket_mb)
        if t.grad_reduce == "bf16":
            ddp.register_comm_hook(None, bf16_hook(parts.info.backend))
        parts.ddp_model = torch.compile(ddp) if parts.compile else ddp


def open_run_dir(parts: Parts) -> Path:
    """Rank 0: the run directory with config.json, the tokenizer copy and metrics.jsonl rewritten from the
    (restored) history. Returns the directory."""
    out = Path(parts.cfg.train.out_dir)
    if parts.info.master:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(parts.cfg.to_json())
        from gpt2stream.data.job import write_manifest

        write_manifest(parts.loader.source, parts.cfg.data, out)  # the pinned revision, files and footers
        if parts.tok_spec != "gpt2":
            shutil.copyfile(parts.tok_spec, out / "tokenizer.json")
        parts.metrics.attach(out / "metrics.jsonl")
    return out
