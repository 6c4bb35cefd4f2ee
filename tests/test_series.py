"""Which series the levels are found on, and points moving between series only within one frame of reference."""

import shutil

import numpy as np
import pandas as pd
import pydicom
import pytest

from spinefeat.dataset import DataFolder
from spinefeat.dicom import Stack
from spinefeat.errors import GeometryError
from spinefeat.extract import extract_study, points_from_labels
from spinefeat.images import StudyImages
from spinefeat.geometry import StackGeometry
from spinefeat.localize import Localizer, localize_study
from spinefeat.series import project_to_series, series_for_levels

SAGITTAL = [0, 1, 0, 0, 0, -1]
AXIAL = [1, 0, 0, 0, 1, 0]


class FakeImages:
    """Series ids -> (description, stacks), as StudyImages answers them."""

    def __init__(self, series: dict[int, tuple[str, list[Stack]]]):
        self.series = series

    def series_of(self, description):
        return [sid for sid, (d, _) in self.series.items() if d == description]

    def stacks(self, sid):
        return self.series[sid][1]


def _stack(sid, n_slices, iop=SAGITTAL, frame="1.2.3", z0=0.0):
    normal = np.cross(iop[:3], iop[3:])
    pos = np.array([[0.0, 0.0, z0]]) + np.arange(n_slices)[:, None] * 4.0 * normal
    geo = StackGeometry(pos, iop, [1.0, 1.0], (64, 64), frame)
    return Stack(1, sid, "", np.zeros((n_slices, 64, 64), np.float32), geo, np.arange(1, n_slices + 1))


def test_levels_on_the_most_complete_t2_and_on_t1_without_t2():
    two = FakeImages({11: ("Sagittal T2/STIR", [_stack(11, 9)]), 12: ("Sagittal T2/STIR", [_stack(12, 17)]),
                      13: ("Sagittal T1", [_stack(13, 19)])})
    choice = series_for_levels(two)
    assert choice.series_id == 12 and choice.stack.geometry.n_slices == 17
    assert "most complete of 2" in choice.reason and "9 and 17" in choice.reason
    no_t2 = FakeImages({13: ("Sagittal T1", [_stack(13, 19)]), 14: ("Axial T2", [_stack(14, 30, AXIAL)])})
    choice = series_for_levels(no_t2)
    assert choice.series_id == 13 and choice.description == "Sagittal T1"
    assert "no Sagittal T2/STIR" in choice.reason
    assert series_for_levels(FakeImages({14: ("Axial T2", [_stack(14, 30, AXIAL)])})) is None


def test_project_to_series_stays_in_the_points_frame():
    images = FakeImages({1: ("Axial T2", [_stack(1, 10, AXIAL, frame="1.2.3")]),
                         2: ("Axial T2", [_stack(2, 10, AXIAL, frame="9.9.9", z0=1.0)])})
    xyz = [10.0, 10.0, 9.0]           # exactly on slice 2 of series 1; series 2 has no slice nearer
    sid, _, pr = project_to_series(xyz, images, [1, 2], frame_of_reference="9.9.9")
    assert sid == 2 and pr["distance_mm"] == pytest.approx(0.0)          # the other frame is never a candidate
    sid, _, pr = project_to_series(xyz, images, [1, 2], frame_of_reference="1.2.3")
    assert sid == 1 and pr["slice"] == 2 and pr["in_image"]
    with pytest.raises(GeometryError, match="FrameOfReferenceUID"):
        project_to_series(xyz, images, [2], frame_of_reference="1.2.3")


def _copy_study(cohort, split, study_id, dest):
    """A folder holding one study of ``cohort`` (and the CSVs), to be altered."""
    dest.mkdir()
    for f in cohort.glob("*.csv"):
        shutil.copy(f, dest / f.name)
    shutil.copytree(cohort / f"{split}_images" / str(study_id), dest / f"{split}_images" / str(study_id))
    return dest


def _series_id(series, study_id, description):
    return int(series[(series.study_id == study_id) & (series.series_description == description)].series_id.iloc[0])


@pytest.fixture(scope="module")
def other_frame(cohort, tmp_path_factory):
    """The first training study with its Axial T2 series moved into another FrameOfReferenceUID."""
    series = DataFolder(cohort).series("train")
    sid = int(series.study_id.iloc[0])
    root = _copy_study(cohort, "train", sid, tmp_path_factory.mktemp("frame") / "d")
    ax = root / "train_images" / str(sid) / str(_series_id(series, sid, "Axial T2"))
    for f in ax.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.save_as(f)
    return root, sid, series


