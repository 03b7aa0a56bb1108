"""bench/gpu_check.py on a machine without CUDA: exit 2 with one line saying so (the GPU run itself needs a GPU); its
table from known figures; and the GPU image's constraint it relies on: training on local data imports nothing from
`datasets` (the image has none)."""

from __future__ import annotations

import os
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
           "resume": {"ok": True, "cut": 15, "bit_identical": False, "max_weight_diff": 1e-4, "max_loss_diff": 2e-5,
                      "exact": False},
           "kvcache": {"cached_tok_s": 500.0, "recompute_tok_s": 100.0, "speedup": 5.0, "agreed_tokens": 200,
                       "new_tokens": 256}}
    out = gpu_check.table(fig)
    assert "tok/s" in out and "1.026" in out and "0.900" in out and "40.0%" in out
    assert "resume after kill -9 at step 15: ok" in out and "5.0x" in out and "first 200 of 256" in out


BLOCK_DATASETS = """import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "datasets" or name.startswith("datasets."):
            with open(LOG, "a") as f:
                f.write(name + "\\n")
            raise ImportError(name + " is made unimportable for this test")
        return None
sys.meta_path.insert(0, _Block())
"""


def test_training_on_local_data_imports_nothing_from_datasets(tmp_path):
    from tests.test_train_common import TINY, make_jsonl

    shim = tmp_path / "shim"
    shim.mkdir()
    log = tmp_path / "imports.log"
    (shim / "sitecustomize.py").write_text(f"LOG = {str(log)!r}\n" + BLOCK_DATASETS)
    data = make_jsonl(tmp_path / "d.jsonl", n_docs=60)
    e = env()
    e["PYTHONPATH"] = str(shim) + os.pathsep + e["PYTHONPATH"]
    p = subprocess.run([sys.executable, str(ROOT / "run_train.py"), *TINY, "--data", str(data), "--out-dir",
                        str(tmp_path / "run"), "--max-steps", "2", "--eval-every", "2", "--sample-every", "2",
                        "--sample-tokens", "4", "--device", "cpu"], capture_output=True, text=True, env=e, cwd=ROOT,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "val loss" in p.stdout and "sample @ step 2" in p.stdout
    assert not log.exists(), log.read_text()  # not even an attempt (a caught ImportError would hide one)
    probe = subprocess.run([sys.executable, "-c", "import datasets"], capture_output=True, text=True, env=e)
    assert probe.returncode != 0 and log.exists()  # the shim really blocks it
