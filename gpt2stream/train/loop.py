"""The training loop: agree on the step's batches, step, report, then evaluate and save on schedule.

Every decision that ends the loop (a stop signal, a data failure, a non-finite step, a failed save) is taken by
every rank together, and leaves through ``Stop(exit code)`` after whatever saving the reason calls for.
"""

from __future__ import annotations

import math
import signal
import time
import traceback
from pathlib import Path

import torch

import gpt2stream.train.datastats as datastats
import gpt2stream.train.step as S  # called through the module: tests patch S.accumulate
from gpt2stream import distributed as D
from gpt2stream.checkpoint import assemble
from gpt2stream.data.job import pin_revision
from gpt2stream.errors import DataStreamError, UserError, without_resume_advice
from gpt2stream.mfu import Peak
from gpt2stream.optim import group_lrs
from gpt2stream.train.build import Parts
from gpt2stream.train.evaluate import run_eval, sample, val_line, validation
from gpt2stream.train.mixnotes import SourceNotes
from gpt2stream.train.output import RunLog, error, peak_memory_gb, step_line, step_record
from gpt2stream.train.plotter import BackgroundPlotter
from gpt2stream.train.saver import BackgroundSaver
from gpt2stream.train.settings import Exit
from gpt2stream.train.step import PendingStep, StepStats, read_steps
from gpt2stream.train.stops import STOP_SIGNALS, StopSignals, WorkerDied, describe_death
from gpt2stream.train.timing import StepTimer, data_share


