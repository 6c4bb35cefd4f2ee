"""The silent wrong answers of issue 12, each now measured afresh, refused or recorded."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from typer.testing import CliRunner

from spinefeat.cli import app
from spinefeat.dataset import DataFolder
from spinefeat.extract import extract, points_from_labels


def light_copy(cohort: Path, dst: Path, study: int, copy_series=()) -> Path:
    """The cohort's CSVs, its studies linked, and of ``study`` the series in ``copy_series`` copied (to damage)."""
    dst.mkdir(parents=True)
    for f in cohort.glob("*.csv"):
        shutil.copy(f, dst / f.name)
    for split in ("train", "test"):
        (dst / f"{split}_images").mkdir()
        for sdir in (cohort / f"{split}_images").iterdir():
            if int(sdir.name) != study:
                (dst / f"{split}_images" / sdir.name).symlink_to(sdir)
                continue
            (dst / f"{split}_images" / sdir.name).mkdir()
            for ser in sdir.iterdir():
                target = dst / f"{split}_images" / sdir.name / ser.name
                if int(ser.name) in copy_series:
                    shutil.copytree(ser, target)
                else:
                    target.symlink_to(ser)
    return dst


@pytest.fixture(scope="module")
def labels(cohort):
    return points_from_labels(DataFolder(cohort))


@pytest.fixture(scope="module")
def study(labels):
    return int(labels.study_id.iloc[0])


def series_of(cohort, study, desc):
    ser = pd.read_csv(cohort / "train_series_descriptions.csv")
    return int(ser[(ser.study_id == study) & (ser.series_description == desc)].series_id.iloc[0])


