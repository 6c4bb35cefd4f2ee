import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spinefeat.cli import app
from spinefeat.dataset import DataFolder
from spinefeat.extract import add_relative_features, extract, points_from_labels
from spinefeat.features import REGISTRY
from spinefeat.features import texture  # noqa: F401
from spinefeat.report import synth_accuracy


@pytest.fixture(scope="module")
def features(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("feat") / "features.parquet"
    ov = out.parent / "overlays"
    res = CliRunner().invoke(app, ["extract", str(cohort), "--out", str(out), "--jobs", "2", "--overlays", str(ov)])
    assert res.exit_code == 0, res.output
    return out


def test_one_row_per_target_and_registered_columns(features, cohort):
    df = pd.read_parquet(features)
    assert len(df) == 6 * 25 and df.row_id.is_unique
    errors = df.diagnostics_error.fillna("")
    assert set(errors) <= {"", "no point"}
    feature_cols = [c for c in df.columns if c not in
                    ("study_id", "condition", "level", "row_id", "split") and not c.startswith("diagnostics_")]
    assert set(feature_cols) - set(REGISTRY) <= {"canal_ax_offset_mm"}
    # a point's region was measured: spinal rows carry canal features, foraminal rows foramen features
    sp = df[(df.condition == "spinal_canal_stenosis") & (errors == "")]
    assert sp.canal_ax_shape_area_mm2.notna().mean() > 0.9 and sp.foramen_shape_area_mm2.isna().all()


def test_overlays_written_per_point(features, cohort):
    df = pd.read_parquet(features)
    n_points = int((df.diagnostics_error.fillna("") == "").sum())
    assert len(list((features.parent / "overlays").glob("*.png"))) == n_points


def test_measurements_separate_grades_on_phantoms(features, cohort):
    errs, seps = synth_accuracy(pd.read_parquet(features), pd.read_csv(cohort / "truth" / "targets.csv"))
    e = errs.set_index("measurement").median_abs_error
    assert e["canal_ax_shape_area_mm2"] < 20 and e["foramen_shape_area_mm2"] < 15
    assert e["canal_ax_shape_ap_diameter_mm"] < 1.5 and e["recess_shape_depth_mm"] < 2.5
    rho = seps.set_index("measurement").spearman_grade
    for m in ("canal_ax_shape_area_mm2", "foramen_shape_area_mm2", "recess_shape_area_mm2"):
        assert rho[m] < -0.4, (m, rho[m])


def test_rerun_uses_cache_and_gives_same_table(cohort, tmp_path):
    pts = points_from_labels(DataFolder(cohort))
    ids = sorted(pd.read_csv(cohort / "train_series_descriptions.csv").study_id.unique())[:2]
    a = extract(cohort, pts, cache=tmp_path / "c", studies=ids)
    (kept,) = (tmp_path / "c").glob(f"{ids[0]}-*.parquet")
    mtime = kept.stat().st_mtime_ns
    (lost,) = (tmp_path / "c").glob(f"{ids[1]}-*.parquet")
    lost.unlink()        # as if interrupted before this study
    b = extract(cohort, pts, cache=tmp_path / "c", studies=ids)
    assert kept.stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(a.drop(columns="diagnostics_seconds"), b.drop(columns="diagnostics_seconds"))


def test_changed_code_is_not_served_from_an_older_cache(cohort, tmp_path, monkeypatch):
    import spinefeat.extract as ex
    pts = points_from_labels(DataFolder(cohort))
    ids = sorted(pd.read_csv(cohort / "train_series_descriptions.csv").study_id.unique())[:1]
    extract(cohort, pts, cache=tmp_path / "c", studies=ids)
    (old,) = (tmp_path / "c").glob(f"{ids[0]}-*.parquet")
    # the same version string, other source files (a segmenter edited without a version bump)
    monkeypatch.setattr(ex, "code_fingerprint", lambda: "0" * 16)
    extract(cohort, pts, cache=tmp_path / "c", studies=ids)
    entries = sorted((tmp_path / "c").glob(f"{ids[0]}-*.parquet"))
    assert len(entries) == 2 and old in entries


def test_code_fingerprint_follows_the_package_sources():
    import spinefeat.extract as ex
    fp = ex.code_fingerprint()
    assert len(fp) == 16 and fp == ex.code_fingerprint()
    assert ex.run_cache_key(split="train")["code"] == fp


def test_broken_study_is_recorded_and_run_goes_on(cohort, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(cohort, data, ignore=shutil.ignore_patterns("*.cache"))
    ser = pd.read_csv(data / "train_series_descriptions.csv")
    victim = ser.study_id.iloc[0]
    for f in (data / "train_images" / str(victim)).rglob("*.dcm"):
        f.write_bytes(b"garbage")
    ids = [int(victim), int(ser.study_id[ser.study_id != victim].iloc[0])]
    df = extract(data, points_from_labels(DataFolder(data)), cache=tmp_path / "c", studies=ids)
    bad = df[df.study_id == victim].diagnostics_error
    good = df[df.study_id != victim].diagnostics_error.fillna("")
    assert (bad.str.len() > 0).all() and "no decodable instance" in bad.iloc[0]
    assert set(good) <= {"", "no point"}


def test_relative_features_known_answers():
    rows = []
    for lv, area in zip(("l1_l2", "l2_l3", "l3_l4"), (100.0, 50.0, 200.0)):
        rows.append({"study_id": 1, "condition": "spinal_canal_stenosis", "level": lv,
                     "canal_ax_shape_area_mm2": area})
        rows.append({"study_id": 1, "condition": "left_neural_foraminal_narrowing", "level": lv,
                     "foramen_shape_area_mm2": area})
        rows.append({"study_id": 1, "condition": "right_neural_foraminal_narrowing", "level": lv,
                     "foramen_shape_area_mm2": 2 * area})
    df = add_relative_features(pd.DataFrame(rows))
    sp = df[df.condition == "spinal_canal_stenosis"]
    assert np.allclose(sp.canal_ax_shape_area_mm2_rel_study, [1.0, 0.5, 2.0])
    left = df[df.condition == "left_neural_foraminal_narrowing"]
    assert np.allclose(left.foramen_shape_area_mm2_rel_side, 0.5)


def test_foramen_study_context_known_answers():
    """Study median, rank on the side and the differences to the levels above and below, on a hand-made study
    (left fat areas 40, 10, 30 at L1/L2..L3/L4, right 20 at L1/L2; a second study must not mix in)."""
    rows = [{"study_id": 1, "condition": "left_neural_foraminal_narrowing", "level": lv,
             "foramen_shape_fat_area_mm2": a} for lv, a in zip(("l1_l2", "l2_l3", "l3_l4"), (40.0, 10.0, 30.0))]
    rows.append({"study_id": 1, "condition": "right_neural_foraminal_narrowing", "level": "l1_l2",
                 "foramen_shape_fat_area_mm2": 20.0})
    rows.append({"study_id": 2, "condition": "left_neural_foraminal_narrowing", "level": "l2_l3",
                 "foramen_shape_fat_area_mm2": 1000.0})
    rows.append({"study_id": 1, "condition": "spinal_canal_stenosis", "level": "l1_l2"})
    df = add_relative_features(pd.DataFrame(rows))
    n = "foramen_shape_fat_area_mm2"
    left = df[(df.study_id == 1) & (df.condition == "left_neural_foraminal_narrowing")]
    assert np.allclose(left[f"{n}_study_median"], 25.0)           # median of 40, 10, 30, 20
    assert np.allclose(left[f"{n}_study_rank"], [1.0, 1 / 3, 2 / 3])
    assert np.allclose(left[f"{n}_minus_above"], [np.nan, -30.0, 20.0], equal_nan=True)
    assert np.allclose(left[f"{n}_minus_below"], [30.0, -20.0, np.nan], equal_nan=True)
    right = df[df.condition == "right_neural_foraminal_narrowing"]
    assert right[f"{n}_study_rank"].iloc[0] == 1.0 and np.isnan(right[f"{n}_minus_below"].iloc[0])
    other = df[df.study_id == 2]
    assert other[f"{n}_study_median"].iloc[0] == 1000.0 and np.isnan(other[f"{n}_minus_above"].iloc[0])
    assert df.loc[df.condition == "spinal_canal_stenosis", f"{n}_study_median"].isna().all()