class Stop(Exception):
    """Leave the run with an exit code (after whatever saving the reason calls for)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = int(code)


def failure_of(err: BaseException | None) -> D.Failure:
    if err is None:
        return D.Failure.NONE
    return D.Failure.DATA if isinstance(err, DataStreamError) else D.Failure.USER


class Trainer:
    def __init__(self, parts: Parts, out: Path, log: RunLog, stops: StopSignals, peak: Peak,
                 resumed_from: Path | None) -> None:
        self.parts, self.out, self.log, self.stops, self.peak = parts, out, log, stops, peak
        self.resumed = (parts.progress.step, resumed_from) if resumed_from is not None else None
        self.saver = BackgroundSaver(out, parts.cfg.eval.keep_last, log)
        self.plotter = BackgroundPlotter(out / "loss_plot.png", str(out.name), log.warn)
        self.step_times: list[float] = []
        self.pending: list[tuple[PendingStep, dict]] = []  # steps whose loss and norm are still on the device
        self.timer = StepTimer(parts.info.device)
        self.data_base = datastats.logged_totals(parts.metrics.records)  # a resumed run's totals so far
        self.data_totals: dict | None = None
        self.step_docs: list = []
        self.step_sources: list[str] = []  # a mixture's source of each of this rank's blocks of the step
        self.sources = SourceNotes(parts.loader, log)
        self.skip_noted = False
        self.doclog = None
        if parts.cfg.eval.log_docs:  # lines after the checkpoint (a killed run's) are replaced from here on
            from gpt2stream.data.doclog import DocLog

            self.doclog = DocLog(out, parts.info.rank, parts.info.world_size, parts.progress.step)

    @property
    def step(self) -> int:
        return self.parts.progress.step

    # -- the loop ----------------------------------------------------------------------------------------------
    def run(self) -> int:
        t = self.parts.cfg.train
        if self.step >= t.max_steps:
            self.log(f"nothing to do: the checkpoint is at step {self.step} >= max_steps {t.max_steps}")
            return Exit.OK
        # for gpt2stream.report: when each process started (wall time) and on how many ranks; "step" is the first
        # step it trains, so that trackers and resumes treat it as part of that step
        start = {"resumed_from": str(self.resumed[1])} if self.resumed else {}
        self.parts.metrics.log(step=self.step + 1, event="start", time=round(time.time(), 3),
                               world_size=self.parts.info.world_size, **start)
        it = self.start_data()
        while self.step < t.max_steps:
            t0 = time.perf_counter()
            pending = self.one_step(it)
            self.parts.progress.advance(self.parts.cfg.train.total_batch_size)
            if self.doclog is not None:
                mixed = self.sources.mixture is not None
                self.doclog.write(self.step, self.step_docs, self.parts.loader.epoch,
                                  self.step_sources if mixed else None, self.sources.source_epochs())
            self.stops.in_setup = False  # from the first completed step on, a stop signal saves first
            self.report(pending, time.perf_counter() - t0)
            self.sources.after_step(self.step)
            self.note_skipped()
            if self.step % self.parts.cfg.eval.log_every == 0:
                self.log_data_totals()
            self.after_step()
        self.flush()
        self.data_summary()
        skipped = sum(D.gather_objects(self.skipped(), self.parts.info))
        self.log(f"done: {self.step} steps, {self.parts.progress.tokens_seen:,} tokens; run directory {self.out}" +
                 (f"; {skipped:,} documents skipped (text empty or not a string) in {self.parts.cfg.data.data}"
                  if skipped else ""))
        return Exit.OK

    def skipped(self) -> int:
        """Documents this rank's streams passed over for an empty or non-string text, since the run began."""
        return int(getattr(self.parts.loader, "docs_skipped", 0))

    def note_skipped(self) -> None:
        """Say it once, at the first skipped document (the end-of-run summary gives the total): never silent."""
        if self.skip_noted or not self.skipped():
            return
        self.skip_noted = True
        rank = f"[rank {self.parts.info.rank}] " if self.parts.info.ddp else ""
        self.log.warn_any(f"{rank}skipping documents of {self.parts.cfg.data.data} whose text is empty or not a "
                          f"string ({self.skipped()} so far); they are counted, the total is in the summary at the end")

    def start_data(self):
        # DataLoader workers fork here: Ctrl-C must not kill them. The DataLoader draws its workers' base seed from
        # the torch RNG: a resumed run must not take that draw out of the restored state (dropout on CPU uses it)
        with self.stops.ignored_by_children(), torch.random.fork_rng(devices=[]):
            it = iter(self.parts.loader)
        self.stops.guard_worker_deaths(self.dead_workers)
        return it

    def dead_workers(self, wait_s: float = 0.0) -> str | None:
        from gpt2stream.data.dataset import dead_workers

        dead = dead_workers(self.parts.loader, wait_s)
        return describe_death(dead, self.parts.info.rank, self.parts.info.world_size) if dead else None

    def micro_batches(self) -> int:
        """This rank's micro-batches of a step (the last one may be smaller)."""
        return len(self.parts.loader.micro_sizes)

    def fetch(self, it) -> tuple[list, BaseException | None]:
        """This rank's micro-batches of the next step (and their documents in ``self.step_docs``)."""
        batches: list = []
        self.step_docs, self.step_sources = [], []
        try:  # the SIGCHLD handler raises only while waiting_for_data, and clears it: only inside this try
            self.stops.waiting_for_data = True
            if self.stops.worker_died:  # died during the last step (see StopSignals.guard_worker_deaths)
                raise WorkerDied(self.stops.worker_died)
            for _ in range(self.micro_batches()):
                batches.append(next(it))
                self.step_docs += getattr(self.parts.loader, "last_docs", [])
                self.step_sources += getattr(self.parts.loader, "last_sources", [])
            self.stops.waiting_for_data = False
        except Exception as e:  # noqa: BLE001 - decided collectively by the caller
            self.stops.waiting_for_data = False
            # torch wraps our WorkerDied (raised inside its wait) in its own RuntimeError, and a worker killed while
            # handing a batch over resets the connection: whatever the error, a dead worker is the cause to name
            died = self.stops.worker_died or self.dead_workers(2.0 if isinstance(e, (OSError, RuntimeError)) else 0.0)
            return batches, WorkerDied(died) if died and not isinstance(e, WorkerDied) else e
        return batches, None

    def one_step(self, it) -> PendingStep:
        """Fetch this rank's batches, agree with every rank (one small all-reduce), step. A stop signal or a data
        failure on any rank saves the state after the last completed step and stops every rank. Under DDP the
        agreement is in flight during the forward and backward (a rank without data runs zeros with weight 0), and
        a step it stops is discarded: no optimizer step, gradients zeroed, the RNG states put back."""
        parts, t0 = self.parts, time.perf_counter()
        batches, err = ([], None) if self.stops.received else self.fetch(it)
        self.timer.host("data_wait_ms", time.perf_counter() - t0)
        sig = self.stops.received or 0  # what this rank reports: a signal arriving later counts at the next step
        agreement = D.StepAgreement(parts.info, (failure_of(err), sig))
        if not parts.info.ddp:
            self.check_agreement(agreement, err)
        rng = (torch.get_rng_state(), torch.cuda.get_rng_state() if parts.info.device_type == "cuda" else None)
        self.timer.start()
        loss_sum = S.accumulate(parts, batches if err is None and not sig else [])
        self.timer.mark("compute_ms")
        if any(agreement.result()):
            S.zero_grad(parts)
            torch.set_rng_state(rng[0])
            if rng[1] is not None:
                torch.cuda.set_rng_state(rng[1])
            self.check_agreement(agreement, err)
        parts.position.mark()
        self.timer.mark("sync_ms")
        pending = S.apply_step(parts, loss_sum, parts.schedule.lr_at(self.step))
        self.timer.mark("optim_ms")
        return pending

    def check_agreement(self, agreement: D.StepAgreement, err: BaseException | None) -> None:
        failed, sig = agreement.result()
        if sig:  # the signal may also have hit the DataLoader workers while we waited for a batch
            raise self.stop_for_signal(sig)
        if failed:
            raise self.stop_for_data(D.Failure(failed), err)

    def report(self, pending: PendingStep, dt: float) -> None:
        """Queue the step's figures; read them (one host read for the batch) every --log-every steps."""
        parts, t = self.parts, self.parts.cfg.train
        self.step_times.append(dt)
        tok_s = t.total_batch_size / dt
        mfu = parts.model.estimate_mfu(tok_s / parts.info.world_size, self.peak.flops, parts.cfg.data.seq_len)
        self.pending.append((pending, dict(step=self.step, dt=dt, tok_s=tok_s, mfu=mfu,
                                           tokens=parts.progress.tokens_seen, epoch=parts.loader.epoch,
                                           mem_gb=peak_memory_gb(parts.info.device),
                                           timing=self.timer.finish(self.step), time=round(time.time(), 3),
                                           src=self.sources.record(),
                                           lrs={f"lr_{n}": v for n, v in group_lrs(parts.optimizer).items()})))
        if self.log_due(self.step):
            self.read_pending()

    def log_due(self, step: int) -> bool:
        return step % self.parts.cfg.eval.log_every == 0 or step == 1 or step == self.parts.cfg.train.max_steps

    def read_pending(self) -> None:
        """Log the queued steps (collective under DDP: one all-reduce of their losses); stop at a non-finite one."""
        parts, t = self.parts, self.parts.cfg.train
        queued, self.pending = self.pending, []
        for stats, (_, f) in zip(read_steps([p for p, _ in queued], parts.info), queued, strict=True):
            if not stats.applied:
                raise self.not_finite(stats, f["step"])
            rec = parts.metrics.log(**step_record(f["step"], stats, f["dt"], f["tok_s"], f["mfu"], f["tokens"],
                                                  f["epoch"], f["mem_gb"]), **f["timing"], time=f["time"], **f["lrs"],
                                  **f["src"])
        if queued and self.log_due(queued[-1][1]["step"]):
            recent = self.step_times[1:][-20:] or self.step_times  # the first step includes warm-up/compilation
            eta = sum(recent) / len(recent) * (t.max_steps - self.step)
            f = queued[-1][1]
            self.log(step_line(f["step"], t.max_steps, stats, f["dt"], f["tok_s"], f["mfu"], eta, f["mem_gb"],
                               data_share(rec)))
    def log_data_totals(self) -> None:
        """Collective (control group): the job's pipeline and network totals into the metrics, on rank 0."""
        totals = datastats.gather_totals(self.parts.loader, self.parts.info, self.data_base)
        if totals is not None:
            self.data_totals = totals
            self.parts.metrics.log(**datastats.totals_record(self.step, totals))

    def data_summary(self) -> None:
        """Collective: the end-of-run line on the data and the network, and the likely cause of a data stall."""
        if self.step % self.parts.cfg.eval.log_every:  # the totals of the last steps
            self.log_data_totals()
        share = datastats.stall_share(self.parts.metrics.records)
        if self.data_totals is None:
            return
        self.log(datastats.summary_line(self.data_totals, share))
        if share > datastats.STALL_WARN:
            p, t = self.parts, self.parts.cfg.train
            recent = sorted(self.step_times[1:] or self.step_times)
            tok_s = t.total_batch_size / recent[len(recent) // 2] if recent else 0.0
            readers = p.info.world_size * len(p.loader.readers)
            self.log("warning: " + datastats.stall_cause(self.data_totals, share, tok_s, readers,
                                                         p.cfg.data.num_workers))

    def close(self) -> None:
        self.plotter.close()
        if self.doclog is not None:
            self.doclog.close()
        self.parts.metrics.close()

    def due(self, every: int) -> bool:
        """Whether a task run every ``every`` steps (0 = only at the end) is due after this step."""
        last = self.step == self.parts.cfg.train.max_steps
        return last or bool(every and self.step % every == 0)

    def after_step(self) -> None:
        ev, info = self.parts.cfg.eval, self.parts.info
        val, hs = self.due(ev.eval_every), ev.evals_every and self.due(ev.evals_every)
        smp, save = ev.sample_every and self.due(ev.sample_every), self.due(ev.save_every)
        if not (val or hs or smp or save):
            return
        self.read_pending()  # before anything is evaluated or saved: a non-finite step stops the run here
        (sig,) = D.agree_max(info, self.stops.received or 0)
        if sig:  # a stop signal skips what was due and saves at once
            raise self.stop_for_signal(sig)
        if val:
            self.validate()
        if hs:
            self.score_evals()
        if smp and info.master:
            text = sample(self.parts, self.step)
            self.parts.metrics.log(step=self.step, sample=text)
            self.log(f"sample @ step {self.step}: {text!r}")
        if save:
            self.save()

    # -- evaluation ----------------------------------------------------------------------------------------------
    def validate(self) -> None:
        val = validation(self.parts)
        if val is not None:
            self.parts.metrics.log(step=self.step, **val)
            self.parts.schedule.observe(val["val_loss"])
            self.log(val_line(self.step, val))
        self.plot()

    def score_evals(self) -> None:
        for name, examples in self.parts.evals.items():
            r = run_eval(self.parts, name, examples)
            self.parts.metrics.log(step=self.step, **{f"{name}_{k}": v for k, v in r.items()})
            self.log(f"step {self.step:>6} | {name} acc_norm {r['acc_norm']:.4f} acc {r['acc']:.4f} "
                     f"({r['n']} examples)")

    # -- saving and stopping -------------------------------------------------------------------------------------
    def save(self) -> None:
        """Checkpoint the state after step ``self.step`` (collective: every rank calls it): rank 0 snapshots it to
        CPU memory and writes it in the background. Stops every rank if the previous write failed."""
        parts, info = self.parts, self.parts.info
        self.read_pending()  # the history saved is complete, and no weights after a non-finite step are saved
        ranks = D.gather_objects({k: v.state_dict() for k, v in parts.mine.items()}, info)
        err = self.saver.wait() if info.master else None
        if info.master and err is None:
            meta = {"config": pin_revision(parts.cfg.to_dict(), parts.loader.source),
                    "tokenizer_identity": parts.tok.identity, "tokenizer_spec": parts.tok_spec,
                    "world_size": info.world_size}
            self.saver.submit(assemble(parts.shared, ranks, parts.progress.state_dict(), meta), self.step)
        self.agree_saved(err)

    def flush(self) -> None:
        """Collective: wait for the checkpoint being written; stop every rank if it failed."""
        self.agree_saved(self.saver.wait() if self.parts.info.master else None)

    def agree_saved(self, err: str | None) -> None:
        if err is not None:
            error(err)
        (failed,) = D.agree_max(self.parts.info, 0 if err is None else 1)
        if failed:
            raise Stop(Exit.SAVE)

    def plot(self) -> None:
        if self.parts.info.master and self.parts.cfg.eval.plot:
            self.plotter.request(self.parts.metrics.records)

    def resume_hint(self) -> str:
        info = self.parts.info
        return f"continue with: python run_train.py --out-dir {self.out} --resume" + (
            f" (under torchrun --nproc_per_node={info.world_size})" if info.ddp else "")

    def stop_for_signal(self, signum: int) -> Stop:
        """Save at once (no evaluation, eval task or sample first: a launcher's grace period is short)."""
        self.save()
        self.flush()
        self.plot()
        sig = signal.Signals(int(signum))
        self.log(f"stopped by {sig.name} after step {self.step}; checkpoint saved; {self.resume_hint()}")
        return Stop(STOP_SIGNALS.get(sig, 1))

    def stop_for_data(self, failed: D.Failure, err: BaseException | None) -> Stop:
        died = isinstance(err, WorkerDied)
        never_trained = self.step == 0  # nothing to save, nothing to resume: the same command runs again
        if err is not None and not died:
            if isinstance(err, UserError):
                msg = without_resume_advice(str(err)) if never_trained else str(err)
                error(f"[rank {self.parts.info.rank}] data: {msg}")
            else:
                traceback.print_exception(err)
        if never_trained:
            say = self.log.error if died else self.log
            why = f"{without_resume_advice(str(err))}; " if died else ""
            say(f"{why}stopped before the first step because of the data; nothing was trained or saved: fix it and "
                f"run the same command again")
            return Stop(Exit.DATA if failed == D.Failure.DATA else Exit.USER)
        self.save()  # the state after the last completed step: nothing is lost
        self.flush()
        self.plot()
        if died:  # one line, from the rank whose worker died
            self.log.error(f"{err}; checkpoint saved at step {self.step}; {self.resume_hint()}")
        else:
            self.log(f"stopped at step {self.step} because the data stream failed; checkpoint saved; "
                     f"{self.resume_hint()}")
        return Stop(Exit.DATA if failed == D.Failure.DATA else Exit.USER)

    def not_finite(self, stats: StepStats, step: int) -> Stop:
        """The step was not applied: say what went wrong and which checkpoint holds good weights (NaN weights are
        never saved: a step with a non-finite loss or norm never reaches the optimizer)."""
        what = f"training loss became {stats.loss}" if not math.isfinite(stats.loss) else \
            f"gradient norm became {stats.grad_norm} (loss {stats.loss:.4f})"
        if self.parts.info.master:
            self.saver.wait()  # the write in progress: if it fails, the previous checkpoint is the good one
            saved = self.saver.last or self.resumed
            good = f"step {saved[0]} ({saved[1]})" if saved else "none (no checkpoint was saved yet)"
            error(f"the {what} at step {step}; the step was not applied; stopping without saving. "
                  f"Last good checkpoint: {good}. Try a lower --lr or --grad-clip, then --resume")
        return Stop(Exit.NAN)