def drop_timing(df):
    return df.drop(columns=["diagnostics_seconds"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(cohort, labels, study, tmp_path_factory):
    return extract(cohort, labels, cache=tmp_path_factory.mktemp("ref"), studies=[study])


def test_runs_with_other_points_sharing_a_cache_never_read_each_others_rows(cohort, labels, study, reference,
                                                                            tmp_path):
    """Item 1, and concurrent runs on one cache: the cache key holds the points."""
    moved = labels.copy()
    fo = (moved.study_id == study) & moved.condition.str.contains("foraminal")
    moved.loc[fo, "x"] += 6.0
    fresh = extract(cohort, moved, cache=tmp_path / "fresh", studies=[study])
    shared = tmp_path / "shared"
    got = {}
    runs = [threading.Thread(target=lambda k, p: got.__setitem__(k, extract(cohort, p, cache=shared, studies=[study])),
                             args=(k, p)) for k, p in (("a", labels), ("b", moved))]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    pd.testing.assert_frame_equal(drop_timing(got["a"]), drop_timing(reference))
    pd.testing.assert_frame_equal(drop_timing(got["b"]), drop_timing(fresh))
    rows = fresh.condition.str.contains("foraminal")
    assert not np.allclose(fresh.loc[rows, "foramen_shape_area_mm2"].fillna(-1),
                           reference.loc[rows, "foramen_shape_area_mm2"].fillna(-1))


def test_duplicate_instance_number_is_refused_for_the_label_it_makes_ambiguous(cohort, labels, study, tmp_path):
    """Item 3."""
    t1 = series_of(cohort, study, "Sagittal T1")
    data = light_copy(cohort, tmp_path / "d", study, copy_series=[t1])
    pt = labels[(labels.study_id == study) & (labels.series_id == t1)].iloc[0]
    sdir = data / "train_images" / str(study) / str(t1)
    other = next(f for f in sorted(sdir.glob("*.dcm")) if int(f.stem) != int(pt.instance_number))
    ds = pydicom.dcmread(other)
    ds.InstanceNumber = int(pt.instance_number)
    ds.save_as(other)
    df = extract(data, points_from_labels(DataFolder(data)), cache=tmp_path / "c", studies=[study])
    row = df[(df.condition == pt.condition) & (df.level == pt.level)].iloc[0]
    assert "is on more than one slice" in row.diagnostics_error and str(int(pt.instance_number)) in row.diagnostics_error


def test_swapped_descriptions_are_corrected_from_the_orientation(cohort, labels, study, reference, tmp_path, caplog):
    """Item 4: Axial T2 described as Sagittal T1 and the other way round: same rows as with the right names."""
    data = light_copy(cohort, tmp_path / "d", study)
    ser = pd.read_csv(data / "train_series_descriptions.csv")
    mine = ser.study_id == study
    swap = {"Sagittal T1": "Axial T2", "Axial T2": "Sagittal T1"}
    ser.loc[mine, "series_description"] = ser.loc[mine, "series_description"].map(lambda d: swap.get(d, d))
    ser.to_csv(data / "train_series_descriptions.csv", index=False)
    with caplog.at_level("WARNING"):
        df = extract(data, points_from_labels(DataFolder(data)), cache=tmp_path / "c", studies=[study])
    assert "described as Sagittal T1 but its orientation is axial; used as Axial T2" in caplog.text
    pd.testing.assert_frame_equal(drop_timing(df), drop_timing(reference))


def test_a_fixed_file_is_measured_afresh_not_served_from_the_cache(cohort, labels, study, reference, tmp_path):
    """Item 7: the cache is keyed by the input files' identity."""
    t1 = series_of(cohort, study, "Sagittal T1")
    data = light_copy(cohort, tmp_path / "d", study, copy_series=[t1])
    sdir = data / "train_images" / str(study) / str(t1)
    saved = {f: f.read_bytes() for f in sdir.glob("*.dcm")}
    for f in saved:
        f.write_bytes(b"broken")
    pts = points_from_labels(DataFolder(data))
    broken = extract(data, pts, cache=tmp_path / "c", studies=[study])
    assert broken[broken.condition.str.contains("foraminal")].diagnostics_error.str.contains("no decodable").any()
    for f, b in saved.items():
        f.write_bytes(b)
    fixed = extract(data, pts, cache=tmp_path / "c", studies=[study])
    pd.testing.assert_frame_equal(drop_timing(fixed), drop_timing(reference))


def test_one_truncated_slice_is_skipped_and_recorded_not_the_study(cohort, labels, study, reference, tmp_path):
    """Item 8: the rest of the series is measured; the skipped file is named in diagnostics_skipped."""
    t1 = series_of(cohort, study, "Sagittal T1")
    data = light_copy(cohort, tmp_path / "d", study, copy_series=[t1])
    used = set(labels[(labels.study_id == study) & (labels.series_id == t1)].instance_number)
    sdir = data / "train_images" / str(study) / str(t1)
    victim = next(f for f in sorted(sdir.glob("*.dcm"), key=lambda f: int(f.stem)) if int(f.stem) not in used)
    victim.write_bytes(victim.read_bytes()[:-500])
    df = extract(data, points_from_labels(DataFolder(data)), cache=tmp_path / "c", studies=[study])
    assert (df.diagnostics_error.fillna("") == reference.diagnostics_error.fillna("")).all()
    assert df.foramen_shape_area_mm2.notna().sum() == reference.foramen_shape_area_mm2.notna().sum()
    assert f"series {t1} {victim.name}: pixel data holds" in df.diagnostics_skipped.iloc[0]


def test_strict_turns_failed_studies_into_exit_1(cohort, labels, study, tmp_path):
    t2 = series_of(cohort, study, "Sagittal T2/STIR")
    data = light_copy(cohort, tmp_path / "d", study, copy_series=[t2])
    for f in (data / "train_images" / str(study) / str(t2)).glob("*.dcm"):
        f.write_bytes(b"x")
    coords = tmp_path / "pts.csv"
    labels[labels.study_id == study].to_csv(coords, index=False)      # the other studies: no point, no decoding
    args = ["extract", str(data), "--coords", str(coords), "--out", str(tmp_path / "f.parquet")]
    lenient = CliRunner().invoke(app, args)
    assert lenient.exit_code == 0 and "1 of 6 studies failed" in " ".join(lenient.output.split())
    strict = CliRunner().invoke(app, [*args, "--strict"])
    assert strict.exit_code == 1
