"""bench/gpu_check.py on a machine without CUDA: exit 2 with one line saying so (the GPU run itself needs a GPU)."""

from __future__ import annotations

import subprocess
import sys

from tests.test_train_common import ROOT, env


def test_gpu_check_without_cuda_exits_2_with_one_line():
    # CUDA_VISIBLE_DEVICES="" hides every GPU, so this runs the same on a machine that has one
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")], capture_output=True, text=True,
                       env={**env(), "CUDA_VISIBLE_DEVICES": ""}, cwd=ROOT, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stdout == "" and p.stderr.count("\n") == 1 and "needs a CUDA GPU and none is visible" in p.stderr


def test_gpu_check_figures_table_from_known_numbers():
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_check

    fig = {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.13.0", "val_loss": 7.5, "hellaswag_acc_norm": 0.25,
           "hellaswag_n": 40, "sample_chars": 120,
           "ours": {"tok_s": 400000.0, "ms_per_step": 40.96, "mfu": 0.4, "peak_mem_gb": 18.0},
           "plain": {"tok_s": 390000.0, "ms_per_step": 42.0, "mfu": 0.39, "peak_mem_gb": 20.0},
           "resume": {"ok": True, "bit_identical": False, "max_weight_diff": 1e-4, "max_loss_diff": 2e-5,
                      "exact": False},
           "kvcache": {"cached_tok_s": 500.0, "recompute_tok_s": 100.0, "speedup": 5.0, "agreed_tokens": 200,
                       "new_tokens": 256}}
    out = gpu_check.table(fig)
    assert "tok/s" in out and "1.026" in out and "0.900" in out and "40.0%" in out
    assert "resume after kill -9 at step 15: ok" in out and "5.0x" in out and "first 200 of 256" in out
