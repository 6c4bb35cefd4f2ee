import glob

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spinefeat import dataset as ds
from spinefeat import metric
from spinefeat.cli import app
from spinefeat.errors import DataError


def _train(rows):
    """rows: {study_id: {target: severity}}; other targets Normal/Mild."""
    df = pd.DataFrame({"study_id": list(rows), **{c: ["Normal/Mild"] * len(rows) for c in ds.TRAIN_COLUMNS}})
    for i, (sid, cells) in enumerate(rows.items()):
        for k, v in cells.items():
            df.loc[i, k] = v
    return df.set_index("study_id")


def _sub(study_ids, p=(1 / 3, 1 / 3, 1 / 3), overrides=None):
    rows = []
    for sid in study_ids:
        for t in ds.TARGETS:
            q = (overrides or {}).get((sid, t), p)
            rows.append({"row_id": f"{sid}_{t}", **dict(zip(ds.CLASS_COLUMNS, q))})
    return pd.DataFrame(rows)


def test_uniform_prediction_known_terms():
    train = _train({1: {"spinal_canal_stenosis_l4_l5": "Severe"}, 2: {}})
    res = metric.score(train, _sub([1, 2]))
    for t in metric.GROUPS:
        assert res[t] == pytest.approx(np.log(3))
    # binary term: study 1 severe (w=4, -log 1/3), study 2 not (w=1, -log 2/3)
    assert res["any_severe_spinal"] == pytest.approx((4 * np.log(3) + np.log(1.5)) / 5)


def test_hand_computed_weights_and_any_severe():
    # Study 1: spinal l4_l5 Severe (w=4), other 4 spinal levels Normal (w=1).
    train = _train({1: {"spinal_canal_stenosis_l4_l5": "Severe"}})
    over = {(1, "spinal_canal_stenosis_l4_l5"): (0.2, 0.2, 0.6)}
    res = metric.score(train, _sub([1], p=(0.8, 0.1, 0.1), overrides=over))
    spinal = (4 * -np.log(0.6) + 4 * -np.log(0.8)) / (4 + 4)
    assert res["spinal"] == pytest.approx(spinal)
    assert res["foraminal"] == pytest.approx(-np.log(0.8))
    # any severe: truth 1, prediction max severe = 0.6, weight 4 (single study -> weight cancels)
    assert res["any_severe_spinal"] == pytest.approx(-np.log(0.6))
    assert res["score"] == pytest.approx(np.mean([spinal, -np.log(0.8), -np.log(0.8), -np.log(0.6)]))


def test_rows_are_normalised_and_clipped():
    train = _train({1: {}})
    a = metric.score(train, _sub([1], p=(2, 1, 1)))
    b = metric.score(train, _sub([1], p=(0.5, 0.25, 0.25)))
    assert a["score"] == pytest.approx(b["score"])
    c = metric.score(train, _sub([1], p=(0, 0, 1)))      # a zero on the true class stays finite
    assert np.isfinite(c["score"]) and c["spinal"] == pytest.approx(-np.log(metric.EPS))


def test_empty_labels_are_not_scored_and_missing_predictions_fail():
    train = _train({1: {"left_subarticular_stenosis_l1_l2": None}})
    sub = _sub([1])
    assert metric.score(train, sub)["n_scored"] == 24
    with pytest.raises(DataError, match="1 scored rows have no prediction"):
        metric.score(train, sub[sub.row_id != "1_spinal_canal_stenosis_l1_l2"])


def test_peer_out_of_fold_cross_check(rsna, shared):
    train = ds.read_train(rsna / "train.csv")
    files = sorted(glob.glob(str(shared / "peers" / "oof_4th_place" / "*.csv")))
    avg = pd.concat([ds.read_submission(f) for f in files]).groupby("row_id", as_index=False)[
        list(ds.CLASS_COLUMNS)].mean()
    res = metric.score(train, avg, allow_missing=True)
    assert res["n_scored"] == 48757 and res["n_missing"] == 46
    assert round(res["score"], 3) == 0.388
    assert [round(res[t], 3) for t in metric.TERMS] == [0.259, 0.480, 0.545, 0.268]


def test_constant_baselines_cross_validated_match_domain(rsna):
    train = ds.read_train(rsna / "train.csv")
    folds = np.arange(len(train)) % 5
    scores = {}
    for weighted in (False, True):
        parts = []
        for k in range(5):
            fit, held = train[folds != k], train[folds == k]
            parts.append(metric.constant_submission(fit, held.index, weighted=weighted))
        scores[weighted] = metric.score(train, pd.concat(parts))["score"]
    assert scores[False] == pytest.approx(0.932, abs=0.003)
    assert scores[True] == pytest.approx(0.792, abs=0.003)


def test_evaluate_cli(tmp_path):
    train = _train({1: {"spinal_canal_stenosis_l4_l5": "Severe"}, 2: {}})
    train.reset_index().to_csv(tmp_path / "train.csv", index=False)
    _sub([1, 2]).to_csv(tmp_path / "sub.csv", index=False)
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "sub.csv"), "--labels", str(tmp_path / "train.csv"),
                                   "--by", "level", "--out", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    assert f"{np.log(3):.4f}" in res.output and "l4_l5" in res.output
    bad = _sub([1])
    bad.to_csv(tmp_path / "bad.csv", index=False)
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "bad.csv"), "--labels", str(tmp_path / "train.csv")])
    assert res.exit_code == 3 and "no prediction" in res.output