def test_axial_sac_is_not_measured_across_frames_and_the_row_says_why(cohort, other_frame):
    root, sid, series = other_frame
    points = points_from_labels(DataFolder(cohort))
    same = extract_study(cohort, "train", sid, series, points)
    moved = extract_study(root, "train", sid, series, points)
    sp_same = same[same.condition == "spinal_canal_stenosis"]
    sp_moved = moved[moved.condition == "spinal_canal_stenosis"]
    assert sp_same.canal_ax_shape_area_mm2.notna().all()               # the control: measured in one frame
    assert sp_moved.reindex(columns=["canal_ax_shape_area_mm2"]).isna().all().all()   # no column when none measured
    assert sp_moved.diagnostics_note.str.contains("FrameOfReferenceUID").all()
    assert sp_moved.canal_sag_shape_ap_width_mm.notna().all()          # the sagittal measurement stays


def test_recess_points_are_not_placed_across_frames(trained, other_frame):
    root, sid, series = other_frame
    rows, missing = localize_study(Localizer.load(trained), root, "train", sid, series)
    placed = pd.DataFrame(rows)
    assert not placed.condition.str.contains("subarticular").any()
    assert sum("FrameOfReferenceUID" in m for m in missing) == 10       # both recesses at five levels
    assert (placed.condition == "spinal_canal_stenosis").sum() == 5      # the sagittal points are placed


@pytest.fixture(scope="module")
def frame_per_series(cohort, tmp_path_factory):
    """The first training study with every series given a FrameOfReferenceUID of its own (as the RSNA 2024
    anonymiser left every study)."""
    series = DataFolder(cohort).series("train")
    sid = int(series.study_id.iloc[0])
    root = _copy_study(cohort, "train", sid, tmp_path_factory.mktemp("frames") / "d")
    for i, d in enumerate(sorted((root / "train_images" / str(sid)).iterdir())):
        for f in d.glob("*.dcm"):
            ds = pydicom.dcmread(f)
            ds.FrameOfReferenceUID = f"1.2.826.0.1.3680043.8.498.{i + 1}"
            ds.save_as(f)
    return root, sid, series


def test_a_frame_per_series_is_taken_as_one_frame(cohort, other_frame, frame_per_series):
    root, sid, series = frame_per_series
    assert StudyImages(DataFolder(root), "train", sid, series).study_frame()
    assert not StudyImages(DataFolder(other_frame[0]), "train", sid, series).study_frame()   # T1 and T2 share one
    assert not StudyImages(DataFolder(cohort), "train", sid, series).study_frame()
    points = points_from_labels(DataFolder(cohort))
    rows = extract_study(root, "train", sid, series, points)
    assert rows[rows.condition == "spinal_canal_stenosis"].canal_ax_shape_area_mm2.notna().all()


def test_recesses_are_placed_when_every_series_has_its_own_frame(trained, frame_per_series):
    root, sid, series = frame_per_series
    rows, missing = localize_study(Localizer.load(trained), root, "train", sid, series)
    assert not any("FrameOfReferenceUID" in m for m in missing)
    assert sum("subarticular" in r["condition"] for r in rows) == 10


def test_localiser_finds_levels_on_the_most_complete_t2(trained, cohort, tmp_path):
    """A second, truncated Sagittal T2 listed first: the levels come from the complete one."""
    series = DataFolder(cohort).series("test")
    sid = int(series.study_id.iloc[0])
    root = _copy_study(cohort, "test", sid, tmp_path / "d")
    t2 = _series_id(series, sid, "Sagittal T2/STIR")
    study_dir = root / "test_images" / str(sid)
    files = sorted((study_dir / str(t2)).glob("*.dcm"), key=lambda f: int(f.stem))
    (study_dir / "7").mkdir()
    for f in files[: len(files) // 3]:
        shutil.copy(f, study_dir / "7" / f.name)
    extra = pd.DataFrame([{"study_id": sid, "series_id": 7, "series_description": "Sagittal T2/STIR"}])
    two = pd.concat([extra, series], ignore_index=True)
    rows, _ = localize_study(Localizer.load(trained), root, "test", sid, two)
    spinal = [r for r in rows if r["condition"] == "spinal_canal_stenosis"]
    assert len(spinal) == 5 and {r["series_id"] for r in spinal} == {t2}
    assert series_for_levels(StudyImages(DataFolder(root), "test", sid, two)).series_id == t2


def test_localiser_finds_levels_on_t1_when_t2_is_missing(trained, cohort, monkeypatch):
    series = DataFolder(cohort).series("test")
    sid = int(series.study_id.iloc[0])
    t1 = _series_id(series, sid, "Sagittal T1")
    no_t2 = series[~((series.study_id == sid) & (series.series_description == "Sagittal T2/STIR"))]
    tried = []
    real = Localizer.find_discs
    monkeypatch.setattr(Localizer, "find_discs", lambda self, stack: tried.append(stack.series_id) or real(self, stack))
    try:
        rows, missing = localize_study(Localizer.load(trained), cohort, "test", sid, no_t2)
    except Exception as exc:          # the detector learnt on T2 may not find the levels on T1: it must have tried
        assert str(t1) in str(exc)
        rows, missing = [], []
    assert tried == [t1]
    assert not any(r["condition"] == "spinal_canal_stenosis" for r in rows)
    if rows:
        assert any("no Sagittal T2/STIR" in m and str(t1) in m for m in missing)
