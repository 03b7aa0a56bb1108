"""In-process: the trainer's parts built from a config, ``train_step`` without a subprocess, and a save -> restore
round trip of every saved part (model, optimizer, schedule, progress, metrics, loader position, RNG)."""

from __future__ import annotations

import math

import pytest
import torch

from config import PRESETS
from gpt2stream import distributed as D
from gpt2stream.checkpoint import SHARED_PARTS, assemble, choose_checkpoint, save_checkpoint
from gpt2stream.config import load_config
from gpt2stream.errors import UserError
from gpt2stream.schedules import CosineSchedule, PlateauSchedule, make_schedule
from gpt2stream.train.build import build_parts, restore
from gpt2stream.train.state import Progress
from gpt2stream.train.step import train_step
from tests.test_train_common import TINY, make_jsonl

CPU = D.DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="")


def _cfg(tmp_path, *extra: str):
    data = tmp_path / "docs.jsonl"
    if not data.exists():
        make_jsonl(data, n_docs=200)
    return load_config([*TINY, "--data", str(data), "--num-workers", "0", "--out-dir", str(tmp_path / "run"),
                        "--dropout", "0.1", "--schedule", "plateau", "--eval-every", "1", *extra], PRESETS)


def _steps(parts, it, n: int) -> list:
    out = []
    for _ in range(n):
        batches = [next(it) for _ in range(parts.accum)]
        parts.position.mark()
        stats = train_step(parts, batches, parts.schedule.lr_at(parts.progress.step))
        parts.progress.advance(parts.cfg.train.total_batch_size)
        parts.metrics.log(step=parts.progress.step, loss=stats.loss)
        parts.schedule.observe(stats.loss)
        out.append(stats)
    return out


def _save(parts) -> None:
    meta = {"config": parts.cfg.to_dict(), "tokenizer_identity": parts.tok.identity, "tokenizer_spec": "gpt2",
            "world_size": 1}
    ranks = [{k: v.state_dict() for k, v in parts.mine.items()}]
    save_checkpoint(assemble(parts.shared, ranks, parts.progress.state_dict(), meta), parts.cfg.train.out_dir, 3)


def test_train_step_in_process_lowers_the_loss(tmp_path):
    parts = build_parts(_cfg(tmp_path, "--lr", "1e-2"), CPU, None)
    stats = _steps(parts, iter(parts.loader), 6)
    assert all(s.applied and s.finite for s in stats)
    assert stats[-1].loss < stats[0].loss - 0.5, [s.loss for s in stats]
    assert parts.progress == Progress(step=6, tokens_seen=6 * 256)


def test_build_resolves_a_copy_and_leaves_the_callers_config_alone(tmp_path):
    cfg = _cfg(tmp_path)
    parts = build_parts(cfg, CPU, None)
    assert (cfg.model.vocab_size, cfg.data.streams) == (None, 0)  # as given: from the tokenizer, automatic
    assert parts.cfg.model.vocab_size == parts.tok.n_vocab == 50257
    assert parts.cfg.data.streams == parts.loader.streams >= 1
    assert parts.cfg.train == cfg.train and parts.cfg.eval == cfg.eval


def test_save_restore_round_trip_continues_identically(tmp_path):
    cfg = _cfg(tmp_path)
    a = build_parts(cfg, CPU, None)
    it = iter(a.loader)
    _steps(a, it, 3)
    _save(a)
    rng_at_save = torch.get_rng_state()
    path, state = choose_checkpoint("latest", cfg.train.out_dir)
    assert path.name == "step_00000003.pt" and set(SHARED_PARTS) <= set(state)

    b = build_parts(_cfg(tmp_path), CPU, (path, state))
    assert not torch.equal(b.model.transformer.wte.weight, a.model.transformer.wte.weight)  # not vacuous
    restore(b, state)
    assert torch.equal(torch.get_rng_state(), rng_at_save)
    assert b.progress == a.progress and b.metrics.records == a.metrics.records
    assert b.schedule.state_dict() == a.schedule.state_dict() and isinstance(b.schedule, PlateauSchedule)
    assert b.position.state_dict() == a.position.state_dict()
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for k in sa["state"]:
        for name, t in sa["state"][k].items():
            assert torch.equal(t, sb["state"][k][name]), (k, name)
    # the restored run takes the very step the original takes next (same batches, dropout masks, lr)
    torch.set_rng_state(rng_at_save)
    next_a = _steps(a, it, 1)[0]
    restore(b, state)
    next_b = _steps(b, iter(b.loader), 1)[0]
    assert next_a == next_b


def test_incompatible_checkpoint_is_refused_before_building(tmp_path):
    a = build_parts(_cfg(tmp_path), CPU, None)
    _save(a)
    got = choose_checkpoint("latest", a.cfg.train.out_dir)
    with pytest.raises(UserError, match=r"cannot resume from .*n_embd: checkpoint 32, now 64"):
        build_parts(_cfg(tmp_path, "--n-embd", "64"), CPU, got)
    with pytest.raises(UserError, match="already has checkpoints; continue it with --resume"):
        choose_checkpoint("", a.cfg.train.out_dir)


def test_non_finite_gradient_norm_is_never_applied(tmp_path):
    parts = build_parts(_cfg(tmp_path), CPU, None)
    it = iter(parts.loader)
    before = {k: v.clone() for k, v in parts.model.state_dict().items()}
    hook = parts.model.transformer.wte.weight.register_hook(lambda g: g * float("inf"))
    stats = train_step(parts, [next(it) for _ in range(parts.accum)], 1e-3)
    hook.remove()
    assert stats.loss == stats.loss and abs(stats.loss) < 100  # the loss itself is finite
    assert not stats.applied and not stats.finite
    for k, v in parts.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in parts.model.parameters())
    # Adam never saw the NaN gradient: the fused step skipped it on the device (found_inf), so its state, if any, is
    # a fresh one's (step 0, zero moments)
    for st in parts.optimizer.state.values():
        assert st["step"].item() == 0 and not st["exp_avg"].any() and not st["exp_avg_sq"].any()


