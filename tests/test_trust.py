"""Models load only from checked LightGBM text + JSON; outputs are written whole or not at all."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from spinefeat import io, models
from spinefeat.cli import app
from spinefeat.errors import ModelError, OutputError, SpinefeatError, UsageError


class _Payload:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_in_the_models_folder_is_never_loaded(trained, cohort, tmp_path, monkeypatch):
    m = tmp_path / "m"
    shutil.copytree(trained, m, ignore=shutil.ignore_patterns("*.cache"))
    marker = tmp_path / "pickle_was_loaded"
    for name in ("model.pkl", "spinal.pkl", "localizer.pkl", "graders.pickle", "model.joblib"):
        (m / name).write_bytes(pickle.dumps(_Payload(marker)))

    def refuse(*a, **k):
        raise AssertionError("a pickle loader was called")
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    import joblib
    monkeypatch.setattr(joblib, "load", refuse)
    res = CliRunner().invoke(app, ["predict", str(cohort), "--models", str(m), "--out", str(tmp_path / "s.csv")])
    assert res.exit_code == 0, res.output
    assert not marker.exists()
    assert len(pd.read_csv(tmp_path / "s.csv")) == 2 * 25


def test_manifest_hashes_every_file_it_needs(trained):
    man = json.loads((trained / "manifest.json").read_text())
    graders = [e for i in man["models"].values() for e in (i if isinstance(i, list) else [i])]   # a bag: a list
    needed = {i["file"] for i in graders} | {i["file"] for i in man["files"].values()}
    bags = {f"{g}_seed{s}.txt" if len(seeds) > 1 else f"{g}.txt"          # one file per LightGBM seed
            for g, seeds in man["lightgbm_seeds"].items() for s in seeds}
    assert len(bags) == sum(models.BAG.get(g, 1) for g in models.MODEL_GROUPS) and "spinal.txt" in bags
    assert {"localizer.txt", "localizer.json"} | bags <= needed
    for info in [*graders, *man["files"].values()]:
        assert (trained / info["file"]).stat().st_size == info["bytes"]
    assert "seconds" not in man["cv"] and "seconds" in json.loads((trained / "timings.json").read_text())


@pytest.fixture(scope="module")
def model_text(trained) -> bytes:
    return (trained / "localizer.txt").read_bytes()


@settings(max_examples=80, deadline=None)
@given(frac=st.floats(0.0, 0.999))
def test_every_truncation_of_a_model_is_refused_before_lightgbm(model_text, tmp_path_factory, frac):
    cut = int(len(model_text) * frac)
    end = model_text.rfind(b"end of parameters")
    path = tmp_path_factory.mktemp("cut") / "localizer.txt"
    path.write_bytes(model_text[:cut])
    if cut > end + len(b"end of parameters"):
        models.check_lightgbm_text(path)            # only the trailing lines are gone: still complete
    else:
        with pytest.raises(ModelError, match="not a complete LightGBM text model"):
            models.check_lightgbm_text(path)


def test_truncated_localizer_is_an_error_not_a_segfault(trained, tmp_path):
    """In a child process: before the guard LightGBM crashed the interpreter (exit 139) on this file."""
    import subprocess
    import sys

    m = tmp_path / "m"
    shutil.copytree(trained, m, ignore=shutil.ignore_patterns("*.cache", "*.parquet"))
    txt = (m / "localizer.txt").read_bytes()
    (m / "localizer.txt").write_bytes(txt[: len(txt) // 2])
    man = json.loads((m / "manifest.json").read_text())
    man["files"].pop("localizer.txt")      # even without the manifest's hash and size, the parse is guarded
    man["files"]["localizer.txt"] = {"file": "localizer.txt", "sha256": models._sha(m / "localizer.txt")}
    (m / "manifest.json").write_text(json.dumps(man))
    code = f"from spinefeat.localize import Localizer\nLocalizer.load({str(m)!r})"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert r.returncode == 1 and "not a complete LightGBM text model" in r.stderr, (r.returncode, r.stderr[-500:])


def test_atomic_write_on_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "t.csv"
    target.write_text("old\n")
    real_replace = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match="disk is full"):
        io.write_csv(target, pd.DataFrame({"a": [1, 2]}))
    monkeypatch.setattr(os, "replace", real_replace)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_unwritable_output_is_refused_before_the_work(tmp_path, monkeypatch):
    real = Path.write_bytes

    def denied(self, data):
        if self.name.startswith(".spinefeat-probe"):
            raise OSError(errno.EACCES, "Permission denied")
        return real(self, data)
    monkeypatch.setattr(Path, "write_bytes", denied)      # root ignores permission bits: simulate a read-only folder
    with pytest.raises(UsageError, match="permission denied"):
        io.check_output_file(tmp_path / "ro" / "x.csv")
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        io.check_output_dir(tmp_path / "f" / "sub")
    with pytest.raises(UsageError, match="it is a folder"):
        io.check_output_file(tmp_path)


def test_json_never_holds_nan(tmp_path):
    io.write_json(tmp_path / "a.json", {"a": float("nan"), "b": [np.float64("inf"), 1.5], "c": np.int64(3)})
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": None, "b": [None, 1.5], "c": 3}


def test_evaluate_writes_null_for_a_term_without_scored_rows(cohort, tmp_path):
    train = pd.read_csv(cohort / "train.csv")
    for c in train.columns:
        if c.startswith("spinal"):
            train[c] = np.nan          # no spinal label: the spinal and any_severe terms have nothing to score
    labels = tmp_path / "train.csv"
    train.to_csv(labels, index=False)
    sub = pd.read_csv(cohort / "sample_submission.csv")
    sub = sub[sub.row_id.str.split("_").str[0].astype(int).isin(train.study_id)]
    if sub.empty:
        from spinefeat.dataset import TARGETS
        sub = pd.DataFrame([{"row_id": f"{s}_{t}", "normal_mild": 0.6, "moderate": 0.3, "severe": 0.1}
                            for s in train.study_id for t in TARGETS])
    sub.to_csv(tmp_path / "sub.csv", index=False)
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "sub.csv"), "--labels", str(labels), "--out",
                                   str(tmp_path / "m.json"), "--allow-missing"])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text
    out = json.loads(text)
    assert out["spinal"] is None and isinstance(out["foraminal"], float)


def test_replace_dir_keeps_old_or_new_whole(tmp_path, monkeypatch):
    final = tmp_path / "m"
    final.mkdir()
    (final / "a").write_text("old")
    staged = io.staging_dir(final)
    (staged / "a").write_text("new")
    calls = []
    real = os.replace

    def killed_between(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt       # as if killed after the old folder was moved aside
        return real(src, dst)
    monkeypatch.setattr(os, "replace", killed_between)
    with pytest.raises(KeyboardInterrupt):
        io.replace_dir(staged, final)
    monkeypatch.setattr(os, "replace", real)
    assert not final.exists()
    io.recover_dir(final)                  # what the next training run does first
    assert (final / "a").read_text() == "old"
    io.replace_dir(staged, final)
    assert (final / "a").read_text() == "new" and not list(tmp_path.glob(".m.*"))


def test_writes_never_escape_the_output_folder(tmp_path):
    assert io.inside(tmp_path, "study_1.html") == (tmp_path / "study_1.html").resolve()
    for bad in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(OutputError, match="outside"):
            io.inside(tmp_path, bad)


def test_spinefeat_errors_are_one_family():
    assert all(issubclass(e, SpinefeatError) for e in (ModelError, OutputError, UsageError))
