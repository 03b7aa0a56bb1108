"""A checkpoint holds each storage once: the tied embedding / LM head is written once, so a tiny run's file is at
most 1.02x its weights plus optimizer state, and a model loaded from it is still tied."""

from __future__ import annotations

import torch

from tests.test_train_common import TINY, final_state, make_jsonl, run


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_tiny_checkpoint_is_weights_plus_optimizer_state_and_stays_tied(tmp_path):
    from gpt2stream.checkpoint import list_checkpoints
    from gpt2stream.loading import model_from_state

    data = make_jsonl(tmp_path / "d.jsonl", n_docs=120)
    run([*TINY, "--data", str(data), "--out-dir", str(tmp_path / "run"), "--max-steps", "1", "--eval-every", "0",
         "--save-every", "1", "--device", "cpu"])
    (_, path), = list_checkpoints(tmp_path / "run" / "checkpoints")
    state = final_state(tmp_path / "run")
    model, _ = model_from_state(state)
    weights = _bytes(model.parameters())  # parameters() yields the tied weight once
    opt = _bytes(v for s in state["optimizer"]["state"].values() for v in s.values() if torch.is_tensor(v))
    size = path.stat().st_size
    embedding = _bytes([model.transformer.wte.weight])
    assert embedding > 0.02 * (weights + opt)  # a second copy of the embedding would break the bound below
    assert size <= 1.02 * (weights + opt), (size, weights, opt)
    sd = state["model"]
    assert sd["lm_head.weight"].untyped_storage().data_ptr() == sd["transformer.wte.weight"].untyped_storage(
    ).data_ptr()
    assert model.lm_head.weight is model.transformer.wte.weight
