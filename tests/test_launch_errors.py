"""Bad input under ``torchrun --nproc_per_node=2``: the one ``error:`` line is said once for the job (not once per
rank), an error on rank 1 alone is still said, and torchrun's closing "Root Cause" shows the line. Real torchrun,
gloo, CPU; every case fails before training, in seconds."""

from __future__ import annotations

import json
import subprocess
import textwrap

from gpt2stream.launcher import report_error, write_error_file
from tests.test_train_common import ROOT, RUN_TRAIN, env, torchrun


def _torchrun(args: list[str], **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*torchrun(2), *args], capture_output=True, text=True, env={**env(), **extra_env},
                          timeout=180, cwd=ROOT)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_an_error_every_rank_has_is_said_once_and_is_torchruns_root_cause():
    p = _torchrun([RUN_TRAIN, "--preset", "tiny", "--max-steps", "abc"])
    assert p.returncode != 0
    line = "error: --max-steps: 'abc' is not a valid int"
    assert _error_lines(p.stderr) == [line], p.stderr[-3000:]
    root = p.stderr.split("Root Cause", 1)[1]
    assert f"traceback : {line}" in root, p.stderr[-3000:]


def test_an_error_on_rank_1_alone_is_still_said(tmp_path):
    script = tmp_path / "only_rank1.py"
    script.write_text(textwrap.dedent("""
        import os, time
        from gpt2stream.cli import run_main
        from gpt2stream.distributed import init_distributed
        from gpt2stream.errors import UserError

        def main(argv):
            if os.environ["RANK"] == "1":
                with open(os.environ["FAILED_AT"], "w") as f:
                    f.write(repr(time.time()))
                raise UserError("data file /mnt/node2/x.parquet does not exist")
            init_distributed("cpu", timeout_s=60)  # rank 0 is fine: it waits for rank 1 in the process group

        run_main(main)
    """))
    p = _torchrun([str(script)], FAILED_AT=str(tmp_path / "failed_at"))
    assert p.returncode != 0 and (tmp_path / "failed_at").is_file()
    line = "error: [rank 1] data file /mnt/node2/x.parquet does not exist"
    assert _error_lines(p.stderr) == [line], p.stderr[-3000:]
    assert f"traceback : {line}" in p.stderr.split("Root Cause", 1)[1]


def test_outside_torchrun_the_line_is_printed(capsys):
    report_error("bad flag", env={})
    assert capsys.readouterr().err == "error: bad flag\n"
    # a rank with no agent store cannot know what rank 0 said: it speaks, with its rank
    report_error("bad flag", env={"WORLD_SIZE": "2", "RANK": "1"}, wait_s=0.1)
    assert capsys.readouterr().err == "error: [rank 1] bad flag\n"


def test_error_file_keeps_the_first_line_in_torchruns_format(tmp_path):
    path = tmp_path / "error.json"
    write_error_file("error: first", {"TORCHELASTIC_ERROR_FILE": str(path)})
    write_error_file("error: second", {"TORCHELASTIC_ERROR_FILE": str(path)})
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    failure = ProcessFailure(local_rank=0, pid=1, exitcode=2, error_file=str(path))
    assert json.loads(path.read_text())["message"]["message"] == "error: first"
    assert failure.message["message"] == "error: first" and failure.timestamp > 0
