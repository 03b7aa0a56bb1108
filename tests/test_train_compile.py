"""--compile: training (with --optimizer muon: the compiled model under the optimizer seam), evaluation and sampling
work, and checkpoints hold plain parameter names."""

from __future__ import annotations

import json

import pytest

from tests.test_train_common import TINY, final_state, make_jsonl, run


@pytest.mark.slow
def test_compiled_training_evaluates_samples_and_saves_plain_names(tmp_path):
    data = make_jsonl(tmp_path / "docs.jsonl", n_docs=200)
    out = tmp_path / "run"
    # 256 validation tokens = 2 full batches of 4 x 32: the eval forward has the training shape
    p = run([*TINY, "--data", str(data), "--num-workers", "0", "--compile", "--max-steps", "2", "--eval-every", "1",
             "--sample-every", "2", "--sample-tokens", "8", "--optimizer", "muon", "--out-dir", str(out)])
    assert "compile True" in p.stdout and "param group muon_qkv: Muon" in p.stdout
    assert "val loss" in p.stdout and "sample @ step 2:" in p.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_loss" in r] == [1, 2]
    keys = list(final_state(out)["model"])
    assert "transformer.wte.weight" in keys
    assert not [k for k in keys if k.startswith(("_orig_mod.", "module."))]
    import torch

    from gpt2stream.loading import load_source

    loaded = load_source(str(out), "", "", "", torch.device("cpu"))  # loads into a plain GPT: names match
    cfg, spec = loaded.config, loaded.tokenizer_spec
    assert cfg.train.compile is True and spec == "gpt2"