def test_schedules_share_one_interface():
    class T:
        schedule, lr, min_lr, warmup_steps, max_steps = "cosine", 1.0, 0.1, 2, 6
        plateau_factor, plateau_patience, plateau_threshold, plateau_cooldown, plateau_window = 0.5, 1, 0.0, 0, 1

    cos = make_schedule(T)
    assert isinstance(cos, CosineSchedule) and cos.lr_at(4) == pytest.approx(0.55)
    assert cos.state_dict() == {"max_steps": 6, "anchor": None}  # what a resume with a new --max-steps judges
    cos.observe(1.0)
    assert cos.lr_at(4) == pytest.approx(0.55)
    T.schedule = "plateau"
    pl = make_schedule(T)
    pl.observe(1.0)
    pl.observe(2.0)
    assert pl.lr_at(5) == 0.5
    fresh = make_schedule(T)
    fresh.load_state_dict(pl.state_dict())
    assert fresh.lr_at(5) == 0.5 and fresh.state_dict() == pl.state_dict()


def test_agreements_without_a_process_group():
    assert D.agree_max(CPU, D.Failure.DATA, 15) == (2, 15)
    assert D.lowest_failing_rank(True, CPU) == 0 and D.lowest_failing_rank(False, CPU) is None


def test_deterministic_mode_sets_every_switch(monkeypatch):
    import torch._inductor.config as inductor_config

    from gpt2stream.train.build import configure_kernels

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(inductor_config, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    configure_kernels(torch.device("cpu"), deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled() and not inductor_config.deterministic
    try:
        configure_kernels(torch.device("cpu"), deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert inductor_config.deterministic and not torch.backends.cudnn.benchmark
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def test_ragged_validation_batch_is_padded_with_ignored_targets(tmp_path):
    from gpt2stream.train.evaluate import pad_batch, validation

    x, y = torch.arange(6).view(2, 3), torch.arange(1, 7).view(2, 3)
    px, py = pad_batch(x, y, 4)
    assert px.shape == py.shape == (4, 3) and torch.equal(px[:2], x) and torch.equal(py[:2], y)
    assert (py[2:] == -1).all() and (px[2:] == 0).all()
    assert pad_batch(x, y, 2)[0] is x
    # 160 validation tokens in batches of 4 x 32: one full batch and a ragged one of 1 row
    parts = build_parts(_cfg(tmp_path, "--eval-tokens", "160"), CPU, None)
    assert [b[0].shape[0] for b in parts.val] == [4, 1]
    with torch.no_grad():
        xs, ys = torch.cat([b[0] for b in parts.val]), torch.cat([b[1] for b in parts.val])
        parts.model.eval()
        expected = parts.model(xs, ys)[1].item()  # the mean over all 5 x 32 targets in one forward
        parts.model.train()
    got = validation(parts)
    assert got["val_loss"] == pytest.approx(expected, rel=1e-6)
    # bits per byte: the summed loss in bits over the bytes of the targets' text (<|endoftext|> is no text)
    text = b"".join(parts.tok.decode_bytes([t]) for t in ys.flatten().tolist() if t != parts.tok.eot_id)
    assert got["val_bpb"] == pytest.approx(expected * ys.numel() / math.log(2) / len(text), rel=1e-6)


def test_background_saver_snapshots_then_reports_a_failed_write(tmp_path, monkeypatch):
    import gpt2stream.train.saver as S

    msgs: list[str] = []
    saver = S.BackgroundSaver(tmp_path, keep_last=2, log=msgs.append)
    w = torch.ones(3)
    state = {"format": "x", "step": 1, "model": {"w": w}, "metrics": [{"step": 1}]}
    snap = S.to_cpu(state)
    w.add_(1)  # training goes on changing the live tensor
    assert torch.equal(snap["model"]["w"], torch.ones(3)) and snap["metrics"] is not state["metrics"]
    saver.submit({"step": 1, "model": {"w": w}}, step=1)
    assert saver.wait() is None and saver.last[0] == 1 and saver.last[1].is_file()
    assert msgs == [f"saved checkpoint {saver.last[1]}"]

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(S, "save_checkpoint", full)
    saver.submit({"step": 2}, step=2)
    err = saver.wait()
    assert err.startswith("could not write the checkpoint for step 2 ([Errno 28] No space left on device)")
    assert saver.wait() is None and saver.last[0] == 1  # reported once; the last good one is still step 1


def test_uneven_micro_batches_give_the_mean_over_the_step(tmp_path):
    """8 blocks a step as micro-batches of 3, 3 and 2 rows (weighted by their rows) == one micro-batch of 8."""
    losses, weights = [], []
    for b in ("8", "3"):
        cfg = _cfg(tmp_path, "--dropout", "0", "--batch-size", b, "--out-dir", str(tmp_path / f"b{b}"))
        parts = build_parts(cfg, CPU, None)
        assert parts.loader.micro_sizes == ([8] if b == "8" else [3, 3, 2])
        it = iter(parts.loader)
        stats = train_step(parts, [next(it) for _ in parts.loader.micro_sizes], 1e-3)
        losses.append(stats.loss)
        weights.append(parts.model.state_dict())
        parts.loader.close()
    assert abs(losses[0] - losses[1]) < 1e-5, losses
    assert max((weights[0][k] - weights[1][k]).abs().max().item() for k in weights[0]) < 1e-5
