"""Peak GPU memory of one training process, from the shapes alone: know before you OOM.

``estimate_memory`` is pure arithmetic on the model shape, micro-batch and sequence length. It counts what the
training step (``gpt2stream/train/step.py``) keeps alive at its peak, the start of the backward pass of a micro-step
(eager PyTorch; ``torch.compile`` fuses and recomputes, so it usually needs less):

    weights        fp32 parameters, 4 B each (the tied embedding/LM head once)
    weight copies  bf16 casts of every matmul weight that autocast keeps for backward, 2 B each (with activation
                   checkpointing only the LM head's: the blocks recast theirs when they are recomputed)
    gradients      fp32, 4 B per parameter (alive from the second micro-step of gradient accumulation on; under
                   DDP always: they live in its buckets)
    optimizer      its state (gpt2stream/optim.py's state_bytes): AdamW's exp_avg + exp_avg_sq, 8 B per parameter;
                   with --optimizer muon 4 B (one momentum buffer) per parameter of the blocks' matrices, AdamW's 8 B
                   for the rest. Muon's Newton-Schulz temporaries (bf16, a few of the largest matrix) live only in
                   optimizer.step(), after backward has freed the activations: never the peak
    DDP buckets    the reducer's flat fp32 gradient buffers: none extra with ``gradient_as_bucket_view`` (how
                   train/build.py wraps the model: the gradients are views into the buckets), else 4 B per parameter
    activations    what autograd saves per block for backward, per token (C = width; bf16 autocast / fp32):
                   LayerNorm inputs (fp32 residual) 4C + 4C and their mean/rstd 16 B, c_attn input 2C / 4C,
                   q|k|v 6C / 12C, attention output 2C / 4C (SDPA's and c_proj's input: flash attention returns it
                   in (B, T, heads, head size) layout, so the transpose back costs no copy), c_fc input 2C / 4C,
                   GELU input 8C / 16C, GELU output 8C / 16C  =  36C / 64C, plus SDPA's log-sum-exp (4 B per head)
                   and 1 B per dropout mask when dropout > 0. Checkpointing keeps only each block's input (4C) and
                   recomputes one block at a time. After the last block: ln_f input 4C + 8 B and the LM head input
                   2C / 4C.
    logits         per token, over the padded vocabulary Vp: the LM head output (2 / 4 B), the fp32 log-softmax
                   that cross_entropy.py saves and turns into the gradient in place (4 B), and under bf16 the
                   gradient's cast back to bf16 (4 B in flight); the step keeps no logits (``model(x, y)``)

The formula was checked against ``torch.distributed._tools.MemTracker`` on CPU (tests/test_memory.py); on a GPU
it is not yet measured against ``torch.cuda.max_memory_allocated()``. ``usable_bytes`` leaves room for what the
estimate does not see (CUDA context, cuBLAS/NCCL workspaces, allocator fragmentation).

    python run_train.py --memory-table      # the README's table: largest micro-batch per preset and GPU size
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Protocol

from gpt2stream.config import RunConfig

GiB = 2**30
# Headroom the estimate cannot see: a fraction for allocator fragmentation plus a fixed part for the CUDA context
# and kernel workspaces (neither shows in torch.cuda.max_memory_allocated)
USABLE_FRACTION = 0.9
RESERVED_BYTES = 1 * GiB


class ModelShape(Protocol):
    """What the estimate needs of a model shape (gpt2stream.config.ModelConfig has it)."""

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocab_multiple: int
    dropout: float


def padded_vocab(vocab_size: int, multiple: int) -> int:
    """``vocab_size`` rounded up to a multiple of ``multiple``.

    >>> padded_vocab(50257, 64)
    50304
    """
    return (vocab_size + multiple - 1) // multiple * multiple


def param_count(n_layer: int, n_embd: int, block_size: int, vocab_rows: int) -> int:
    """Distinct parameters of GPT-2 (tied LM head counted once): embeddings, 12C^2 + 13C per block, final LayerNorm.

    >>> param_count(12, 768, 1024, 50257)  # OpenAI's GPT-2 small
    124439808
    """
    C = n_embd
    return vocab_rows * C + block_size * C + n_layer * (12 * C * C + 13 * C) + 2 * C


def matmul_param_count(n_layer: int, n_embd: int, vocab_rows: int) -> int:
    """Parameters autocast casts to bf16: every nn.Linear's weight and bias (the LM head is the token embedding)."""
    C = n_embd
    return n_layer * (12 * C * C + 9 * C) + vocab_rows * C


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per process at the peak of a training step, by what holds them."""

    weights: int
    weight_copies: int
    gradients: int
    optimizer: int
    ddp_buckets: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def rows(self) -> list[tuple[str, int]]:
        names = {"weights": "weights", "weight_copies": "bf16 weight copies", "gradients": "gradients",
                 "optimizer": "optimizer state", "ddp_buckets": "DDP buckets", "activations": "activations",
                 "logits": "logits"}
        return [(names[f.name], getattr(self, f.name)) for f in fields(self)]


def estimate_memory(model: ModelShape, vocab_size: int, batch_size: int, seq_len: int, *, bf16: bool = True,
                    activation_checkpointing: bool = False, ddp: bool = False,
                    gradient_as_bucket_view: bool = True, optimizer: str = "adamw") -> MemoryEstimate:
    """Peak memory of one process training ``model`` at micro-batch ``batch_size`` x ``seq_len`` tokens.

    ``bf16``: under bf16 autocast (the CUDA default) rather than plain fp32. ``ddp``: several processes; DDP's
    buckets cost extra only without ``gradient_as_bucket_view``. ``optimizer``: "adamw" or "muon" (its state).
    See the module docstring for each term.
    """
    if batch_size < 1 or seq_len < 1 or vocab_size < 1:
        raise ValueError(f"batch_size={batch_size}, seq_len={seq_len}, vocab_size={vocab_size}: must be >= 1")
    L, C, H = model.n_layer, model.n_embd, model.n_head
    Vp = padded_vocab(vocab_size, model.vocab_multiple)
    n = param_count(L, C, model.block_size, Vp)
    act = 2 if bf16 else 4  # bytes of an autocast matmul's input/output
    tokens = batch_size * seq_len
    dropout_masks = 2 if model.dropout > 0 else 0  # bool masks after attention and MLP
    per_block = (4 + 4 + act + 3 * act + act + act + 4 * act + 4 * act) * C + 16 + 4 * H + dropout_masks * C
    after_blocks = (4 + act) * C + 8 + (C if model.dropout > 0 else 0)  # ln_f input, LM head input, embedding mask
    if activation_checkpointing:
        per_token_acts = L * 4 * C + per_block + after_blocks
        copies = Vp * C  # the LM head's; blocks recast in their recomputation
    else:
        per_token_acts = L * per_block + after_blocks
        copies = matmul_param_count(L, C, Vp)
    return MemoryEstimate(
        weights=4 * n,
        weight_copies=2 * copies if bf16 else 0,
        gradients=4 * n,
        optimizer=optimizer_state_bytes(optimizer, n, L, C),
        ddp_buckets=4 * n if ddp and not gradient_as_bucket_view else 0,
        activations=tokens * per_token_acts,
        logits=tokens * (act + 4 + (4 if bf16 else 0)) * Vp,
    )


def optimizer_state_bytes(optimizer: str, n_params: int, n_layer: int, n_embd: int) -> int:
    from gpt2stream.optim import state_bytes  # here: importing torch is not needed for the rest of this module

    return state_bytes(optimizer, n_params, n_layer, n_embd)


def usable_bytes(gpu_bytes: int) -> int:
    """What the estimate may fill on a GPU with ``gpu_bytes`` of memory."""
    return int(gpu_bytes * USABLE_FRACTION) - RESERVED_BYTES


def largest_micro_batch(model: ModelShape, vocab_size: int, seq_len: int, gpu_bytes: int, **kw: Any) -> int:
    """The largest micro-batch whose estimate fits ``usable_bytes(gpu_bytes)``; 0 if not even one sequence fits."""
    one = estimate_memory(model, vocab_size, 1, seq_len, **kw).total
    per_seq = estimate_memory(model, vocab_size, 2, seq_len, **kw).total - one
    room = usable_bytes(gpu_bytes) - (one - per_seq)
    return max(0, room // per_seq)


def largest_dividing(limit: int, total_batch_size: int, seq_len: int, world_size: int) -> int:
    """The largest micro-batch <= limit that --total-batch-size is a multiple of (times seq_len x processes); 0 if
    none.

    >>> largest_dividing(23, 524288, 1024, 1)
    16
    """
    for b in range(limit, 0, -1):
        if total_batch_size % (b * seq_len * world_size) == 0:
            return b
    return 0


def gib(n: int) -> str:
    return f"{n / GiB:.2f}"


def format_estimate(est: MemoryEstimate, batch_size: int, seq_len: int) -> str:
    """One line: each term and the total, in GiB."""
    parts = " + ".join(f"{name} {gib(b)}" for name, b in est.rows() if b)
    return f"memory estimate per process at micro-batch {batch_size} x {seq_len}: {parts} = {gib(est.total)} GiB"


def fit_line(model: ModelShape, vocab_size: int, batch_size: int, seq_len: int, total_batch_size: int,
             world_size: int, gpu_name: str, gpu_bytes: int, **kw: Any) -> str:
    """Whether the chosen micro-batch fits the visible GPU and the largest one that would."""
    best = largest_micro_batch(model, vocab_size, seq_len, gpu_bytes, **kw)
    need = estimate_memory(model, vocab_size, batch_size, seq_len, **kw).total
    verdict = "fits" if need <= usable_bytes(gpu_bytes) else "does NOT fit"
    line = (f"GPU {gpu_name} ({gib(gpu_bytes)} GiB, {gib(usable_bytes(gpu_bytes))} usable): --batch-size "
            f"{batch_size} {verdict}; largest micro-batch that fits: {best}")
    if best:
        div = largest_dividing(best, total_batch_size, seq_len, world_size)
        line += f" (largest that divides --total-batch-size {total_batch_size}: {div or 'none'})"
    else:
        line += "; try --activation-checkpointing, a shorter --seq-len, or more GPUs"
    return line


def startup_lines(cfg: RunConfig, world_size: int, bf16: bool, gpu: tuple[str, int] | None) -> list[str]:
    """What training prints at start-up (and --print-config on stderr): the estimate for the run's settings and,
    with a GPU, whether the micro-batch fits and the largest that would."""
    m, d, t = cfg.model, cfg.data, cfg.train
    vocab = m.vocab_size or 50257
    kw: dict[str, Any] = dict(bf16=bf16, activation_checkpointing=t.activation_checkpointing,
                              ddp=world_size > 1, optimizer=t.optimizer)
    est = estimate_memory(m, vocab, t.batch_size, d.seq_len, **kw)
    ddp = "; DDP's buckets hold the gradients" if world_size > 1 else ""
    lines = [format_estimate(est, t.batch_size, d.seq_len) + f" ({'bf16' if bf16 else 'fp32'}, eager upper bound{ddp})"]
    if gpu is not None:
        lines.append(fit_line(m, vocab, t.batch_size, d.seq_len, t.total_batch_size, world_size, *gpu, **kw))
    return lines


def visible_gpu(device: Any) -> tuple[str, int] | None:
    """(name, total bytes) of ``device`` when it is a CUDA GPU, else None."""
    if getattr(device, "type", None) != "cuda":
        return None
    import torch

    props = torch.cuda.get_device_properties(device)
    return props.name, int(props.total_memory)


# ---- the README table ----------------------------------------------------------------------------------------

GPU_SIZES_GB = (24, 40, 80)


def table_markdown(presets: dict[str, tuple[ModelShape, int]], seq_len: int = 1024) -> str:
    """Largest micro-batch per preset and GPU size (bf16 autocast; the same for one process and under DDP, whose
    buckets hold the gradients), without / with activation checkpointing."""
    head = ["preset", "params", "fixed (GiB)", "per sequence (GiB)"] + [f"{g} GB" for g in GPU_SIZES_GB]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, (model, vocab) in presets.items():
        seq = min(seq_len, model.block_size)
        n = param_count(model.n_layer, model.n_embd, model.block_size, padded_vocab(vocab, model.vocab_multiple))
        one = estimate_memory(model, vocab, 1, seq).total
        per = estimate_memory(model, vocab, 2, seq).total - one
        one_ac = estimate_memory(model, vocab, 1, seq, activation_checkpointing=True).total
        per_ac = estimate_memory(model, vocab, 2, seq, activation_checkpointing=True).total - one_ac
        note = f" ({seq} tokens)" if seq != seq_len else ""
        cells = [name, f"{n / 1e6:,.0f}M", f"{gib(one - per)}", f"{gib(per)} / {gib(per_ac)}{note}"]
        for g in GPU_SIZES_GB:
            plain = largest_micro_batch(model, vocab, seq, g * GiB)
            ac = largest_micro_batch(model, vocab, seq, g * GiB, activation_checkpointing=True)
            cells.append(f"{plain or '-'} / {ac or '-'}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_report(shapes: dict[str, tuple[ModelShape, int]]) -> str:
    """The README's table with its caption, for ``{name: (model shape, vocabulary size)}`` (config.preset_shapes)."""
    caption = (f"Largest micro-batch per GPU (sequences of 1024 tokens, bf16 autocast, one process or DDP) without / "
               f"with --activation-checkpointing; '-' = not even one fits. A GPU of N GB counts as N GiB, of which "
               f"{USABLE_FRACTION:.0%} minus {RESERVED_BYTES // GiB} GiB is usable.\n")
    return caption + "\n" + table_markdown(shapes)
