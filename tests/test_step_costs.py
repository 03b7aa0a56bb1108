"""What one training step costs in collectives and host reads, counted with hooks around torch.distributed's
functions, torch.cuda.synchronize and Tensor.item/tolist (bench/bench_step_costs.py) in real torchrun runs: a step
that does not log reads nothing and, under DDP, makes exactly one small all-reduce on the training backend (the
stop/data agreement); a logging step adds one all-reduce of the queued losses and one read."""

from __future__ import annotations

import sys

import pytest

from tests.test_train_common import ROOT


@pytest.mark.slow
def test_collectives_and_host_reads_per_step_at_world_sizes_1_and_2(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_step_costs as B

    one = {s["step"]: s["counts"] for s in B.measure(1, tmp_path, steps=5, log_every=4)}
    two = {s["step"]: s["counts"] for s in B.measure(2, tmp_path, steps=5, log_every=4)}
    assert sorted(one) == sorted(two) == [1, 2, 3, 4, 5]
    for quiet in (2, 3):
        assert one[quiet] == {}, one
        assert two[quiet] == {"training all_reduce": 1, "host read": 1}, two  # the agreement, read once
    assert one[4] == {"host read": 1}, one  # the queued losses and norms of steps 2-4, read together
    # + the data-pipeline totals every --log-every steps (telemetry: an object gather on the control group, which on
    # CPU is the default gloo group, and its read)
    assert two[4] == {"training all_reduce": 2, "host read": 3, "training all_gather_object": 1}, two
    assert not any("synchronize" in k for counts in (*one.values(), *two.values()) for k in counts)
