"""Print the bad-input table: every damaged DICOM series and every CLI case, with the message and exit code.

    python tests/badinput/report.py WORK [--cohort DIR --models DIR]

Without --cohort/--models it synthesises a 6 + 2 study phantom cohort and trains on it under WORK
(a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))          # tests/ (for badinput)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))          # the checkout (for spinefeat)

from badinput import cli_corpus, dicom_corpus  # noqa: E402


def dicom_outcome(case) -> tuple[str, str]:
    """(outcome, message) of loading and scanning a damaged series."""
    from spinefeat import dicom
    from spinefeat.errors import DicomError

    try:
        stacks = dicom.load_series(case.folder, study_id=1, series_id=2)
    except DicomError as exc:
        return "error", str(exc)
    st = stacks[0]
    n = sum(s.geometry.n_slices for s in stacks)
    if st.skipped:
        return "skip", f"{n} slices used; skipped {'; '.join(st.skipped)}"
    msg = f"{n} slices used"
    if st.duplicate_instances:
        msg += f"; instance numbers {list(st.duplicate_instances)} on more than one slice (looking one up refuses)"
    rows = dicom.scan_series(case.folder, study_id=1, series_id=2)
    summary = dicom.summarize_series(__import__("pandas").DataFrame(rows)).iloc[0]
    if summary.get("n_duplicate_positions", 0):
        msg += f"; index: {int(summary['n_duplicate_positions'])} duplicate position"
    if not summary.get("spacing_regular", True):
        msg += "; index: spacing irregular"
    return "ok", msg


def short(text: str, n: int = 160) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"/\S*/", ".../", text)
    return text if len(text) <= n else text[: n - 1] + "…"


def message(output: str) -> str:
    """The part of a command's output that says what went wrong (or, for a batch, how it went)."""
    text = re.sub(r"[│╭╮╰╯─]+", " ", " ".join(output.split()))
    for key in ("error:", "Invalid value", "Missing option", "fell back"):
        if key in text:
            i = text.index(key)
            return text[max(0, text.rfind(" -> ", 0, i) if key == "fell back" else i):]
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--cohort", type=Path)
    ap.add_argument("--models", type=Path)
    a = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)      # warnings of the damaged cases are in the table, not on stderr
    from typer.testing import CliRunner

    from spinefeat.cli import app

    a.work.mkdir(parents=True, exist_ok=True)
    cohort, models = a.cohort, a.models
    if cohort is None:
        cohort = a.work / "cohort"
        if not cohort.exists():
            r = CliRunner().invoke(app, ["synth", str(cohort), "--studies", "6", "--test-studies", "2", "--seed", "3",
                                         "--jobs", "2"])
            assert r.exit_code == 0, r.output
    if models is None:
        models = a.work / "models"
        if not (models / "manifest.json").exists():
            r = CliRunner().invoke(app, ["train", str(cohort), "--out", str(models), "--folds", "3", "--jobs", "2"])
            assert r.exit_code == 0, r.output
    import shutil

    for sub in ("dicom", "cli"):                   # the cases are built afresh from the cohort and models
        shutil.rmtree(a.work / sub, ignore_errors=True)
    print("| DICOM case | damage | expected | got | message |\n|---|---|---|---|---|")
    for c in dicom_corpus.build(a.work / "dicom"):
        got, msg = dicom_outcome(c)
        print(f"| {c.name} | {c.what} | {c.expect} | {got} | {short(msg)} |")
    print("\n| CLI case | input | expected exit | exit | message |\n|---|---|---|---|---|")
    for c in cli_corpus.cases(cohort, models, a.work / "cli"):
        r = cli_corpus.run(c)
        print(f"| {c.name} | {c.what} | {c.exit_code} | {r.exit_code} | {short(message(r.output), 230)} |")


if __name__ == "__main__":
    main()
