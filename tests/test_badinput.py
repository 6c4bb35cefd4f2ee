"""The bad-input corpus (tests/badinput/): every damaged DICOM series, CSV, models folder and output path gives
the documented outcome, a one-line message and its exit code, never a traceback or an identifying value."""

from __future__ import annotations

import pytest

from badinput import cli_corpus, dicom_corpus
from badinput.report import dicom_outcome

IDENTIFYING = ("Doe^Jane", "PID-SECRET-42", "19500101", "SECRET-DESC", "Synthetic^Phantom")


def test_dicom_corpus_gives_the_documented_outcome(tmp_path):
    wrong = []
    for case in dicom_corpus.build(tmp_path):
        got, msg = dicom_outcome(case)
        if got != case.expect or any(v in msg for v in IDENTIFYING):
            wrong.append((case.name, case.expect, got, msg))
    assert not wrong, wrong


def test_header_scan_of_the_corpus_keeps_no_identifying_value(tmp_path):
    import pandas as pd

    from spinefeat import dicom

    rows = []
    for case in dicom_corpus.build(tmp_path):
        rows += dicom.scan_series(case.folder, study_id=1, series_id=2)
    inst = pd.DataFrame(rows)
    text = inst.astype(str).to_csv() + dicom.summarize_series(inst.reindex(columns=dicom.INSTANCE_COLUMNS)
                                                                 .fillna({"error": ""})).to_csv()
    assert not [v for v in IDENTIFYING if v in text]
    assert "dicom_series_description" not in inst.columns and "SeriesDescription" not in text


@pytest.fixture(scope="module")
def cli_cases(cohort, trained, tmp_path_factory):
    return cli_corpus.cases(cohort, trained, tmp_path_factory.mktemp("badinput"))


def test_cli_corpus_gives_its_exit_code_and_message(cli_cases):
    wrong = []
    for case in cli_cases:
        res = cli_corpus.run(case)
        out = res.output
        problems = []
        if res.exit_code != case.exit_code:
            problems.append(f"exit {res.exit_code} != {case.exit_code}")
        if case.fragment.lower() not in " ".join(out.split()).lower():
            problems.append(f"no {case.fragment!r}")
        if "Traceback" in out or res.exception is not None and not isinstance(res.exception, SystemExit):
            problems.append(f"traceback: {res.exception!r}")
        if any(v in out for v in IDENTIFYING):
            problems.append("identifying value in the output")
        if problems:
            wrong.append((case.name, problems, out[-600:]))
    assert not wrong, "\n".join(map(str, wrong))


def test_a_damaged_compressed_slice_logs_one_line_not_pydicoms_traceback(tmp_path, caplog):
    import logging

    case = next(c for c in dicom_corpus.build(tmp_path) if c.name == "compressed_damaged")
    level = logging.getLogger("pydicom").level
    with caplog.at_level(logging.DEBUG):
        got, msg = dicom_outcome(case)
    assert got == "error" and "damaged or not of that syntax" in msg
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]
    assert all(r.exc_info is None for r in caplog.records)
    assert logging.getLogger("pydicom").level == level


def test_index_counts_unreadable_files_and_strict_exits_1(tmp_path):
    import shutil

    import pandas as pd
    from typer.testing import CliRunner

    from spinefeat.cli import app

    case = next(c for c in dicom_corpus.build(tmp_path / "corpus") if c.name == "non_dicom")
    data = tmp_path / "data"
    shutil.copytree(case.folder, data / "train_images" / "1" / "2")
    args = ["index", str(data), "--out", str(tmp_path / "idx" / "index.parquet")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "1 of 3 files failed" in " ".join(res.output.split())
    assert CliRunner().invoke(app, [*args, "--strict"]).exit_code == 1
    inst = pd.read_parquet(tmp_path / "idx" / "index.parquet")
    assert set(inst.loc[inst.error == "", "plane"]) == {"axial"}
    text = inst.astype(str).to_csv() + (tmp_path / "idx" / "index_series.csv").read_text()
    assert not [v for v in IDENTIFYING if v in text]
