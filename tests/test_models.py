import hashlib
import json
import shutil

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spinefeat import models
from spinefeat.cli import app
from spinefeat.dataset import CONDITIONS, LEVELS, SEVERITIES, TARGETS, TRAIN_COLUMNS
from spinefeat.errors import SpinefeatError


def test_temperature_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (4000, 3))
    p = models._softmax(logits)
    y = np.array([rng.choice(3, p=pi) for pi in p])
    assert models.fit_temperature(y, logits * 2.0) == pytest.approx(2.0, rel=0.1)


def test_temperature_search_is_bounded_and_says_when_it_sits_on_a_bound(caplog):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.5, (3000, 3))
    y = np.array([rng.choice(3, p=pi) for pi in models._softmax(logits)])
    with caplog.at_level("WARNING", logger="spinefeat.models"):
        t = models.fit_temperature(y, logits * 50.0)          # the true temperature, 50, is outside the search
    assert t == pytest.approx(models.TEMPERATURE_BOUNDS[1], rel=1e-3)
    assert "bound" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="spinefeat.models"):
        assert models.fit_temperature(y, logits * 1.3) == pytest.approx(1.3, rel=0.1)
    assert caplog.text == ""


def _table(n_studies=40, seed=0):
    """A feature table with one informative column and its wide labels (severity drawn 70/20/10 %)."""
    rng = np.random.default_rng(seed)
    rows, labels = [], {}
    for i in range(n_studies):
        sid = 1000 + i
        labels[sid] = {}
        for cond in CONDITIONS:
            for li, lv in enumerate(LEVELS):
                sev = int(rng.choice(3, p=[0.7, 0.2, 0.1]))
                labels[sid][f"{cond}_{lv}"] = SEVERITIES[sev]
                rows.append({"study_id": sid, "condition": cond, "level": lv, "row_id": f"{sid}_{cond}_{lv}",
                             "split": "train", "signal": sev + rng.normal(0, 0.8), "noise": rng.normal(),
                             "context_level_index": float(li),
                             "context_side": 1.0 if cond.startswith("left") else -1.0 if cond.startswith("right") else 0.0})
    train = pd.DataFrame.from_dict(labels, orient="index")[list(TRAIN_COLUMNS)]
    train.index.name = "study_id"
    return pd.DataFrame(rows), train


def test_a_folds_calibrated_predictions_do_not_depend_on_its_own_labels():
    """Nested calibration: the temperature and sharpening applied to a fold are fitted without it, so
    relabelling the fold's studies leaves its out-of-fold probabilities exactly as they were."""
    feats, train = _table()
    fold_of = {sid: i % 4 for i, sid in enumerate(sorted(train.index))}
    a = models.fit(feats, train, folds=4, fold_of=fold_of)
    flipped = train.copy()
    fold0 = [s for s, k in fold_of.items() if k == 0]
    flipped.loc[fold0] = flipped.loc[fold0].replace({"Normal/Mild": "Severe", "Severe": "Normal/Mild"})
    b = models.fit(feats, flipped, folds=4, fold_of=fold_of)
    cols = ["normal_mild", "moderate", "severe"]
    in0 = a["oof"]["fold"] == 0
    assert in0.sum() == 25 * len(fold0)
    pd.testing.assert_frame_equal(a["oof"][in0].reset_index(drop=True), b["oof"][in0].reset_index(drop=True))
    assert not np.allclose(a["oof"].loc[~in0, cols], b["oof"].loc[~in0, cols])   # the other folds did learn from them
    m = a["cv"]["method"]
    assert "nested" in m["calibration"] and len(m["fold_beta"]) == 4
    assert all(len(t) == 4 for t in m["fold_temperature"].values())


def test_folds_spread_the_studies_with_a_severe_grade():
    feats, train = _table(n_studies=50, seed=2)
    worst = models.worst_grades(train)
    res = models.fit(feats, train, folds=5, seed=3)
    fold = res["oof"].assign(study_id=res["oof"].row_id.str.split("_").str[0].astype(int)) \
        .groupby("study_id").fold.first()
    for grade in (0, 1, 2):
        counts = np.bincount(fold[worst.reindex(fold.index) == grade], minlength=5)
        if counts.sum() >= 5:
            assert counts.max() - counts.min() <= 1, (grade, counts)
    assert "StratifiedGroupKFold" in res["cv"]["method"]["folds"]


