"""The training loop: DDP, gradient accumulation, bf16 autocast, schedules, evaluation, checkpoints, exact resume.

``train(cfg)`` is what ``run_train.py`` calls, in one process or under torchrun. It returns the exit code:

    0    finished (or nothing to do)
    2    bad input (config, data, incompatible checkpoint...): ``error: ...`` on stderr
    3    the data stream failed for good: a checkpoint was saved, the message says how to resume
    4    the loss became NaN/inf: stopped without saving; the last good checkpoint is kept
    5    a checkpoint could not be written (disk full?): the previous checkpoint is intact
    130  / 143  stopped by SIGINT / SIGTERM after saving a checkpoint
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from gpt2stream import distributed as D
from gpt2stream.checkpoint import (
    capture_rng,
    find_latest,
    has_checkpoints,
    resolve_checkpoint,
    restore_rng,
    save_checkpoint,
)
from gpt2stream.errors import DataStreamError, UserError
from gpt2stream.metrics import MetricsLog, peak_flops, run_info
from gpt2stream.schedules import PlateauSchedule, cosine_lr

EXIT_OK, EXIT_USER, EXIT_DATA, EXIT_NAN, EXIT_SAVE = 0, 2, 3, 4, 5
# Fields that must match the checkpoint: they change the shapes of the saved tensors or what the token ids mean.
_SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "vocab_multiple")


# ---- small pure helpers ------------------------------------------------------------------------------------------

def grad_accum_steps(total_batch_size: int, batch_size: int, seq_len: int, world_size: int) -> int:
    """Micro-steps per optimizer step so that one step sees total_batch_size tokens."""
    per = batch_size * seq_len * world_size
    if total_batch_size % per:
        raise UserError(
            f"--total-batch-size {total_batch_size} is not divisible by batch_size x seq_len x processes = "
            f"{batch_size} x {seq_len} x {world_size} = {per}; use a multiple of {per} or change --batch-size")
    return total_batch_size // per


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """None = plain fp32. 'auto' is bf16 on CUDA only (CPU bf16 is opt-in: its speed depends on the CPU)."""
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def collective_timeout(data_cfg: Any) -> float:
    """Seconds a collective may wait for the slowest rank. NCCL's default (10 min) is shorter than a data stream may
    legitimately retry (and than the DataLoader's stall watchdog): the ranks waiting in the step's agreement were
    killed by the NCCL watchdog before the stalled rank could report, so nothing was saved. Above the data budget,
    plus time for rank 0 to write a large checkpoint while the others wait."""
    from gpt2stream.data.loader import stall_timeout

    return stall_timeout(data_cfg) + 900.0


def reduce_dtype(device: torch.device) -> torch.dtype:
    """Accumulator dtype for sums reduced across ranks: float64, except on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def incompatible_fields(saved: Any, now: Any, saved_tok: str, now_tok: str) -> list[str]:
    """'field: checkpoint X, now Y' for every setting that makes a checkpoint unusable for this run."""
    diff = [f"{f}: checkpoint {getattr(saved.model, f)}, now {getattr(now.model, f)}" for f in _SHAPE_FIELDS
            if getattr(saved.model, f) != getattr(now.model, f)]
    if saved.data.seq_len != now.data.seq_len:
        diff.append(f"seq_len: checkpoint {saved.data.seq_len}, now {now.data.seq_len}")
    if saved_tok != now_tok:
        diff.append(f"tokenizer: checkpoint {saved_tok}, now {now_tok}")
    return diff


def format_eta(seconds: float) -> str:
    """>>> format_eta(3725.2)
    '1:02:05'
    """
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ---- configuration on resume -------------------------------------------------------------------------------------

def wants_resume(argv: list[str]) -> bool:
    return any(a == "--resume" or (a.startswith("--resume=") and a != "--resume=") for a in argv)


def config_for_resume(argv: list[str], warn=None) -> Any:
    """The config to continue a run with: the checkpoint's own config, with the flags given explicitly on this command
    line applied on top (so ``--resume --max-steps 5000`` extends a run and nothing else needs repeating).

    The checkpoint is the newest valid one in --out-dir (default: the preset's out_dir) for ``--resume``, or the
    one named by ``--resume PATH``; then the run directory is --out-dir if given, else the checkpoint's. The returned
    config names that exact checkpoint in ``train.resume``.
    """
    from config import RunConfig, preset_config, split_preset
    from gpt2stream.cli import apply_flags, flag_table, parse_flags

    preset, rest = split_preset(argv)
    base = preset_config(preset)
    flags = parse_flags(rest, flag_table(base), optional_value={"resume": "latest"})
    target = flags.get("resume", "")
    if not target:  # --resume "" means a fresh run
        from config import load_config

        return load_config(argv)
    if target == "latest":
        out_dir = flags.get("out-dir", base.train.out_dir)
        got = find_latest(out_dir, warn=warn, mmap=True)
        if got is None:
            raise UserError(f"--resume: no checkpoint in {Path(out_dir) / 'checkpoints'}; check --out-dir "
                            f"(default for --preset {preset}: {base.train.out_dir}), or drop --resume to start anew")
        path, state = got
    else:
        path, state = resolve_checkpoint(target, warn=warn, mmap=True)
        out_dir = flags.get("out-dir", str(path.parent.parent))
    cfg = RunConfig.from_dict(state["config"])
    # shape flags are applied too, so that a conflicting one is reported by name (incompatible_fields), not ignored
    apply_flags({**flags, "out-dir": out_dir, "resume": str(path)}, flag_table(cfg))
    cfg.validate()
    return cfg


# ---- the trainer -------------------------------------------------------------------------------------------------

class _Stop(Exception):
    """Leave the loop with an exit code (after whatever saving the reason calls for)."""

    def __init__(self, code: int) -> None:
        self.code = code


class Trainer:
    def __init__(self, cfg: Any, info: D.DistInfo) -> None:
        self.info = info
        self.cfg = cfg
        self.stops = D.StopSignals(announce=info.master)
        self.log_file = None

    # -- output --------------------------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.info.master:
            print(msg, flush=True)
            if self.log_file is not None:
                self.log_file.write(msg + "\n")
                self.log_file.flush()

    def warn(self, msg: str) -> None:
        if self.info.master:
            print(f"warning: {msg}", file=sys.stderr, flush=True)

    # -- setup ---------------------------------------------------------------------------------------------------
    def agree_errors(self, err: UserError | None) -> None:
        """Collective: if any rank failed (``err``), every rank stops with EXIT_USER; the lowest failing rank says
        why (a UserError on a rank other than 0 was otherwise never printed, and the ranks that had not failed
        went on into the next collective while the failed one waited in another)."""
        info = self.info
        if not info.ddp:
            if err is not None:
                raise err
            return
        worst = self.agree(float(info.world_size - info.rank) if err is not None else 0.0)[0]
        if not worst:
            return
        if err is not None and info.rank == info.world_size - int(worst):
            if info.master:
                raise err  # train() prints it
            print(f"error: [rank {info.rank}] {err}", file=sys.stderr, flush=True)
        raise _Stop(EXIT_USER)

    def setup(self) -> None:
        err = None
        try:
            self._setup_local()
        except UserError as e:  # decided collectively: a bad setting usually fails on every rank, data on one
            err = e
        self.agree_errors(err)
        self._setup_shared()

    def _setup_local(self) -> None:
        """Everything one rank does by itself: config checks, model, optimizer, data, validation batches."""
        from gpt2stream.data import TrainLoader, val_batches
        from gpt2stream.model import GPT, GPTConfig
        from tokenizer import load_tokenizer

        info, cfg = self.info, self.cfg
        state = None
        if cfg.train.resume == "latest":
            got = find_latest(cfg.train.out_dir, warn=self.warn)
            if got is None:
                raise UserError(f"--resume: no checkpoint in {Path(cfg.train.out_dir) / 'checkpoints'}")
            ckpt_path, state = got
        elif cfg.train.resume:
            ckpt_path, state = resolve_checkpoint(cfg.train.resume, warn=self.warn)
        self.out = Path(cfg.train.out_dir)
        if state is None and has_checkpoints(self.out):
            raise UserError(f"{self.out} already has checkpoints; continue it with --resume, or choose a new --out-dir")
        tok = load_tokenizer(cfg.data.tokenizer)
        self.tok = tok
        tok_spec = cfg.data.tokenizer if cfg.data.tokenizer == "gpt2" else str(Path(cfg.data.tokenizer).resolve())
        self.tok_spec = tok_spec
        if cfg.model.vocab_size is None:
            cfg.model.vocab_size = tok.n_vocab
        if state is not None:
            from config import RunConfig

            saved = RunConfig.from_dict(state["config"])
            diff = incompatible_fields(saved, cfg, state.get("tokenizer_identity", "?"), tok.identity)
            if diff:
                raise UserError(f"cannot resume from {ckpt_path}: the run's settings differ ({'; '.join(diff)}); "
                                f"resume with the checkpoint's settings or start a new run with another --out-dir")
            if state["world_size"] != info.world_size:
                raise UserError(f"cannot resume from {ckpt_path} exactly: it was written by {state['world_size']} "
                                f"process(es), this run has {info.world_size}; use torchrun --nproc_per_node="
                                f"{state['world_size']} (or the same total over nodes)")
        if cfg.model.vocab_size != tok.n_vocab:
            raise UserError(f"--vocab-size {cfg.model.vocab_size} does not match the tokenizer ({tok.n_vocab} tokens); "
                            f"leave vocab_size unset so it is taken from the tokenizer")
        if cfg.train.schedule == "plateau" and not (cfg.data.val_docs and cfg.eval.eval_every):
            raise UserError("--schedule plateau judges the validation loss: it needs --val-docs > 0 and "
                            "--eval-every > 0 (or use --schedule cosine)")
        self.accum = grad_accum_steps(cfg.train.total_batch_size, cfg.train.batch_size, cfg.data.seq_len,
                                      info.world_size)
        dev = info.device
        self.amp = autocast_dtype(cfg.train.dtype, dev)
        self.compile = cfg.train.compile if cfg.train.compile is not None else dev.type == "cuda"
        if dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for the fp32 matmuls that remain under autocast
            torch.backends.cudnn.allow_tf32 = True

        torch.manual_seed(cfg.train.seed)  # identical init on every rank (DDP also broadcasts rank 0's weights)
        m = cfg.model
        model = GPT(GPTConfig(n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd, block_size=m.block_size,
                              vocab_size=m.vocab_size, vocab_multiple=m.vocab_multiple, dropout=m.dropout),
                    activation_checkpointing=cfg.train.activation_checkpointing)
        if state is not None:
            model.load_state_dict(state["model"])
        model.to(dev)
        self.model = model  # the plain module: state_dict (no _orig_mod./module. prefixes), generation
        self.fwd_model = torch.compile(model) if self.compile else model  # training and eval forward
        self.ddp_model = self.fwd_model  # wrapped in DDP by _setup_shared: DDP() itself is a collective
        self.optimizer = model.configure_optimizers(cfg.train.weight_decay, cfg.train.lr,
                                                    (cfg.train.beta1, cfg.train.beta2), dev.type)
        self.plateau = None
        if cfg.train.schedule == "plateau":
            t = cfg.train
            self.plateau = PlateauSchedule(t.lr, t.min_lr, t.plateau_factor, t.plateau_patience,
                                           t.plateau_threshold, t.plateau_cooldown, t.plateau_window, t.warmup_steps)
        self.step = 0
        self.saved_step = -1
        history: list[dict] = []
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            # load_state_dict brings back the saved hyperparameters; flags given on resume win (lr is set per step)
            for g in self.optimizer.param_groups:
                g["betas"] = (cfg.train.beta1, cfg.train.beta2)
                g["weight_decay"] = cfg.train.weight_decay if g["weight_decay"] else 0.0
            if self.plateau is not None and state.get("schedule"):
                self.plateau.load_state_dict(state["schedule"])
            self.step = int(state["step"])
            self.saved_step = self.step
            history = list(state.get("metrics", []))
        self.loader = TrainLoader(cfg.data, batch_size=cfg.train.batch_size, tokenizer=tok, rank=info.rank,
                                  world_size=info.world_size, seed=cfg.train.seed)
        if state is not None:
            self.loader.load_state_dict(state["ranks"][info.rank]["loader"])
            restore_rng(state["ranks"][info.rank]["rng"], dev)
        else:
            torch.manual_seed(cfg.train.seed + 1000 * info.rank)  # dropout masks differ across ranks
        self.loader_state = self.loader.state_dict()  # the state after the last *completed* step's batches
        self.val = val_batches(cfg.data, batch_size=cfg.train.batch_size, tokenizer=tok, rank=info.rank,
                               world_size=info.world_size, num_tokens=cfg.eval.eval_tokens)
        self.ckpt_path = ckpt_path if state is not None else None
        if info.master:
            self.out.mkdir(parents=True, exist_ok=True)
            self.log_file = open(self.out / "train.log", "a")
            (self.out / "config.json").write_text(cfg.to_json())
            if tok_spec != "gpt2":
                shutil.copyfile(tok_spec, self.out / "tokenizer.json")
        self.history = history

    def _setup_shared(self) -> None:
        """After every rank's setup succeeded: collective and rank-0 parts (HellaSwag data, metrics, the header)."""
        info, cfg, dev, model, tok = self.info, self.cfg, self.info.device, self.model, self.tok
        if info.ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # compiled module inside DDP, as nanoGPT does; DDP broadcasts rank 0's weights here
            self.ddp_model = DDP(self.fwd_model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.hellaswag: list[dict] = []
        if cfg.eval.hellaswag_every:
            from gpt2stream.hellaswag import load_examples

            # one process per node reads it first (downloading it into this machine's cache if need be), then the
            # others read the cached copy; a failure is agreed on, so no rank is left waiting for the first one
            first = info.local_rank == 0
            err = None
            if first:
                try:
                    self.hellaswag = load_examples(cfg.eval.hellaswag)
                except UserError as e:
                    err = e
            self.agree_errors(err)
            if not first:
                try:
                    self.hellaswag = load_examples(cfg.eval.hellaswag)
                except UserError as e:
                    err = e
            self.agree_errors(err)
        self.metrics = MetricsLog(self.out / "metrics.jsonl" if info.master else None, self.history)
        # measuring the peak draws random matrices: keep the (restored) RNG states that dropout will use untouched
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else [], device_type=dev.type):
            self.peak, self.peak_src = peak_flops(dev, self.amp or torch.float32)
        self.tokens_per_step = cfg.train.total_batch_size
        header = run_info(dev, info.world_size, info.backend)
        self.log(f"run {self.out} | git {header['git_commit']} | " +
                 " ".join(f"{k} {v}" for k, v in header["versions"].items()))
        self.log("hardware " + " | ".join(f"{k} {v}" for k, v in header["hardware"].items()))
        self.log("config " + cfg.to_json().replace("\n", "").replace("  ", ""))
        self.log(f"model {model.num_params():,} params | tokenizer {tok.identity} ({tok.n_vocab} tokens) | "
                 f"{self.accum} micro-steps x {cfg.train.batch_size} x {cfg.data.seq_len} x {info.world_size} "
                 f"processes = {self.tokens_per_step:,} tokens/step | dtype {self.amp or torch.float32} | "
                 f"compile {self.compile} | val {sum(x.numel() for x, _ in self.val):,} tokens on rank 0 | "
                 f"MFU peak {self.peak:.3g} FLOP/s ({self.peak_src})")
        if self.ckpt_path is not None:
            self.log(f"resumed from {self.ckpt_path} at step {self.step}")

    # -- pieces of a step ----------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        t = self.cfg.train
        if self.plateau is not None:
            return self.plateau.lr_at(step)
        return cosine_lr(step, t.lr, t.min_lr, t.warmup_steps, t.max_steps)

    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.info.device_type, dtype=self.amp)

    def agree(self, *flags: float) -> list[float]:
        """Every rank's flags, max-reduced: all ranks take the same decision."""
        if not self.info.ddp:
            return list(flags)
        t = torch.tensor(flags, dtype=reduce_dtype(self.info.device), device=self.info.device)
        return D.all_reduce_max(t, self.info).tolist()

    def evaluate(self) -> float | None:
        dtype = reduce_dtype(self.info.device)
        total = torch.zeros(2, dtype=dtype, device=self.info.device)  # sum of losses x tokens, tokens
        self.fwd_model.eval()
        with torch.no_grad():
            for x, y in self.val:
                x, y = x.to(self.info.device), y.to(self.info.device)
                with self.autocast():
                    _, loss = self.fwd_model(x, y)
                total[0] += loss.to(dtype) * y.numel()
                total[1] += y.numel()
        self.fwd_model.train()
        D.all_reduce_sum(total, self.info)
        return (total[0] / total[1]).item() if total[1] > 0 else None

    def evaluate_hellaswag(self) -> None:
        from gpt2stream.hellaswag import evaluate_hellaswag

        # the plain module: HellaSwag's varying lengths would make a compiled forward recompile again and again
        r = evaluate_hellaswag(self.model, self.tok, self.hellaswag, self.info.rank, self.info.world_size,
                               self.info.device, self.amp)
        self.metrics.log(step=self.step, hellaswag_acc=r["acc"], hellaswag_acc_norm=r["acc_norm"],
                         hellaswag_n=r["n"])
        self.log(f"step {self.step:>6} | HellaSwag acc_norm {r['acc_norm']:.4f} acc {r['acc']:.4f} ({r['n']} examples)")

    def sample(self) -> str:
        from gpt2stream.generate import generate_stream

        g = torch.Generator(device=self.info.device).manual_seed(self.cfg.train.seed + self.step)
        idx = torch.tensor([[self.tok.eot_id]], device=self.info.device)  # start a fresh document
        self.model.eval()
        with self.autocast():
            ids = [int(t) for t in generate_stream(self.model, idx, self.cfg.eval.sample_tokens, temperature=1.0,
                                                         top_k=50, generator=g)]
        self.model.train()
        return self.tok.decode(ids)

    def save(self) -> None:
        """Checkpoint the state after step ``self.step`` (collective: every rank calls it)."""
        mine = {"loader": self.loader_state, "rng": capture_rng(self.info.device)}
        ranks = D.gather_objects(mine, self.info)
        ok = 1.0
        if self.info.master:
            state = {
                "step": self.step, "tokens_seen": self.step * self.tokens_per_step,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.plateau.state_dict() if self.plateau else {},
                "config": self.cfg.to_dict(), "tokenizer_identity": self.tok.identity,
                "tokenizer_spec": self.tok_spec, "world_size": self.info.world_size,
                "ranks": ranks, "metrics": self.metrics.records,
            }
            try:
                path = save_checkpoint(state, self.out, self.cfg.eval.keep_last)
                self.log(f"saved checkpoint {path}")
            except OSError as e:
                ok = 0.0
                print(f"error: could not write the checkpoint for step {self.step} ({e}); nothing earlier was "
                      f"touched: the previous checkpoint is intact. Free space, then continue with --resume",
                      file=sys.stderr, flush=True)
        if self.agree(1.0 - ok)[0] > 0:
            raise _Stop(EXIT_SAVE)
        self.saved_step = self.step

    def plot(self) -> None:
        if not self.info.master:
            return
        try:
            from gpt2stream.plot import plot_metrics

            plot_metrics(self.metrics.records, self.out / "loss_plot.png", title=str(self.out.name))
        except Exception as e:  # noqa: BLE001 - a plot must never stop training
            self.warn(f"could not draw loss_plot.png ({type(e).__name__}: {e})")

    def resume_hint(self) -> str:
        return f"continue with: python run_train.py --out-dir {self.out} --resume" + (
            f" (under torchrun --nproc_per_node={self.info.world_size})" if self.info.ddp else "")

    # -- the loop ------------------------------------------------------------------------------------------------
    def fetch(self, it) -> tuple[list, BaseException | None]:
        batches = []
        self.stops.waiting_for_data = True
        try:
            for _ in range(self.accum):
                batches.append(next(it))
        except Exception as e:  # noqa: BLE001 - decided collectively below
            return batches, e
        finally:
            self.stops.waiting_for_data = False
        return batches, None

    def stop_for_signal(self, signum: float) -> int:
        self.save()
        self.plot()
        sig = signal.Signals(int(signum))
        self.log(f"stopped by {sig.name} after step {self.step}; checkpoint saved; {self.resume_hint()}")
        return D.STOP_SIGNALS.get(sig, 1)

    def run(self) -> int:
        cfg, info = self.cfg, self.info
        t, ev = cfg.train, cfg.eval
        if self.step >= t.max_steps:
            self.log(f"nothing to do: the checkpoint is at step {self.step} >= max_steps {t.max_steps}")
            return EXIT_OK
        # DataLoader workers fork here: Ctrl-C must not kill them. The DataLoader draws its workers' base seed from
        # the torch RNG: a resumed run must not take that draw out of the restored state (dropout on CPU uses it)
        with self.stops.ignored_by_children(), torch.random.fork_rng(devices=[]):
            it = iter(self.loader)
        self.stops.guard_worker_deaths()
        step_times: list[float] = []
        while self.step < t.max_steps:
            t0 = time.perf_counter()
            stop = self.agree(float(self.stops.received or 0))[0]
            if stop:
                return self.stop_for_signal(stop)
            batches, err = self.fetch(it)
            kind = 0.0 if err is None else (2.0 if isinstance(err, DataStreamError) else 1.0)
            failed, stop = self.agree(kind, float(self.stops.received or 0))
            if stop:  # the stop signal also hit the DataLoader workers while we waited for a batch
                return self.stop_for_signal(stop)
            if failed:
                if err is not None:
                    if isinstance(err, UserError):
                        print(f"error: [rank {info.rank}] data: {err}", file=sys.stderr, flush=True)
                    else:
                        traceback.print_exception(err)
                self.save()  # the state after the last completed step: nothing is lost
                self.plot()
                self.log(f"stopped at step {self.step} because the data stream failed; checkpoint saved; "
                         f"{self.resume_hint()}")
                return EXIT_DATA if failed == 2.0 else EXIT_USER
            self.loader_state = self.loader.state_dict()

            lr = self.lr_at(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=info.device)
            for micro, (x, y) in enumerate(batches):
                x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
                last = micro == self.accum - 1
                # DDP averages gradients across ranks in backward; do it once, on the last micro-step
                sync = contextlib.nullcontext() if (last or not info.ddp) else self.ddp_model.no_sync()
                with sync:
                    with self.autocast():
                        _, loss = self.ddp_model(x, y)
                    loss = loss / self.accum  # mean over the micro-steps, like one big batch
                    loss.backward()
                loss_sum += loss.detach()
            D.all_reduce_sum(loss_sum, info)
            train_loss = loss_sum.item() / info.world_size
            clip = t.grad_clip if t.grad_clip > 0 else math.inf
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip).item()
            if not math.isfinite(train_loss):
                self.optimizer.zero_grad(set_to_none=True)
                last_ck = f"step {self.saved_step}" if self.saved_step >= 0 else "none (no checkpoint was saved yet)"
                if info.master:
                    print(f"error: the training loss became {train_loss} at step {self.step + 1}; stopping without "
                          f"saving. Last good checkpoint: {last_ck}. Try a lower --lr or --grad-clip, then --resume",
                          file=sys.stderr, flush=True)
                return EXIT_NAN
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if info.device_type == "cuda":
                torch.cuda.synchronize()
            self.step += 1
            dt = time.perf_counter() - t0
            step_times.append(dt)
            recent = step_times[1:][-20:] or step_times  # the first step includes warm-up/compilation
            avg = sum(recent) / len(recent)
            tok_s = self.tokens_per_step / dt
            mfu = self.model.estimate_mfu(tok_s / info.world_size, self.peak, cfg.data.seq_len)
            self.metrics.log(step=self.step, loss=train_loss, lr=lr, grad_norm=norm, ms=round(dt * 1000, 2),
                             tok_s=round(tok_s, 1), mfu=round(mfu, 5), tokens=self.step * self.tokens_per_step,
                             epoch=self.loader.epoch)
            if self.step % ev.log_every == 0 or self.step == 1 or self.step == t.max_steps:
                self.log(f"step {self.step:>6}/{t.max_steps} | loss {train_loss:.4f} | lr {lr:.3e} | norm "
                         f"{norm:.3f} | {dt * 1000:7.1f} ms | {tok_s:9,.0f} tok/s | MFU {mfu * 100:5.2f}% | "
                         f"ETA {format_eta(avg * (t.max_steps - self.step))}")
            last_step = self.step == t.max_steps
            if (ev.eval_every and self.step % ev.eval_every == 0) or last_step:
                val = self.evaluate()
                if val is not None:
                    self.metrics.log(step=self.step, val_loss=val)
                    if self.plateau is not None:
                        self.plateau.observe(val)
                    self.log(f"step {self.step:>6} | val loss {val:.4f}")
                self.plot()
            if ev.hellaswag_every and (self.step % ev.hellaswag_every == 0 or last_step):
                self.evaluate_hellaswag()
            if ev.sample_every and (self.step % ev.sample_every == 0 or last_step) and info.master:
                text = self.sample()
                self.metrics.log(step=self.step, sample=text)
                self.log(f"sample @ step {self.step}: {text!r}")
            if (ev.save_every and self.step % ev.save_every == 0) or last_step:
                self.save()
        self.log(f"done: {self.step} steps, {self.step * self.tokens_per_step:,} tokens; run directory {self.out}")
        return EXIT_OK

    def close(self) -> None:
        loader = getattr(self, "loader", None)
        if loader is not None:
            loader.close()
        if self.log_file is not None:
            self.log_file.close()


def train(cfg: Any) -> int:
    """Run training as configured; return the process exit code (see the module docstring).

    ``cfg.train.resume``: "" = new run, "latest" = newest valid checkpoint in out_dir, else a checkpoint path; the
    config must be compatible with the checkpoint (``config_for_resume`` builds one from the checkpoint's own).
    Under torchrun the process group is set up here and torn down before returning.
    """
    info = D.init_distributed(cfg.train.device, timeout_s=collective_timeout(cfg.data))
    trainer = Trainer(cfg, info)
    trainer.stops.install()
    code, clean = 1, True
    try:
        trainer.setup()
        code = trainer.run()
    except _Stop as s:
        code = s.code
    except UserError as e:
        if info.master or not info.ddp:
            print(f"error: {e}", file=sys.stderr, flush=True)
        code = EXIT_USER
    except KeyboardInterrupt:
        print("interrupted (no checkpoint saved)", file=sys.stderr, flush=True)
        code, clean = 130, False
    except BaseException:
        clean = False  # other ranks may be stuck in a collective: don't wait for them
        raise
    finally:
        trainer.close()
        trainer.stops.restore()
        D.shutdown(info, sync=clean)
    return code
