"""The trainer through the Hub's limits (torchrun, the real entry point, the test server's CDN and quotas): a run
through a tight rate limit trains exactly as an unlimited one, and a resume after the dataset's main moved trains
on the revision the run started on."""

from __future__ import annotations

import json
import time

import pytest

from tests.hubserver import DEFAULT_REPO, HubServer, build_fineweb_repo
from tests.test_train_common import TINY, run, run_and_kill_after, train_lines

ARGS = [*TINY, "--data", DEFAULT_REPO, "--data-config", "sample-10BT", "--eval-every", "3", "--save-every", "3"]


@pytest.mark.slow
def test_torchrun_through_a_tight_quota_matches_an_unlimited_run(hub_repo, tmp_path, monkeypatch):
    losses, counts = {}, {}
    # url_ttl=30 (< the client's 60 s safety margin): every read resolves again, so training itself meets the quota
    for name, limits in (("free", None), ("tight", {"resolvers": (2, 4), "api": (1, 4)})):
        with HubServer({DEFAULT_REPO: hub_repo.root}, redirect_data=True, url_ttl=30, rate_limits=limits) as server:
            monkeypatch.setenv("HF_ENDPOINT", server.url)
            t0 = time.monotonic()
            p = run([*ARGS, "--out-dir", str(tmp_path / name), "--max-steps", "6", "--num-workers", "1",
                     "--max-retries", "1"], nproc=2, timeout=400)
            elapsed = time.monotonic() - t0
            counts[name] = server.counts()
        losses[name] = train_lines(tmp_path / name)
        if limits:
            waits = [ln for ln in p.stderr.splitlines() if "rate limited (bucket" in ln]
            assert counts[name]["429"] >= 2 and len(waits) >= 2, (counts, p.stderr[-3000:])
            readers = 2 * 2  # 2 ranks x (the rank's own process + 1 DataLoader worker)
            assert counts[name]["429"] <= readers * (elapsed / 4 + 1), (counts, elapsed)
            assert "retry 1/1" not in p.stderr  # a rate-limit wait is not a failure: --max-retries 1 is untouched
    assert losses["tight"] == losses["free"] and len(losses["free"]) == 6 + 2  # 6 steps, 2 evaluations


@pytest.mark.slow
def test_resume_after_main_moved_trains_on_the_pinned_revision(hub_repo, tmp_path, monkeypatch):
    moved = build_fineweb_repo(tmp_path / "moved", seed=5)
    args = [*ARGS, "--max-steps", "6", "--num-workers", "1"]
    with HubServer({DEFAULT_REPO: hub_repo.root}, redirect_data=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        original = server.sha()
        run([*args, "--out-dir", str(tmp_path / "straight")])
        run_and_kill_after([*args, "--out-dir", str(tmp_path / "cut")], tmp_path / "cut/checkpoints/step_00000003.pt")
        server.update(DEFAULT_REPO, moved.root)  # main now has other content
        server.reset_counters()
        p = run(["--out-dir", str(tmp_path / "cut"), "--resume"])
        assert "resumed from" in p.stdout
        assert not [r for r in server.requests if "/tree/" in r.path], "a resume needs no listing"
        server.drop_revision(DEFAULT_REPO, original)
        gone = run(["--out-dir", str(tmp_path / "cut"), "--resume", "--max-steps", "9"], check=False)
    assert train_lines(tmp_path / "cut") == train_lines(tmp_path / "straight")
    assert moved.ids() != hub_repo.ids()  # the new main really is other data
    assert json.loads((tmp_path / "cut/data-manifest.json").read_text())["revision"] == original
    assert gone.returncode == 2 and "Traceback" not in gone.stderr
    err = [ln for ln in gone.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and f"no longer has revision {original}, the one this run is pinned to" in err[0], gone.stderr