def test_copies_of_a_study_stay_on_one_side_of_every_split():
    """``groups``: the copies of one study (the benchmark's bootstrap) share their fold and their side of each
    fold's early-stopping split; without it they are scattered (the leak that kept every fit from stopping)."""
    _, train = _table(n_studies=30, seed=6)
    copies = pd.concat([train.rename(index=lambda s, c=c: s * 10 + c) for c in range(4)])
    groups = {int(s): int(s) // 10 for s in copies.index}
    worst = models.worst_grades(copies)
    for g in (groups, None):
        fold_of = models.stratified_folds(copies.index, worst, 5, 0, groups=g)
        held = models.early_stopping_studies(sorted(copies.index), fold_of, worst, 5, 0, groups=g)
        sides = pd.DataFrame({"group": [groups[s] for s in fold_of], "fold": list(fold_of.values())})
        for k in range(5):
            sides[f"stops_{k}"] = [s in set(held[k]) for s in fold_of]
        together = (sides.groupby("group").nunique() == 1).all().all()
        assert together == (g is not None)
    assert len(set(fold_of.values())) == 5 and all(len(h) for h in held.values())


def test_training_rows_are_the_merge_of_the_labels_and_the_chunked_fingerprint_the_whole_ones():
    """:func:`models.training_rows` (positions from a join on the keys alone, fit's route that copies no feature
    values) gives the frame ``features.merge`` of the scored labels gives, in its order, also a part of it or some
    columns; the fingerprint hashed a chunk at a time is the whole frame's."""
    feats, train = _table(n_studies=12, seed=3)
    feats = feats.sample(frac=1.0, random_state=1).reset_index(drop=True)            # not in label order
    feats = pd.concat([feats, feats.iloc[:7].assign(study_id=99)], ignore_index=True)  # rows without a label
    feats["count"] = np.arange(len(feats))                                            # an int column too
    train = train.copy()
    train.iloc[::3, 2] = np.nan                                                       # unscored cells
    lab = models.labels_long(train)
    lab = lab[lab["severity"] >= 0][["study_id", "condition", "level", "severity"]]
    merged = feats.merge(lab, on=["study_id", "condition", "level"], how="inner")
    assert 0 < len(merged) < len(feats)
    rows = models.training_rows(feats, train)
    pd.testing.assert_frame_equal(rows, merged)
    pd.testing.assert_frame_equal(models.training_rows(feats, train, part=slice(5, 40)),
                                  merged.iloc[5:40].reset_index(drop=True))
    pd.testing.assert_frame_equal(models.training_rows(feats, train, columns=models.ROW_KEYS),
                                  merged[["study_id", "condition", "level", "row_id", "severity"]])
    whole = models.fingerprint_frame(merged)
    for chunk in (1, 50, 10_000):
        assert models.fingerprint_frame(models.training_rows(feats, train, part=slice(i, i + chunk))
                                        for i in range(0, len(merged), chunk)) == whole
    assert models.fingerprint_frame(merged.assign(noise=merged["noise"] + 1)) != whole


def test_float32_block_is_the_rows_columns_as_float32_with_nan_where_a_column_is_missing(monkeypatch):
    """fit's feature arrays (:func:`models.float32_block`, filled a few columns at a time) are the rows and columns
    pandas' reindex gives, cast to float32, an int column and a column the frame lacks (NaN) among them."""
    rng = np.random.default_rng(0)
    feats = pd.DataFrame(rng.normal(size=(40, 9)), columns=[f"f{i}" for i in range(9)]).assign(
        count=np.arange(40), condition="x")
    positions = rng.permutation(40)[:25]
    cols = ["f3", "count", "absent", "f0", "f8", "f1", "f2"]
    want = feats.iloc[positions].reindex(columns=cols).to_numpy(np.float32)
    monkeypatch.setattr(models, "BLOCK_COLUMNS", 3)          # blocks that split the columns unevenly
    got = models.float32_block(feats, positions, cols)
    assert got.dtype == np.float32 and np.isnan(got[:, 2]).all()
    np.testing.assert_array_equal(got, want)


def test_sharpening_touches_only_the_largest_spinal_severe_row():
    rows = [{"row_id": f"7_spinal_canal_stenosis_{lv}", "normal_mild": 0.6, "moderate": 0.2, "severe": s}
            for lv, s in zip(("l1_l2", "l2_l3"), (0.2, 0.4))]
    rows[1]["normal_mild"] = 0.4
    sub = pd.DataFrame(rows)
    out = models.sharpen_any_severe(sub, np.log(3))
    assert out.loc[0].tolist() == sub.loc[0].tolist()
    assert out.loc[1, "severe"] == pytest.approx(2 / 3)          # odds 0.4/0.6 * 3 = 2 -> p = 2/3
    assert out.loc[1, "normal_mild"] / out.loc[1, "moderate"] == pytest.approx(0.4 / 0.2)   # others keep their ratio
    assert out.loc[1, ["normal_mild", "moderate", "severe"]].sum() == pytest.approx(1.0)


def test_sharpening_loss_is_the_metric_on_the_sharpened_submission():
    """The array form of the sharpening's loss gives the metric's own score of the sharpened table (the
    metric module's route: sharpen_any_severe, then score_joined), ties and a study's equal rows included."""
    from spinefeat.dataset import LEVELS
    from spinefeat.metric import score_joined

    rng = np.random.default_rng(5)
    rows = pd.DataFrame([{"study_id": s, "condition": "spinal_canal_stenosis", "level": lv,
                          "row_id": f"{s}_spinal_canal_stenosis_{lv}", "severity": int(rng.choice(3, p=[.6, .25, .15]))}
                         for s in (31, 4, 17, 9, 22, 8) for lv in LEVELS]).sample(frac=1, random_state=1)
    proba = models._softmax(rng.normal(0, 1.5, (len(rows), 3)))
    proba[rows["study_id"].to_numpy() == 17] = [0.5, 0.3, 0.2]          # five rows tied for the largest severe
    proba[:3, 2] = 0.999                                                # near 1: the clipping counts
    proba /= proba.sum(axis=1, keepdims=True)
    loss = models.sharpening_loss(rows, proba)
    joined = rows.reset_index(drop=True).assign(group="spinal")
    for beta in (0.0, 0.3, 1.7, 3.0):
        sharp = models.sharpen_any_severe(models.to_submission(rows, proba), beta)
        want = score_joined(joined.assign(**{c: sharp[c].to_numpy() for c in ("normal_mild", "moderate", "severe")}))
        assert loss(beta) == pytest.approx(want["score"], rel=1e-12, abs=1e-12)
    assert loss(1.7) != pytest.approx(loss(0.0))


def test_graders_are_the_same_whatever_the_number_of_parallel_fits():
    """Each fit runs on one LightGBM thread, ``jobs`` of them at a time: jobs changes the speed, not the models."""
    feats, train = _table(n_studies=30, seed=4)
    a, b = models.fit(feats, train, folds=3, jobs=1), models.fit(feats, train, folds=3, jobs=2)
    pd.testing.assert_frame_equal(a["oof"], b["oof"])
    for group in models.MODEL_GROUPS:
        assert a["boosters"][group].model_to_string() == b["boosters"][group].model_to_string()
    assert a["rounds"] == b["rounds"] and a["temperature"] == b["temperature"]


def test_train_writes_text_models_and_manifest(trained):
    man = json.loads((trained / "manifest.json").read_text())
    assert set(man["models"]) == {"spinal", "foraminal", "subarticular"}
    for group, info in man["models"].items():
        entries = info if isinstance(info, list) else [info]         # a bag: one file per LightGBM seed
        assert len(entries) == models.BAG.get(group, 1) == len(man["lightgbm_seeds"][group])
        for e in entries:
            assert (trained / e["file"]).read_text().startswith("tree")
    assert man["classes"] == ["normal_mild", "moderate", "severe"]
    assert set(man["cv"]) >= {"raw", "temperature", "sharpened", "constant_in_sample", "method"}
    cv = json.loads((trained / "cv.json").read_text())
    assert "cross-fitted" in cv["method"]["points"] and "nested" in cv["method"]["calibration"]
    assert cv["method"]["fold_seed"] == 0 and "StratifiedGroupKFold" in cv["method"]["folds"]
    assert not list(trained.rglob("*.pkl")) and not list(trained.rglob("*.pickle"))
    oof = pd.read_csv(trained / "oof.csv")
    assert np.allclose(oof[["normal_mild", "moderate", "severe"]].sum(axis=1), 1)


def test_each_grader_is_trained_with_its_own_settings(trained):
    # The extra trees and column share of models.GRADER_PARAMS reach each saved model, and only the graders
    # that have them: the settings LightGBM writes into each model text.
    man = json.loads((trained / "manifest.json").read_text())
    for group in models.MODEL_GROUPS:
        settings = models.grader_params(group)
        assert man["params"][group].get("extra_trees", False) is settings.get("extra_trees", False)
        info = man["models"][group]
        for e in info if isinstance(info, list) else [info]:
            text = (trained / e["file"]).read_text()
            assert f"[extra_trees: {int(settings.get('extra_trees', False))}]" in text
            assert f"[feature_fraction: {settings['feature_fraction']:g}]" in text
    assert models.grader_params("foraminal") != models.grader_params("spinal")


def test_tampered_model_or_features_are_refused(trained, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(trained, bad, ignore=shutil.ignore_patterns("*.cache", "*.parquet"))
    with open(bad / "spinal.txt", "a") as fh:
        fh.write("\n")
    with pytest.raises(SpinefeatError, match="hash"):
        models.load(bad)
    shutil.copy(trained / "spinal.txt", bad / "spinal.txt")
    man = json.loads((bad / "manifest.json").read_text())
    man["columns"]["spinal"] = man["columns"]["spinal"][::-1]
    (bad / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(SpinefeatError, match="feature list"):
        models.load(bad)


def test_predict_missing_series_falls_back_to_priors(trained, cohort, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(cohort, data, ignore=shutil.ignore_patterns("*.cache"))
    ser = pd.read_csv(data / "test_series_descriptions.csv")
    study = ser.study_id.iloc[0]
    t1 = ser[(ser.study_id == study) & (ser.series_description == "Sagittal T1")].series_id.iloc[0]
    shutil.rmtree(data / "test_images" / str(study) / str(t1))
    ser[ser.series_id != t1].to_csv(data / "test_series_descriptions.csv", index=False)
    out = tmp_path / "sub.csv"
    res = CliRunner().invoke(app, ["predict", str(data), "--models", str(trained), "--out", str(out),
                                   "--coords", str(data / "truth" / "test_label_coordinates.csv")])
    assert res.exit_code == 0, res.output
    sub = pd.read_csv(out)
    assert len(sub) == 2 * 25
    assert [r.split("_", 1)[1] for r in sub.row_id[:25]] == list(TARGETS)
    assert np.allclose(sub[["normal_mild", "moderate", "severe"]].sum(axis=1), 1)
    fb = pd.read_csv(tmp_path / "sub.fallback.csv")
    foraminal = [f"{study}_{c}_{lv}" for c in ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing")
                 for lv in ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")]
    assert set(foraminal) <= set(fb.row_id)
    man = json.loads((trained / "manifest.json").read_text())
    row = sub.set_index("row_id").loc[foraminal[0]]
    assert np.allclose(row.to_numpy(), man["priors"]["left_neural_foraminal_narrowing_l1_l2"])


def test_predict_without_points_or_localiser_is_a_clear_error(trained, cohort, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(trained, bare, ignore=shutil.ignore_patterns("*.cache", "localizer.*"))
    res = CliRunner().invoke(app, ["predict", str(cohort), "--models", str(bare), "--out", str(tmp_path / "s.csv")])
    assert res.exit_code == 3 and "localizer" in res.output


def test_predict_lists_graded_rows_at_low_confidence_points(trained, cohort, tmp_path):
    from spinefeat.dataset import read_coordinates

    pts = read_coordinates(cohort / "truth" / "test_label_coordinates.csv")
    pts["confidence"] = 0.9
    low = pts.index[:3]
    pts.loc[low, "confidence"] = 0.1
    coords = tmp_path / "pts.csv"
    pts.to_csv(coords, index=False)
    out = tmp_path / "sub.csv"
    res = CliRunner().invoke(app, ["predict", str(cohort), "--models", str(trained), "--out", str(out),
                                   "--coords", str(coords)])
    assert res.exit_code == 0, res.output
    fb = pd.read_csv(tmp_path / "sub.fallback.csv")
    want = {f"{r.study_id}_{r.condition}_{r.level}" for r in pts.loc[low].itertuples()}
    flagged = set(fb.row_id[fb.reason.str.startswith(models.LOW_CONFIDENCE_REASON)])
    assert flagged == want
    # graded, not replaced by the priors: the row differs from its prior
    sub = pd.read_csv(out).set_index("row_id")
    man = json.loads((trained / "manifest.json").read_text())
    rid = sorted(want)[0]
    assert not np.allclose(sub.loc[rid].to_numpy(), man["priors"][rid.split("_", 1)[1]])


def test_folds_of_a_handful_of_studies_whose_grades_are_all_rarer_than_the_folds():
    """Four studies, three folds, no grade with three studies (sklearn refuses to stratify): dealt round."""
    worst = pd.Series({1: 2, 2: 2, 3: 1, 4: 0})
    fold = models.stratified_folds([1, 2, 3, 4], worst, 3, seed=0)
    assert sorted(fold) == [1, 2, 3, 4] and sorted(set(fold.values())) == [0, 1, 2]


def test_an_uninformative_grader_predicts_the_weighted_class_frequencies():
    """The graders fit the grades unweighted and add log(1/2/4) to the raw scores: with nothing to learn from,
    the prediction is the best constant of the weighted metric (class frequencies times the weights,
    normalised), not the plain frequencies."""
    rng = np.random.default_rng(3)
    n = 3000
    y = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    x = rng.normal(size=(n, 2)).astype(np.float32)        # independent of the grade
    fold = rng.integers(0, 5, n)
    stop = rng.random(n) < 0.2
    raw, _ = models.grouped_cv(x, y, fold, lambda k: stop, cols=["a", "b"], params=models.PARAMS, folds=5)
    p = models._softmax(raw).mean(axis=0)
    freq = np.bincount(y, minlength=3) / n
    assert p == pytest.approx(models.prior_proba(y), abs=0.03)
    assert abs(p[2] - freq[2]) > 0.1          # the plain frequencies are far off: 0.10 against ~0.28


def _window_table(n_studies=30, seed=5, n_pixels=12):
    """:func:`_table` plus, on the foraminal rows, ``n_pixels`` appearance-stage inputs that carry the grade
    together (each alone weakly)."""
    feats, train = _table(n_studies=n_studies, seed=seed)
    rng = np.random.default_rng(seed + 1)
    fo = feats["condition"].str.contains("foraminal").to_numpy()
    sev = feats["signal"].round().clip(0, 2).to_numpy()
    prefix = models.APPEARANCE["foraminal"]["inputs"]
    for i in range(n_pixels):
        feats[f"{prefix}test_{i:02d}"] = np.where(fo, 0.4 * sev * (1 if i % 2 else -1) + rng.normal(size=len(feats)),
                                                  np.nan)
    return feats, train


def test_appearance_stage_round_trips_through_json():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 5)) * [1, 10, 0.1, 1, 1] + [0, 5, 0, 0, 0]
    y = (x[:, 0] + x[:, 2] * 10 > 0).astype(int) + (x[:, 0] > 1.5)
    stage = models.Appearance.fit(x, y, inputs=list("abcde"), C=0.5)
    again = models.Appearance.from_json(json.loads(json.dumps(stage.to_json())))
    assert np.array_equal(again.score(x), stage.score(x))
    s = stage.score(x)
    assert np.allclose(s.sum(axis=1), 0)                              # centred log-odds
    assert pd.Series(s[:, 2] - s[:, 0]).corr(pd.Series(y), method="spearman") > 0.7
    with pytest.raises(ValueError, match="shapes"):
        models.Appearance.from_json(dict(stage.to_json(), coef=stage.coef[:, :4].tolist()))


def test_window_z_stage_reads_each_window_standardised_over_itself_and_round_trips():
    """Two windows of 4 pixels: the grade is in one window's pattern, hidden under a brightness and contrast
    that vary per row. The appended columns are each window's own z-scores (hand-checked on a row); the
    stage reads them (rho > 0.7 where the plain stage, on the raw pixels, is weaker) and survives JSON."""
    rng = np.random.default_rng(5)
    n = 600
    y = rng.choice(3, size=n)
    pattern = np.array([1.0, -1.0, 0.5, -0.5])
    gain = np.exp(rng.uniform(np.log(0.05), np.log(20.0), size=(n, 1)))
    a = rng.uniform(-20, 20, size=(n, 1)) + gain * (y[:, None] - 1) * pattern + 0.3 * gain * rng.normal(size=(n, 4))
    b = rng.normal(size=(n, 4))
    inputs = [f"w_a_r0c{i}" for i in range(4)] + [f"w_b_r0c{i}" for i in range(4)]
    x = np.hstack([a, b])
    z = models.with_window_z(x, inputs)
    assert z.shape == (n, 16) and np.array_equal(z[:, :8], x)
    row = np.array([1.0, 2.0, 3.0, 6.0])
    one = models.with_window_z(np.hstack([row, row * 10])[None], inputs)[0]
    assert np.allclose(one[8:12], (row - 3.0) / np.std(row)) and np.allclose(one[12:], one[8:12])
    stage = models.Appearance.fit(x, y, inputs=inputs, C=0.5, window_z=True)
    plain = models.Appearance.fit(x, y, inputs=inputs, C=0.5)
    again = models.Appearance.from_json(json.loads(json.dumps(stage.to_json())))
    assert again.window_z and np.array_equal(again.score(x), stage.score(x))

    def rho(st):
        s = st.score(x)
        return pd.Series(s[:, 2] - s[:, 0]).corr(pd.Series(y), method="spearman")
    assert rho(stage) > 0.7 and rho(stage) > rho(plain) + 0.05


def test_stage_on_principal_components_is_the_plain_fit_at_full_rank_and_the_reduced_model_mapped_back():
    """With k = all inputs the principal components only rotate the standardised rows: the same scores as the plain
    fit. With k = 3 the stored pixel-space coefficients score rows as an independent regression on the training rows'
    top 3 components does (numpy's SVD, scikit-learn's fit), lie in those components' span, and differ from the
    plain fit's scores (so the option is not ignored)."""
    from sklearn.linear_model import LogisticRegression

    x, y, _, inputs = _stage_problem()
    x = x[:, :6]                                                     # one window, no window z: full rank
    inputs, C = inputs[:6], 0.05
    plain = models.Appearance.fit(x, y, inputs=inputs, C=C)
    full = models.Appearance.fit(x, y, inputs=inputs, C=C, components=6)
    np.testing.assert_allclose(full.score(x), plain.score(x), atol=1e-4)
    assert np.abs(plain.score(x)).max() > 0.3
    three = models.Appearance.fit(x, y, inputs=inputs, C=C, components=3)
    again = models.Appearance.from_json(json.loads(json.dumps(three.to_json())))
    assert three.coef.shape == (3, 6) and np.array_equal(again.score(x), three.score(x))
    mean, sd = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    z = np.nan_to_num((x - mean) / sd)
    v = np.linalg.svd(z, full_matrices=False)[2][:3].T               # (6, 3): the top 3 right singular vectors
    lr = LogisticRegression(C=C, tol=1e-12, max_iter=20000).fit(z @ v, y)
    ref = lr.decision_function(z @ v)
    np.testing.assert_allclose(three.score(x), ref - ref.mean(axis=1, keepdims=True), atol=2e-3)
    np.testing.assert_allclose(three.coef - three.coef @ v @ v.T, 0, atol=1e-10)   # in the components' span
    assert np.abs(three.score(x) - plain.score(x)).max() > 0.05


def _stage_problem(n_studies=40, seed=11):
    """Rows of studies with two windows of 6 pixels whose pattern, under a per-row brightness, carries the grade."""
    rng = np.random.default_rng(seed)
    study = np.repeat(np.arange(n_studies), 10)
    y = rng.choice(3, size=len(study), p=[0.6, 0.25, 0.15])
    pattern = np.array([1.0, -1.0, 0.5, -0.5, 0.0, 0.3])
    x = rng.uniform(-5, 5, size=(len(y), 1)) + np.hstack([(y[:, None] - 1) * pattern, np.zeros((len(y), 6))])
    x = x + rng.normal(size=x.shape)
    x[rng.random(x.shape) < 0.02] = np.nan                           # a few missing pixels
    inputs = [f"w_a_r0c{i}" for i in range(6)] + [f"w_b_r0c{i}" for i in range(6)]
    return x, y, study, inputs


def _reference_scores(x_train, y_train, x_score, C):
    """The stage's centred log-odds computed independently: each window z-scored over itself by hand, the columns
    standardised on the training rows (missing values at the mean), scikit-learn's multinomial logistic regression
    (its objective is the stage's: log loss summed over rows plus |coef|^2 / (2 C)) fitted far past convergence."""
    from sklearn.linear_model import LogisticRegression

    def design(x):
        parts = [x]
        for w in (x[:, :6], x[:, 6:]):
            parts.append((w - np.nanmean(w, axis=1, keepdims=True)) / np.nanstd(w, axis=1, keepdims=True))
        return np.hstack(parts)
    tr, sc = design(x_train), design(x_score)
    mean, sd = np.nanmean(tr, axis=0), np.nanstd(tr, axis=0)
    lr = LogisticRegression(C=C, tol=1e-12, max_iter=20000).fit(np.nan_to_num((tr - mean) / sd), y_train)
    s = lr.decision_function(np.nan_to_num((sc - mean) / sd))
    return s - s.mean(axis=1, keepdims=True)


def test_appearance_scores_match_an_independent_fit_and_are_the_same_in_worker_processes():
    """The stage's matrix (the windows' z-scores) is computed once for all fits and their rows taken from it; each
    fold's scores of its own rows and the deployed stage are those of a logistic regression fitted independently
    on that fit's rows alone; the fits spread over 2 worker processes give the same scores and stage."""
    x, y, study, inputs = _stage_problem()
    fold = study % 3
    C = 0.05
    scores, deployed = models.appearance_scores(x, y, fold, study, folds=3, inputs=inputs, C=C, window_z=True,
                                                deploy=True)
    for k in range(3):
        tr = fold != k
        ref = _reference_scores(x[tr], y[tr], x[~tr], C)
        np.testing.assert_allclose(scores[k, ~tr], ref, atol=2e-3)
        assert np.abs(ref).max() > 0.3                                  # the scores carry the grade
    np.testing.assert_allclose(deployed.score(x), _reference_scores(x, y, x, C), atol=2e-3)
    again, deployed2 = models.appearance_scores(x, y, fold, study, folds=3, inputs=inputs, C=C, window_z=True,
                                                deploy=True, jobs=2)
    assert np.array_equal(again, scores) and np.array_equal(deployed2.coef, deployed.coef)
    assert np.array_equal(deployed2.mean, deployed.mean) and np.array_equal(deployed2.scale, deployed.scale)


def test_the_appearance_stages_and_the_trees_share_one_worker_pool():
    """A training run's fits in worker processes (the stages' and the trees') all go to one pool: the same
    executor and the same worker processes before and after a fit with its stage, however often it switches
    between them (joblib respawns its pool when it is asked for with other arguments)."""
    feats, train = _window_table()
    x, y, study, inputs = _stage_problem()
    from joblib.externals.loky import reusable_executor

    models.appearance_scores(x, y, study % 3, study, folds=3, inputs=inputs, C=0.05, window_z=True, jobs=2)
    pool = reusable_executor._executor                               # the pool the fits went to (not asked anew)
    pids = set(pool._processes)
    assert len(pids) == 2
    models.fit(feats, train, folds=3, jobs=2)                        # foraminal stage, trees, stage, trees
    models.appearance_scores(x, y, study % 3, study, folds=3, inputs=inputs, C=0.05, window_z=True, jobs=2)
    assert reusable_executor._executor is pool and set(pool._processes) == pids


def test_appearance_context_reads_each_foramen_against_its_study_by_hand():
    """Two studies: study 1 has the left L1/L2 (twice: a found and a labelled point), left L2/L3 and right L1/L2;
    study 2 one foramen. Each neighbour's scores written out by hand."""
    study = [1, 1, 1, 1, 2]
    level = [0, 0, 1, 0, 3]
    side = [1, 1, 1, -1, 1]
    s = np.array([[1.0, 0, -1], [3, 0, -3], [0, 1, -1], [-2, 0, 2], [5, 5, -10]])
    c = models.appearance_context(s, study, level, side)
    assert c.shape == (5, 12)
    l12 = [2.0, 0, -2]                       # the mean of the left L1/L2's two rows
    others = {0: np.mean([[0, 1, -1], [-2, 0, 2]], axis=0), 2: np.mean([l12, [-2, 0, 2]], axis=0),
              3: np.mean([l12, [0, 1, -1]], axis=0)}
    for i, want in (0, others[0]), (1, others[0]), (2, others[2]), (3, others[3]):
        assert np.allclose(c[i, 0:3], want)
    assert np.isnan(c[4]).all()              # study 2 has no other foramen
    nan = [np.nan] * 3
    # other side, level above, level below
    for i, want in ((0, [[-2, 0, 2], nan, [0, 1, -1]]), (2, [nan, l12, nan]), (3, [l12, nan, nan])):
        assert np.allclose(c[i, 3:], np.ravel(want), equal_nan=True)


def test_appearance_scores_of_every_row_are_out_of_fold():
    """No row's stage score comes from a stage fitted on its own grade: relabelling one study changes none of
    its own scores, in any fold's fit or the final one, while the other studies' scores do move."""
    rng = np.random.default_rng(7)
    study = np.repeat(np.arange(40), 10)
    y = rng.choice(3, size=len(study), p=[0.6, 0.25, 0.15])
    x = y[:, None] * [0.8, -0.5, 0.3] + rng.normal(size=(len(y), 3))
    fold = study % 4
    a, none = models.appearance_scores(x, y, fold, study, folds=4, inputs=["a", "b", "c"], C=1.0)
    assert none is None and a.shape == (5, len(y), 3)
    for s in (3, 18):                                                 # a study of fold 3, one of fold 2
        flipped = y.copy()
        flipped[study == s] = 2 - flipped[study == s]
        b, _ = models.appearance_scores(x, flipped, fold, study, folds=4, inputs=["a", "b", "c"], C=1.0)
        assert np.array_equal(a[:, study == s], b[:, study == s])
        assert not np.allclose(a[:, study != s], b[:, study != s])
    # The final fit's scores are each fold's own scores from the stage fitted outside it.
    for k in range(4):
        assert np.array_equal(a[4, fold == k], a[k, fold == k])


def test_train_fits_the_appearance_stage_in_fold_and_predict_applies_it(tmp_path):
    """The foraminal grader reads its stage's scores, not the stage's inputs (the same models with fits in worker
    processes); saved as JSON beside the text models, the loaded graders predict what the trained booster gives on
    the stage's scores of the same rows, a changed stage file is refused, and relabelling a fold leaves its
    out-of-fold rows as they were."""
    feats, train = _window_table()
    prefix = models.APPEARANCE["foraminal"]["inputs"]
    inputs = [c for c in feats if c.startswith(prefix)]
    fold_of = {sid: i % 3 for i, sid in enumerate(sorted(train.index))}
    res = models.fit(feats, train, folds=3, fold_of=fold_of)
    par = models.fit(feats, train, folds=3, fold_of=fold_of, jobs=2)      # the stage's scores through worker files
    assert par["boosters"]["foraminal"].model_to_string() == res["boosters"]["foraminal"].model_to_string()
    cols = res["columns"]["foraminal"]
    staged = list(models.APPEARANCE_COLUMNS) + list(models.APPEARANCE_CONTEXT_COLUMNS)
    assert cols[-15:] == staged and not set(inputs) & set(cols)
    assert "foraminal" in res["appearance"] and "spinal" not in res["appearance"]
    assert not any(c.startswith(prefix) for c in res["columns"]["spinal"])
    models.save(res, tmp_path / "m")
    man = json.loads((tmp_path / "m" / "manifest.json").read_text())
    stage_file = tmp_path / "m" / man["appearance"]["foraminal"]["file"]
    assert json.loads(stage_file.read_text())["inputs"] == inputs
    graders = models.load(tmp_path / "m")
    sub, _ = graders.predict(feats)
    fo = feats[feats["condition"].str.contains("foraminal")]
    stage = res["appearance"]["foraminal"]
    s = stage.score(fo[inputs].to_numpy(np.float32))
    context = models.appearance_context(s, fo["study_id"], fo["context_level_index"], fo["context_side"])
    x = np.hstack([fo[cols[:-15]].to_numpy(np.float32), s, context])
    raw = models.raw_scores(res["boosters"]["foraminal"], x.astype(np.float32))
    want = models._softmax(raw / res["temperature"]["foraminal"])
    got = sub.set_index("row_id").loc[fo["row_id"], ["normal_mild", "moderate", "severe"]].to_numpy()
    assert np.allclose(got, want, atol=1e-6)
    # The stage's scores matter: without them (NaN) the predictions differ.
    plain = models.Graders(graders.boosters, graders.manifest)
    sub0, _ = plain.predict(feats)
    assert not np.allclose(sub0.set_index("row_id").loc[fo["row_id"]].to_numpy(), got)
    stage_file.write_text(stage_file.read_text().replace("0", "1", 1))
    with pytest.raises(SpinefeatError, match="hash"):
        models.load(tmp_path / "m")
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(dict(man, appearance={})))
    with pytest.raises(SpinefeatError, match="does not list"):
        models.load(tmp_path / "m")
    flipped = train.copy()
    fold0 = [s for s, k in fold_of.items() if k == 0]
    flipped.loc[fold0] = flipped.loc[fold0].replace({"Normal/Mild": "Severe", "Severe": "Normal/Mild"})
    b = models.fit(feats, flipped, folds=3, fold_of=fold_of)
    in0 = (res["oof"]["fold"] == 0) & res["oof"]["row_id"].str.contains("foraminal")
    pd.testing.assert_frame_equal(res["oof"][in0].reset_index(drop=True), b["oof"][in0].reset_index(drop=True))


def test_a_bagged_grader_saves_a_booster_per_seed_and_predicts_their_mean(tmp_path):
    """The foraminal grader is averaged over :data:`models.BAG` LightGBM seeds: the models folder holds one text
    file per seed (each hashed in the manifest), and `predict`'s probabilities are the softmax of the mean of the
    boosters' raw scores (plus the offset, over the temperature), computed here from the files loaded on their own;
    explain's contributions, the mean of the seeds', still add up to that raw score. The same folder with its
    manifest in the layout before bags (one entry, the first booster) loads as a grader of that one booster."""
    from spinefeat.explain import contributions

    n_seeds = models.BAG["foraminal"]
    assert n_seeds > 1 and models.BAG.get("spinal", 1) == 1
    feats, train = _window_table()
    fold_of = {sid: i % 3 for i, sid in enumerate(sorted(train.index))}
    res = models.fit(feats, train, folds=3, fold_of=fold_of, seed=4)
    assert res["seeds"]["foraminal"] == [4 + i for i in range(n_seeds)] and res["seeds"]["spinal"] == [4]
    assert len(res["rounds"]["foraminal"]) == n_seeds
    models.save(res, tmp_path / "m")
    m = tmp_path / "m"
    man = json.loads((m / "manifest.json").read_text())
    entries = man["models"]["foraminal"]
    assert isinstance(entries, list) and len(entries) == n_seeds and man["lightgbm_seeds"]["foraminal"] == [4 + i for i in range(n_seeds)]
    assert [e["file"] for e in entries] == [f"foraminal_seed{4 + i}.txt" for i in range(n_seeds)]
    assert man["models"]["spinal"]["file"] == "spinal.txt"
    texts = [(m / e["file"]).read_text() for e in entries]
    assert len(set(texts)) == n_seeds                                # the seeds gave different trees
    for e, text in zip(entries, texts):
        assert e["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert [f"[seed: {4 + i}]" in t for i, t in enumerate(texts)] == [True] * n_seeds
    graders = models.load(m)
    assert len(graders.boosters["foraminal"]) == n_seeds and len(graders.boosters["spinal"]) == 1
    sub, _ = graders.predict(feats)
    fo = feats[feats["condition"].str.contains("foraminal")]
    x = graders.design(fo, "foraminal")
    alone = [lgb.Booster(model_file=str(m / e["file"])) for e in entries]
    raw = np.mean([b.predict(x, raw_score=True) for b in alone], axis=0) + np.log([1.0, 2.0, 4.0])
    want = models._softmax(raw / man["temperature"]["foraminal"])
    got = sub.set_index("row_id").loc[fo["row_id"], ["normal_mild", "moderate", "severe"]].to_numpy()
    assert np.allclose(got, want, atol=1e-9)
    one = models._softmax((alone[0].predict(x, raw_score=True) + np.log([1.0, 2.0, 4.0])) / man["temperature"]["foraminal"])
    assert not np.allclose(got, one, atol=1e-4)                      # the mean, not the first booster
    c, cols = contributions(graders, fo, "foraminal")
    assert c.shape == (len(fo), 3, len(cols) + 1)
    assert np.allclose(c.sum(axis=2) + np.log([1.0, 2.0, 4.0]), raw, atol=1e-6)
    # The manifest of a models folder from before bags: one entry per grader, no lightgbm_seeds.
    old = dict(man, models=dict(man["models"], foraminal=entries[0]))
    del old["lightgbm_seeds"]
    (m / "manifest.json").write_text(json.dumps(old))
    g1 = models.load(m)
    assert len(g1.boosters["foraminal"]) == 1
    assert np.allclose(g1.boosters["foraminal"].predict(x, raw_score=True), alone[0].predict(x, raw_score=True))
    (m / "manifest.json").write_text(json.dumps(dict(man, lightgbm_seeds=dict(man["lightgbm_seeds"], foraminal=[4]))))
    with pytest.raises(SpinefeatError, match="LightGBM seeds"):
        models.load(m)


def test_a_bags_cv_is_the_mean_of_its_seeds_fitted_alone():
    """grouped_cv with a bag of 3 seeds gives the mean of the raw scores of 3 single-seed CVs (seeds s, s+1, s+2),
    each with its own early stop: the bag is nothing but those fits averaged."""
    rng = np.random.default_rng(8)
    n = 1500
    y = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    x = (y[:, None] * [0.6, -0.4, 0.2, 0.0] + rng.normal(size=(n, 4))).astype(np.float32)
    fold, stop = rng.integers(0, 3, n), rng.random(n) < 0.2
    params = models.grader_params("foraminal", seed=7, num_threads=1)
    cv = dict(cols=list("abcd"), folds=3)
    bag, its = models.grouped_cv(x, y, fold, lambda k: stop, params=params, bag=3, **cv)
    alone = [models.grouped_cv(x, y, fold, lambda k: stop, params=dict(params, seed=7 + i), bag=1, **cv)
             for i in range(3)]
    assert np.allclose(bag, np.mean([r for r, _ in alone], axis=0), atol=1e-12)
    assert its == [[a[1][k][0] for a in alone] for k in range(3)]
    assert not np.allclose(alone[0][0], alone[1][0])


