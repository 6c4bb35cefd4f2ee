import numpy as np
import pandas as pd
import pytest

from spinefeat import dataset as ds
from spinefeat.errors import DataError
from spinefeat.synth import label_stats


def test_real_label_files_counts(rsna):
    train = ds.read_train(rsna / "train.csv")
    assert len(train) == 1975
    assert int(train.isna().sum().sum()) == 572
    assert len(ds.read_coordinates(rsna / "train_label_coordinates.csv")) == 48692
    corr = ds.read_coordinates(rsna / "train_label_coordinates_corrected.csv")
    assert len(corr) == 48809 and "fix" in corr.columns
    ser = ds.read_series_descriptions(rsna / "train_series_descriptions.csv")
    assert len(ser) == 6294
    axial = ser[ser.series_description == "Axial T2"].groupby("study_id").size()
    assert int((axial >= 2).sum()) == 335


def test_both_coordinate_spellings_give_same_keys(rsna):
    a = ds.read_coordinates(rsna / "train_label_coordinates.csv")
    b = ds.read_coordinates(rsna / "train_label_coordinates_corrected.csv")
    assert set(a.condition) == set(b.condition) == set(ds.CONDITIONS)
    assert set(a.level) == set(b.level) == set(ds.LEVELS)


@pytest.mark.parametrize("cond,expected", [
    ("spinal", (87.8, 7.5, 4.8)), ("foraminal", (78.0, 18.1, 4.0)), ("subarticular", (71.4, 19.0, 9.6))])
def test_real_class_balance_matches_domain_notes(rsna, cond, expected):
    long = ds.labels_long(ds.read_train(rsna / "train.csv"))
    sev = long[long.condition.str.contains(cond) & (long.severity >= 0)].severity
    shares = [100 * float((sev == k).mean()) for k in range(3)]
    assert np.allclose(shares, expected, atol=0.1)


def test_packaged_label_stats_match_real_train(rsna):
    train = ds.read_train(rsna / "train.csv")
    stats = label_stats()["targets"]
    for tgt in ds.TRAIN_COLUMNS:
        vc = train[tgt].value_counts(normalize=True)
        assert np.allclose([vc.get(s, 0) for s in ds.SEVERITIES], stats[tgt]["p"], atol=1e-3), tgt


def test_targets_follow_sample_submission_order(rsna):
    sub = pd.read_csv(rsna / "sample_submission.csv")
    assert [r.split("_", 1)[1] for r in sub.row_id] == list(ds.TARGETS)


def test_row_id_round_trip():
    rid = ds.row_id(4003253, "Left Neural Foraminal Narrowing", "L4/L5")
    assert rid == "4003253_left_neural_foraminal_narrowing_l4_l5"
    assert ds.parse_row_id(rid) == (4003253, "left_neural_foraminal_narrowing", "l4_l5")
    with pytest.raises(DataError):
        ds.parse_row_id("123_spinal_canal_stenosis_l9_l9")


def _train_frame(n=2):
    return pd.DataFrame({"study_id": list(range(1, n + 1)), **{c: ["Normal/Mild"] * n for c in ds.TRAIN_COLUMNS}})


def test_bad_severity_names_line_and_column(tmp_path):
    df = _train_frame()
    df.loc[1, "spinal_canal_stenosis_l4_l5"] = "Sever"
    df.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=r"line 3, column 'spinal_canal_stenosis_l4_l5'.*'Sever'"):
        ds.read_train(tmp_path / "train.csv")


def test_empty_cells_are_kept_not_scored(tmp_path):
    df = _train_frame()
    df.loc[0, "left_subarticular_stenosis_l1_l2"] = None
    df.to_csv(tmp_path / "train.csv", index=False)
    long = ds.labels_long(ds.read_train(tmp_path / "train.csv"))
    assert len(long) == 50
    row = long[(long.study_id == 1) & (long.target == "left_subarticular_stenosis_l1_l2")]
    assert row.severity.tolist() == [-1]


def test_missing_column_and_unknown_condition(tmp_path):
    _train_frame().drop(columns=["spinal_canal_stenosis_l1_l2"]).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match="missing required column"):
        ds.read_train(tmp_path / "train.csv")
    pd.DataFrame({"study_id": [1], "series_id": [2], "instance_number": [3], "condition": ["Spinal Stenosis"],
                  "level": ["L1/L2"], "x": [1.0], "y": [2.0]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError, match=r"line 2, column 'condition'"):
        ds.read_coordinates(tmp_path / "c.csv")


def test_coordinates_must_refer_to_described_series(tmp_path):
    _train_frame(1).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"study_id": [1], "series_id": [10], "series_description": ["Axial T2"]}).to_csv(
        tmp_path / "train_series_descriptions.csv", index=False)
    pd.DataFrame({"study_id": [1], "series_id": [11], "instance_number": [3], "condition": ["Spinal Canal Stenosis"],
                  "level": ["L1/L2"], "x": [1.0], "y": [2.0]}).to_csv(tmp_path / "train_label_coordinates.csv", index=False)
    with pytest.raises(DataError, match="series 11 is not in train_series_descriptions"):
        ds.DataFolder(tmp_path).validate(check_images=False)
