"""Config: presets, overrides in every spelling, validation messages, and the CLI's one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from config import PRESETS
from gpt2stream import config
from gpt2stream.config import ConfigError, RunConfig, load_config
from gpt2stream.errors import UserError
from tests.conftest import ROOT


def test_default_preset_is_gpt2_124m_recipe():
    cfg = load_config([], PRESETS)
    m, t = cfg.model, cfg.train
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.vocab_multiple) == (12, 12, 768, 1024, 64)
    assert (cfg.data.data, cfg.data.data_config) == ("HuggingFaceFW/fineweb-edu", "sample-10BT")
    assert (t.total_batch_size, t.lr, t.min_lr, t.warmup_steps, t.max_steps) == (524288, 6e-4, 6e-5, 715, 19073)
    assert (t.beta1, t.beta2, t.weight_decay, t.grad_clip, t.schedule) == (0.9, 0.95, 0.1, 1.0, "cosine")


@pytest.mark.parametrize(
    "argv",
    [["--max-steps", "7"], ["--max_steps", "7"], ["--max-steps=7"], ["--max_steps=7"], ["--max-steps", "7e0"]],
)
def test_override_spellings(argv):
    assert load_config(argv, PRESETS).train.max_steps == 7


def test_preset_applies_before_overrides_wherever_it_stands():
    cfg = load_config(["--max-steps", "3", "--preset=tiny", "--n-embd", "64"], PRESETS)
    assert (cfg.preset, cfg.train.max_steps, cfg.model.n_embd, cfg.model.n_layer) == ("tiny", 3, 64, 4)


def test_booleans_optional_values_and_none():
    assert load_config(["--compile"], PRESETS).train.compile is True
    assert load_config(["--no-compile"], PRESETS).train.compile is False
    assert load_config(["--compile=false"], PRESETS).train.compile is False
    assert load_config(["--compile", "auto"], PRESETS).train.compile is None
    assert load_config(["--resume"], PRESETS).train.resume == "latest"
    assert load_config(["--resume", "runs/x/ckpt", "--seed", "3"], PRESETS).train.resume == "runs/x/ckpt"
    assert load_config(["--vocab-size", "none"], PRESETS).model.vocab_size is None


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--lr", "-1"], ["train.lr", "-1", "> 0"]),
        (["--preset", "nope"], ["nope", "tiny"]),
        (["--n-layer", "0"], ["n_layer", ">= 1"]),
        (["--max-step", "5"], ["--max-step", "did you mean --max-steps"]),
        (["--batch-size", "ten"], ["--batch-size", "not a valid int"]),
        (["--schedule", "linear"], ["schedule", "cosine, wsd or plateau"]),
        (["--optimizer", "sgd"], ["optimizer", "adamw or muon"]),
        (["--decay-shape", "cosine"], ["decay_shape", "linear or 1-sqrt"]),
        (["--n-head", "5"], ["n_head", "divide n_embd"]),
        (["--total-batch-size", "1000"], ["total_batch_size", "multiple"]),
        (["--min-lr", "1"], ["min_lr"]),
        (["stray"], ["unexpected argument"]),
    ],
)
def test_bad_values_name_the_problem(argv, words):
    with pytest.raises(UserError) as e:
        load_config(argv, PRESETS)
    for w in words:
        assert w in str(e.value)


def test_config_errors_are_value_errors_too():
    with pytest.raises(ValueError):
        config.TrainConfig(lr=0)


def test_json_round_trip_and_incompatible_dict():
    cfg = load_config(["--preset", "tiny", "--seed", "5"], PRESETS)
    again = RunConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    d = cfg.to_dict()
    d["model"]["n_experts"] = 8
    with pytest.raises(UserError, match="not compatible"):
        RunConfig.from_dict(d)


def test_every_field_is_documented():
    # each field line in config.py carries a comment saying what it means
    import dataclasses
    import inspect

    for section in (config.ModelConfig, config.DataConfig, config.TrainConfig, config.EvalConfig):
        src = inspect.getsource(section)
        for f in dataclasses.fields(section):
            line = next(ln for ln in src.splitlines() if ln.strip().startswith(f"{f.name}:"))
            assert "#" in line, f"{section.__name__}.{f.name} has no comment"


def _cli(*args):
    return subprocess.run([sys.executable, "run_train.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_print_config_through_the_entry_point():
    out = _cli("--print-config")
    assert out.returncode == 0, out.stderr
    resolved = json.loads(out.stdout)
    assert resolved["model"]["n_layer"] == 12
    assert resolved["model"]["vocab_size"] == 50257  # filled in from the GPT-2 tokenizer, as training does
    out = _cli("--preset", "tiny", "--print-config")
    assert json.loads(out.stdout)["preset"] == "tiny"


@pytest.mark.parametrize("args", [("--lr", "-1"), ("--preset", "nope"), ("--n-layer", "0")])
def test_bad_flags_exit_nonzero_with_one_line_and_no_traceback(args):
    out = _cli(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr
    with pytest.raises(ConfigError):
        load_config(list(args), PRESETS)


def test_help_lists_every_flag_with_its_value_and_meaning():
    out = _cli("--preset", "tiny", "--help")
    assert out.returncode == 0, out.stderr
    lines = {ln.split()[0]: ln for ln in out.stdout.splitlines() if ln.startswith("  --")}
    assert "transformer blocks" in lines["--n-layer"] and " 4 " in lines["--n-layer"]
    assert "peak learning rate" in lines["--lr"]
    assert len(lines) >= 50


def test_a_field_name_in_two_sections_is_refused_not_overwritten():
    import dataclasses

    from gpt2stream.cli import flag_table

    @dataclasses.dataclass
    class A:
        seed: int = 1

    @dataclasses.dataclass
    class B:
        seed: int = 2

    @dataclasses.dataclass
    class Both:
        a: A = dataclasses.field(default_factory=A)
        b: B = dataclasses.field(default_factory=B)

    with pytest.raises(ValueError, match=r"--seed is defined twice \(A and B\)"):
        flag_table(Both())
    assert set(flag_table(RunConfig())) >= {"max-steps", "seed", "data"}  # the real config has no duplicate
