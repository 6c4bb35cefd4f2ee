"""Killed runs lose nothing: SIGKILL in the middle of `extract` and of `train`, then a rerun, gives what an
uninterrupted run gives (timing fields aside); a killed `train` leaves the old models folder intact; Ctrl-C
stops the worker processes too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from spinefeat import models

REPO = Path(__file__).resolve().parents[1]


def cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "cli.py", *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(cond, proc, timeout_s=600.0):
    t0 = time.time()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"finished before it could be killed: {proc.stdout.read().decode()[-800:]}")
        if time.time() - t0 > timeout_s:
            raise AssertionError("timed out")
        time.sleep(0.05)


def kill_group(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def finish(proc) -> str:
    out = proc.communicate(timeout=1200)[0].decode()
    assert proc.returncode == 0, out[-1500:]
    return out


def same_table(a: Path, b: Path):
    drop = lambda df: df.drop(columns=[c for c in df.columns if c.endswith("_seconds")])   # noqa: E731
    pd.testing.assert_frame_equal(drop(pd.read_parquet(a)), drop(pd.read_parquet(b)))


def test_extract_killed_then_rerun_gives_the_uninterrupted_table(cohort, tmp_path):
    whole = tmp_path / "whole.parquet"
    finish(cli("extract", cohort, "--out", whole))
    out, cache = tmp_path / "killed.parquet", tmp_path / "killed.cache"
    proc = cli("extract", cohort, "--out", out, "--cache", cache)
    wait_for(lambda: len(list(cache.glob("*.parquet"))) >= 2, proc)
    kill_group(proc)
    assert not out.exists() and not list(cache.glob(".*.tmp"))[1:]      # at most the one being written
    finish(cli("extract", cohort, "--out", out, "--cache", cache))
    same_table(out, whole)


FILES = ("manifest.json", "localizer.txt", "localizer.json", "oof.csv", "cv.json")


def grader_files(folder: Path) -> list[str]:
    """The graders' model files a manifest lists (a bag of seeds: several per grader)."""
    infos = json.loads((folder / "manifest.json").read_text())["models"].values()
    return [e["file"] for i in infos for e in (i if isinstance(i, list) else [i])]


def test_train_killed_keeps_the_old_folder_and_a_rerun_gives_the_uninterrupted_models(cohort, trained, tmp_path):
    out = tmp_path / "m"
    shutil.copytree(trained, out, ignore=shutil.ignore_patterns("*.cache"))
    man = json.loads((out / "manifest.json").read_text())
    man["cv"]["note"] = "the old run"               # an old folder whose files differ from the new run's
    (out / "manifest.json").write_text(json.dumps(man))
    old = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    proc = cli("train", cohort, "--out", out, "--folds", 3, "--jobs", 2)
    # Killed once the new localiser is written, before the graders: the case that mixed them.
    wait_for(lambda: any(p.is_dir() and (p / "localizer.txt").is_file()
                         for p in tmp_path.glob(".m.partial-*")), proc)
    kill_group(proc)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == old
    models.load(out)
    finish(cli("train", cohort, "--out", out, "--folds", 3, "--jobs", 2))
    assert len(grader_files(trained)) >= 3
    for name in (*FILES, *grader_files(trained)):
        assert (out / name).read_bytes() == (trained / name).read_bytes(), name
    same_table(out / "train_features.parquet", trained / "train_features.parquet")
    assert not list(tmp_path.glob(".m.*"))


def _children(pid: int) -> set[int]:
    out = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.add(int(p.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
def test_ctrl_c_stops_the_worker_processes(cohort, tmp_path):
    # As from a terminal: a job started in the background of a non-interactive shell (as CI may run the suite)
    # inherits SIGINT ignored, and Python keeps an ignored SIGINT ignored.
    proc = subprocess.Popen([sys.executable, "cli.py", "extract", str(cohort), "--out", str(tmp_path / "f.parquet"),
                             "--jobs", "2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    workers: set[int] = set()

    def started():
        workers.update(_children(proc.pid))
        return len(workers) >= 2
    wait_for(started, proc)
    time.sleep(1.0)
    workers.update(_children(proc.pid))
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, out[-800:]
    assert "interrupted" in out and "Traceback" not in out
    t0 = time.time()
    while any(_alive(w) for w in workers) and time.time() - t0 < 20:
        time.sleep(0.2)
    assert not [w for w in workers if _alive(w)]
