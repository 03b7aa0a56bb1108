"""The MFU reference: datasheet entries matched by the longest name, and a measurement for anything else."""

from __future__ import annotations

import math

import pytest
import torch

from gpt2stream.mfu import GPU_PEAKS, Peak, datasheet_peak, format_mfu, match_gpu, measure_matmul_flops, peak_flops


@pytest.mark.parametrize("name,key", [
    ("NVIDIA H100 NVL", "H100 NVL"), ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA L40", "L40"), ("NVIDIA L40S", "L40S"), ("NVIDIA L4", "L4"), ("NVIDIA H200", "H200"),
    ("NVIDIA H200 NVL", "H200 NVL"),
    ("NVIDIA H20", "H20"), ("NVIDIA H800", "H800"), ("NVIDIA A800-SXM4-80GB", "A800"),
    ("NVIDIA A100-SXM4-40GB", "A100"), ("NVIDIA A10G", "A10G"), ("NVIDIA A10", "A10"), ("NVIDIA B200", "B200"),
    ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada"), ("NVIDIA RTX A6000", "RTX A6000"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"), ("Tesla V100-SXM2-16GB", "V100"), ("Tesla T4", "T4"),
    ("AMD Instinct MI300X", "MI300X"),
])
def test_longest_whole_name_wins(name, key):
    assert match_gpu(name) == key


def test_unlisted_devices_match_nothing():
    for name in ("NVIDIA GeForce GTX 1080", "Some Future GPU", "NVIDIA H1000"):
        assert match_gpu(name) is None and datasheet_peak(name, torch.bfloat16) is None


def test_datasheet_figures_and_the_entry_used():
    p = datasheet_peak("NVIDIA H100 NVL", torch.bfloat16)
    assert p.flops == 835e12 and "'H100 NVL'" in p.source and p.known
    assert datasheet_peak("NVIDIA L40", torch.bfloat16).flops == 181e12  # not the L4's 121
    assert datasheet_peak("Tesla V100-SXM2-16GB", torch.float32).flops == pytest.approx(15.7e12)
    assert all(half >= fp32 > 0 for half, fp32 in GPU_PEAKS.values())


def test_cpu_peak_is_measured_and_unknown_is_na():
    p = peak_flops(torch.device("cpu"), torch.float32)
    assert p.known and "measured matmul" in p.source
    assert 0 < measure_matmul_flops(torch.device("cpu"), torch.float32, size=128, rounds=1, seconds=0.01)
    na = Peak(math.nan, "MFU n/a")
    assert not na.known and format_mfu(0.1 / na.flops).strip() == "n/a" and format_mfu(0.4321) == "43.21%"
