"""Schedules against hand-computed tables."""

from __future__ import annotations

import math

import pytest

from gpt2stream.schedules import (
    CosineSchedule,
    PlateauSchedule,
    WSDSchedule,
    cosine_lr,
    decay_from,
    decay_start,
    wsd_lr,
)


def test_cosine_hand_table():
    # max 1.0, min 0.1, warmup 2, max_steps 6: warmup (s+1)/2; then 0.1 + 0.45 * (1 + cos(pi * (s - 2) / 4))
    expected = [0.5, 1.0, 1.0, 0.1 + 0.45 * (1 + math.sqrt(0.5)), 0.55, 0.1 + 0.45 * (1 - math.sqrt(0.5)), 0.1, 0.1]
    got = [cosine_lr(s, max_lr=1.0, min_lr=0.1, warmup_steps=2, max_steps=6) for s in range(8)]
    assert got == pytest.approx(expected, abs=1e-12)


def test_cosine_gpt2_124m_points():
    kw = dict(max_lr=6e-4, min_lr=6e-5, warmup_steps=715, max_steps=19073)
    assert cosine_lr(0, **kw) == pytest.approx(6e-4 / 715)
    assert cosine_lr(714, **kw) == pytest.approx(6e-4)
    assert cosine_lr(715, **kw) == pytest.approx(6e-4)
    mid = 715 + (19073 - 715) // 2  # 9894: ratio = 9179/18358 = 0.5 exactly -> halfway between max and min
    assert cosine_lr(mid, **kw) == pytest.approx(3.3e-4)
    assert cosine_lr(19073, **kw) == pytest.approx(6e-5)


def test_cosine_without_warmup_starts_at_max():
    assert cosine_lr(0, max_lr=2.0, min_lr=0.0, warmup_steps=0, max_steps=4) == 2.0
    assert cosine_lr(2, max_lr=2.0, min_lr=0.0, warmup_steps=0, max_steps=4) == pytest.approx(1.0)


