"""Multi-node start-up: the gloo control group takes the interface that reaches MASTER_ADDR (or GLOO_SOCKET_IFNAME),
fails in one line naming it, and two torchrun agents (--nnodes=2, c10d rendezvous on loopback) train exactly what
one node with the same number of processes trains, with the same Hub requests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.hubserver import DEFAULT_REPO, HubServer
from tests.test_train_common import ROOT, RUN_TRAIN, TINY, env, run, train_lines


def test_gloo_interface_is_the_one_that_reaches_master_addr():
    from gpt2stream import netif

    assert netif.choose_gloo_interface({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})[0] == "lo"
    assert netif.choose_gloo_interface({"GLOO_SOCKET_IFNAME": "ib0", "MASTER_ADDR": "127.0.0.1"}) == (
        "ib0", "GLOO_SOCKET_IFNAME")
    e = {"MASTER_ADDR": "localhost"}
    assert "interface lo" in netif.set_gloo_interface(e) and e["GLOO_SOCKET_IFNAME"] == "lo"
    assert netif.interface_with("203.0.113.254") is None  # an address no interface holds


def test_a_group_that_does_not_connect_ends_in_one_line():
    script = ("import time\nfrom gpt2stream import netif\n"
              "line = netif.failure_line('did not connect within 1 s', 'interface lo from x', "
              "{'MASTER_ADDR': '10.9.9.9', 'MASTER_PORT': '29500'})\n"
              "with netif.connect_deadline(line, 0.5):\n    time.sleep(30)\n")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env(), timeout=60)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: the gloo control group did not connect")
    assert "GLOO_SOCKET_IFNAME" in p.stderr and "10.9.9.9:29500" in p.stderr


@pytest.mark.slow
def test_a_bad_gloo_socket_ifname_is_one_line(tmp_path):
    from tests.test_train_common import make_jsonl

    data = make_jsonl(tmp_path / "d.jsonl", n_docs=40)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", RUN_TRAIN, *TINY,
           "--data", str(data), "--out-dir", str(tmp_path / "run"), "--device", "cpu"]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**env(), "GLOO_SOCKET_IFNAME": "nonexist0"},
                       cwd=ROOT, timeout=120)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert p.returncode != 0 and lines and all(ln == lines[0] for ln in lines), p.stderr[-2000:]
    assert "GLOO_SOCKET_IFNAME" in lines[0] and "nonexist0" in lines[0] and "MASTER_ADDR" in lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(args: list[str], port: int) -> None:
    """Two torchrun agents, one process each, meeting through c10d rendezvous on 127.0.0.1:port (as two nodes)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
           f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=multinode-test", "--max-restarts=0", RUN_TRAIN, *args]
    agents = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
              for _ in range(2)]
    outs = [a.communicate(timeout=400) for a in agents]
    for a, (out, err) in zip(agents, outs, strict=True):
        assert a.returncode == 0, f"exit {a.returncode}\n{out[-2000:]}\n{err[-4000:]}"


@pytest.mark.slow
def test_two_torchrun_agents_train_like_one_node(hub_repo, tmp_path, monkeypatch):
    args = [*TINY, "--data", DEFAULT_REPO, "--data-config", "sample-10BT", "--max-steps", "4", "--eval-every", "2",
            "--save-every", "4", "--num-workers", "0", "--device", "cpu"]
    losses, counts = {}, {}
    for name in ("one_node", "two_nodes"):
        with HubServer({DEFAULT_REPO: hub_repo.root}) as server:
            monkeypatch.setenv("HF_ENDPOINT", server.url)
            out = ["--out-dir", str(tmp_path / name)]
            if name == "one_node":
                run([*args, *out], nproc=2, timeout=400)
            else:
                _two_nodes([*args, *out], _free_port())
            counts[name] = server.counts()
        losses[name] = train_lines(tmp_path / name)
    assert len(losses["one_node"]) == 4 + 2 and losses["two_nodes"] == losses["one_node"]
    assert counts["two_nodes"] == counts["one_node"], counts
    assert os.path.isfile(tmp_path / "two_nodes" / "checkpoints" / "step_00000004.pt")
