"""Damaged CSVs, models folders and output paths run through the command line: the exit code and message each
must give. ``cases(cohort, models, work)`` builds every case from a phantom cohort and its trained models
(copies under ``work``; the originals are not touched); :func:`run` runs one through ``CliRunner``.

``python tests/badinput/report.py`` prints the table of all cases (DICOM and CLI) with what each gave.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class CliCase:
    name: str
    what: str
    argv: list[str]
    exit_code: int
    fragment: str          # a piece of the message that must appear (case-insensitive)


def _copy(src: Path, dst: Path, *ignore: str) -> Path:
    if not dst.exists():
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.cache", *ignore))
    return dst


def _edit_manifest(models: Path, fn) -> None:
    man = json.loads((models / "manifest.json").read_text())
    fn(man)
    (models / "manifest.json").write_text(json.dumps(man))


def _rehash(models: Path, section: str, key: str, name: str) -> None:
    """Rewrite the manifest's hash and size of a damaged file, so that the checks after the hash are reached."""
    import hashlib

    data = (models / name).read_bytes()
    _edit_manifest(models, lambda man: man[section][key].update(sha256=hashlib.sha256(data).hexdigest(),
                                                                bytes=len(data)))


def cases(cohort: Path, models: Path, work: Path) -> list[CliCase]:
    cohort, models, work = Path(cohort), Path(models), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    truth = str(cohort / "truth" / "test_label_coordinates.csv")
    out: list[CliCase] = []

    def predict(name, what, model_dir, code, frag, data=cohort, extra=()):
        out.append(CliCase(name, what, ["predict", str(data), "--models", str(model_dir), "--out",
                                        str(work / name / "sub.csv"), *extra], code, frag))

    # --- models folders ---------------------------------------------------------------------------
    m = _copy(models, work / "m_trunc_loc")
    txt = (m / "localizer.txt").read_bytes()
    (m / "localizer.txt").write_bytes(txt[: len(txt) // 2])
    predict("truncated_localizer", "localizer.txt cut to half (LightGBM segfaulted on it)", m, 3, "localizer.txt")

    m = _copy(models, work / "m_byte_loc")
    txt = bytearray((m / "localizer.txt").read_bytes())
    i = txt.rfind(b"leaf_value=") + len(b"leaf_value=") + 1
    txt[i] = ord("7") if txt[i] != ord("7") else ord("3")
    (m / "localizer.txt").write_bytes(bytes(txt))
    predict("changed_localizer", "one byte of localizer.txt changed", m, 3, "hash does not match")

    m = _copy(models, work / "m_mixed")
    shutil.copy(models / "localizer.txt", m / "localizer.txt")
    _edit_manifest(m, lambda man: man["files"]["localizer.txt"].update(sha256="0" * 64))
    predict("mixed_localizer", "a localiser from another run beside these graders", m, 3, "localizer.txt")

    m = _copy(models, work / "m_trunc_grader")
    txt = (m / "spinal.txt").read_bytes()
    (m / "spinal.txt").write_bytes(txt[: len(txt) // 3])
    predict("truncated_grader", "spinal.txt cut to a third", m, 3, "spinal.txt")

    m = _copy(models, work / "m_trunc_grader_rehashed")
    txt = (m / "spinal.txt").read_bytes()
    (m / "spinal.txt").write_bytes(txt[: len(txt) // 3])
    _rehash(m, "models", "spinal", "spinal.txt")
    predict("truncated_grader_rehashed", "spinal.txt truncated and the manifest rewritten to match", m, 3,
            "not a complete LightGBM text model")

    m = _copy(models, work / "m_trunc_manifest")
    txt = (m / "manifest.json").read_bytes()
    (m / "manifest.json").write_bytes(txt[: len(txt) // 2])
    predict("truncated_manifest", "manifest.json cut to half", m, 3, "not valid JSON")

    m = _copy(models, work / "m_no_priors")
    _edit_manifest(m, lambda man: man.pop("priors"))
    predict("manifest_without_priors", "manifest.json without 'priors'", m, 3, "missing priors")

    m = _copy(models, work / "m_no_locjson", "localizer.json")
    predict("missing_localizer_json", "localizer.json deleted", m, 3, "localizer.json")

    m = _copy(models, work / "m_bad_locjson")
    (m / "localizer.json").write_text("{not json")
    _rehash(m, "files", "localizer.json", "localizer.json")
    predict("bad_localizer_json", "localizer.json not JSON (manifest rewritten to match)", m, 3,
            "not a localiser description")

    m = _copy(models, work / "m_old_manifest")
    _edit_manifest(m, lambda man: man.pop("files"))
    predict("manifest_without_localizer_hash", "manifest.json of an older version (no localiser hashes)", m, 3,
            "does not hash localizer.txt")

    m = _copy(models, work / "m_no_oof", "oof.csv")
    out.append(CliCase("report_without_oof", "report on a models folder without oof.csv",
                       ["report", "--models", str(m), "--data", str(cohort), "--root", str(work / "rep")], 3,
                       "oof.csv"))

    # --- CSVs ---------------------------------------------------------------------------------------
    def data_copy(name):
        return _copy(cohort, work / name, "*_images")

    def linked(name):
        """A copy of the cohort's CSVs with its image folders linked (not copied)."""
        d = data_copy(name)
        for split in ("train", "test"):
            if not (d / f"{split}_images").exists():
                (d / f"{split}_images").symlink_to(cohort / f"{split}_images")
        return d

    d = linked("csv_header_only_test_series")
    pd.read_csv(d / "test_series_descriptions.csv").iloc[:0].to_csv(d / "test_series_descriptions.csv", index=False)
    predict("header_only_test_series", "test_series_descriptions.csv with a header only", models, 3,
            "header but no rows", data=d)

    d = linked("csv_header_only_coords")
    hdr = work / "header_only_coords.csv"
    pd.read_csv(truth).iloc[:0].to_csv(hdr, index=False)
    out.append(CliCase("header_only_coordinates", "--coords file with a header only",
                       ["extract", str(d), "--coords", str(hdr), "--split", "test", "--out",
                        str(work / "hoc" / "f.parquet")], 3, "header but no rows"))

    def csv_case(table, name, what, edit, frag):
        """`validate` on a linked copy of the cohort whose CSV ``table`` was damaged by ``edit``."""
        d = linked(f"csv_{name}")
        frame = pd.read_csv(d / table, dtype=str)
        edit(frame)
        frame.to_csv(d / table, index=False)
        out.append(CliCase(name, what, ["validate", str(d)], 3, frag))

    def coord_case(name, what, edit, frag):
        csv_case("train_label_coordinates.csv", name, what, edit, frag)

    coord_case("coords_far_outside", "a coordinate at x = 10000 px",
               lambda c: c.__setitem__("x", ["10000.0"] + list(c["x"][1:])), "outside the")
    coord_case("coords_not_a_number", "x = 'abc'", lambda c: c.__setitem__("x", ["abc"] + list(c["x"][1:])),
               "is not a pixel position")
    coord_case("coords_negative", "y = -3", lambda c: c.__setitem__("y", ["-3"] + list(c["y"][1:])),
               "is not a pixel position")
    coord_case("coords_bad_level", "level 'L9/L10'", lambda c: c.__setitem__("level", ["L9/L10"] + list(c["level"][1:])),
               "unknown level")
    coord_case("coords_bad_condition", "condition 'Knee Pain'",
               lambda c: c.__setitem__("condition", ["Knee Pain"] + list(c["condition"][1:])), "unknown condition")
    coord_case("coords_path_in_id", "study_id '../../etc'",
               lambda c: c.__setitem__("study_id", ["../../etc"] + list(c["study_id"][1:])), "is not an integer id")
    coord_case("coords_missing_column", "no 'y' column", lambda c: c.pop("y"),
               "missing required column")
    coord_case("coords_duplicate_target", "two points for one study, condition and level",
               lambda c: c.loc.__setitem__(c.index[1], c.iloc[0]), "already has a point")
    coord_case("coords_unknown_series", "a series not in the series descriptions",
               lambda c: c.__setitem__("series_id", ["123"] + list(c["series_id"][1:])), "is not in")

    def series_case(name, what, edit, frag):
        csv_case("train_series_descriptions.csv", name, what, edit, frag)

    series_case("unknown_description", "series description 'Coronal T1'",
                lambda s: s.__setitem__("series_description", ["Coronal T1"] + list(s["series_description"][1:])),
                "is not one of")
    series_case("series_listed_twice", "one series listed twice",
                lambda s: s.loc.__setitem__(s.index[1], s.iloc[0]), "listed twice")

    d = linked("csv_train_bad_grade")
    t = pd.read_csv(d / "train.csv", dtype=str)
    t.iloc[0, 1] = "Terrible"
    t.to_csv(d / "train.csv", index=False)
    out.append(CliCase("train_bad_grade", "a grade 'Terrible' in train.csv", ["validate", str(d)], 3,
                       "is not one of"))

    d = linked("csv_train_not_csv")
    (d / "train.csv").write_bytes(b"\x00\xff\xfe binary \x00" * 10)
    out.append(CliCase("train_not_csv", "train.csv is binary", ["validate", str(d)], 3, "train"))

    d = linked("csv_train_empty")
    (d / "train.csv").write_text("")
    out.append(CliCase("train_empty", "train.csv of 0 bytes", ["validate", str(d)], 3, "empty"))

    d = data_copy("empty_study_folder")
    ser = pd.read_csv(cohort / "test_series_descriptions.csv")
    (d / "train_images").symlink_to(cohort / "train_images")
    (d / "test_images").mkdir()
    first = int(ser.study_id.iloc[0])
    for sid in ser.study_id.unique():
        if int(sid) != first:
            (d / "test_images" / str(sid)).symlink_to(cohort / "test_images" / str(sid))
    (d / "test_images" / str(first)).mkdir()
    out.append(CliCase("empty_study_folder", "a test study whose folder is empty", ["validate", str(d)], 3,
                       "has no DICOM files"))
    predict("empty_study_folder_predict", "predict with that empty study: priors for it, exit 0", models, 0,
            "fell back", data=d, extra=["--coords", truth])
    predict("empty_study_folder_strict", "the same with --strict: exit 1", models, 1, "1 of 2 studies failed",
            data=d, extra=["--coords", truth, "--strict"])

    sub = pd.read_csv(cohort / "sample_submission.csv")
    bad_sub = work / "sub_nan.csv"
    sub.assign(severe=["x"] + list(sub.severe[1:])).to_csv(bad_sub, index=False)
    out.append(CliCase("submission_not_a_probability", "a submission with severe = 'x'",
                       ["evaluate", str(bad_sub), "--labels", str(cohort / "train.csv")], 3, "is not a probability"))

    # --- usage and output paths -------------------------------------------------------------------------
    out.append(CliCase("split_foo", "--split foo", ["extract", str(cohort), "--split", "foo"], 2, "--split"))
    out.append(CliCase("missing_models", "extract --coords predicted without --models",
                       ["extract", str(cohort), "--coords", "predicted", "--out", str(work / "x.parquet")], 2,
                       "--models"))
    out.append(CliCase("predict_no_models_option", "predict without --models", ["predict", str(cohort)], 2,
                       "--models"))
    (work / "a_folder").mkdir(exist_ok=True)
    predict("out_is_a_folder", "--out names a folder", models, 2, "it is a folder",
            extra=["--coords", truth, "--out", str(work / "a_folder")])
    (work / "a_file").write_text("x")
    predict("out_parent_is_a_file", "--out under a file", models, 2, "is a file",
            extra=["--coords", truth, "--out", str(work / "a_file" / "sub.csv")])
    out.append(CliCase("train_out_is_a_file", "train --out names a file",
                       ["train", str(cohort), "--out", str(work / "a_file")], 2, "is a file"))
    out.append(CliCase("check_localize_bad_input", "check-localize on a non-coordinate file",
                       ["check-localize", str(cohort / "train.csv"), truth, str(cohort)], 3, "missing required column"))
    out.append(CliCase("check_localize_no_overlap", "check-localize of train points against test truth",
                       ["check-localize", str(cohort / "train_label_coordinates.csv"), truth, str(cohort)], 3,
                       "no true point"))
    return out


def run(case: CliCase):
    """Run one case in-process; return the CliRunner result."""
    from typer.testing import CliRunner

    from spinefeat.cli import app

    return CliRunner().invoke(app, case.argv)