def test_plateau_hand_table():
    # window 1 (raw values), threshold 10%, patience 2, cooldown 1, factor 0.5, floor 0.2
    s = PlateauSchedule(max_lr=1.0, min_lr=0.2, factor=0.5, patience=2, threshold=0.1, cooldown=1, window=1)
    losses = [10, 9.5, 9.2, 9.1, 9.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    # 10 best | 9.5 bad1 | 9.2 bad2 -> cut 0.5, cooldown | 9.1 (cooldown: not counted) | 9.0 bad1 | 8.0 best |
    # bad1 | bad2 -> 0.25 | cooldown | bad1 | bad2 -> max(0.125, 0.2) = 0.2 | cooldown | bad1 | bad2 but at floor
    expected = [1, 1, .5, .5, .5, .5, .5, .25, .25, .25, .2, .2, .2, .2]
    assert [s.observe(v) for v in losses] == pytest.approx(expected)
    assert s.cuts == 3


def test_plateau_window_ignores_a_lucky_dip():
    losses = [5, 4, 1, 3.9, 3.8, 3.7, 3.6]
    raw = PlateauSchedule(max_lr=1.0, min_lr=0.0, factor=0.5, patience=2, threshold=0.0, cooldown=0, window=1)
    # the dip to 1 becomes the best; 3.9 and 3.8 are then two non-improvements -> cut
    assert [raw.observe(v) for v in losses] == [1, 1, 1, 1, .5, .5, .25]
    smooth = PlateauSchedule(max_lr=1.0, min_lr=0.0, factor=0.5, patience=2, threshold=0.0, cooldown=0, window=3)
    # medians: 5, 4.5, 4, 3.9, 3.8, 3.8 (bad1), 3.7 -> never two bad in a row
    assert [smooth.observe(v) for v in losses] == [1] * 7


def test_plateau_state_dict_round_trip_and_warmup():
    a = PlateauSchedule(max_lr=1.0, min_lr=0.1, factor=0.5, patience=1, threshold=0.0, cooldown=2, window=2,
                        warmup_steps=4)
    assert [a.lr_at(i) for i in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    for v in [3.0, 3.0, 3.0]:
        a.observe(v)
    b = PlateauSchedule(max_lr=1.0, min_lr=0.1, factor=0.5, patience=1, threshold=0.0, cooldown=2, window=2)
    b.load_state_dict(a.state_dict())
    more = [3.0, 2.0, 3.0, 3.0, 3.0, 3.0]
    assert [a.observe(v) for v in more] == [b.observe(v) for v in more]
    assert a.state_dict() == b.state_dict()
    assert a.lr < 1.0
    assert a.observe(float("nan")) == a.lr  # ignored


def test_wsd_hand_tables():
    # max 1.0, min 0.1, warmup 2, max_steps 10, decay_frac 0.4: warmup (s+1)/2, flat to step 5, decay over 6..10
    kw = dict(max_lr=1.0, min_lr=0.1, warmup_steps=2, max_steps=10, decay_frac=0.4)
    flat = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    linear = flat + [1.0, 1 - 0.9 * 0.25, 1 - 0.9 * 0.5, 1 - 0.9 * 0.75, 0.1, 0.1]
    one_minus_sqrt = flat + [1.0, 0.1 + 0.9 * 0.5, 0.1 + 0.9 * (1 - math.sqrt(0.5)), 0.1 + 0.9 * (1 - math.sqrt(0.75)),
                             0.1, 0.1]
    assert [wsd_lr(s, **kw, shape="linear") for s in range(12)] == pytest.approx(linear, abs=1e-12)
    assert [wsd_lr(s, **kw, shape="1-sqrt") for s in range(12)] == pytest.approx(one_minus_sqrt, abs=1e-12)


def test_wsd_decay_never_starts_inside_the_warmup():
    assert decay_start(10, 0.9, warmup_steps=3) == 3
    assert [wsd_lr(s, 1.0, 0.0, 3, 10, 0.9, "linear") for s in (0, 2, 3)] == pytest.approx([1 / 3, 1.0, 1.0])


def _resumed(make, old_end: int, new_end: int, step: int):
    saved = make(old_end).state_dict()
    s = make(new_end)
    s.load_state_dict(saved)
    return s, s.resumed_at(step)


def test_extending_wsd_in_its_stable_phase_moves_the_decay_and_keeps_the_lr():
    def make(end):
        return WSDSchedule(1.0, 0.1, 2, end, 0.2, "1-sqrt")

    s, note = _resumed(make, 100, 200, 50)
    assert s.lr_at(50) == 1.0 and s.lr_at(159) == 1.0 and s.lr_at(161) < 1.0 and s.lr_at(200) == 0.1
    assert "max_steps 100 -> 200" in note and "decay now runs over steps 160-200" in note
    assert [s.lr_at(i) for i in range(200)] == [make(200).lr_at(i) for i in range(200)]  # the new run's curve
    same, none = _resumed(make, 100, 100, 50)
    assert none is None and same.anchor is None


@pytest.mark.parametrize("kind", ["cosine", "wsd"])
def test_extending_a_decaying_run_never_lifts_the_lr(kind):
    def make(end):
        return CosineSchedule(1.0, 0.1, 2, end) if kind == "cosine" else WSDSchedule(1.0, 0.1, 2, end, 0.2, "linear")

    old = make(100)
    s, note = _resumed(make, 100, 300, 90)
    assert s.lr_at(90) == pytest.approx(old.lr_at(90)) and "instead it decays" in note
    lrs = [s.lr_at(i) for i in range(90, 301)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False)) and lrs[-1] == 0.1  # down to min_lr at the new end
    again = make(300)  # the anchor is saved: a later resume of the extended run continues the same curve
    again.load_state_dict(s.state_dict())
    assert again.resumed_at(150) is None and again.lr_at(150) == s.lr_at(150)


def test_shortening_a_cosine_run_lowers_the_lr_and_says_so():
    def make(end):
        return CosineSchedule(1.0, 0.1, 2, end)

    s, note = _resumed(make, 100, 60, 50)
    assert s.lr_at(50) == pytest.approx(make(60).lr_at(50)) and s.lr_at(50) < make(100).lr_at(50)
    assert "follows the new curve" in note


def test_decay_from_hand_table():
    assert [decay_from(s, 4, 0.8, 0.0, 8, "linear") for s in (3, 4, 6, 8, 9)] == pytest.approx([0.8, 0.8, 0.4, 0, 0])
    assert decay_from(6, 4, 0.8, 0.0, 8, "cosine") == pytest.approx(0.4)


def test_docstring_examples_hold():
    import doctest

    from gpt2stream import plot, schedules

    for mod in (schedules, plot):
        result = doctest.testmod(mod)
        assert result.attempted and not result.failed, mod.__name__
