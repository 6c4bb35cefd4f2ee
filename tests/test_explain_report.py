import re
import shutil
import subprocess

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spinefeat.cli import app
from spinefeat.explain import contributions, explain_study, global_importance
from spinefeat.models import MODEL_GROUPS, load


@pytest.fixture(scope="module")
def graders(trained):
    return load(trained)


@pytest.fixture(scope="module")
def feats(trained):
    return pd.read_parquet(trained / "train_features.parquet")


def test_contributions_plus_expected_value_equal_raw_score(graders, feats):
    for group, booster in graders.boosters.items():
        rows = feats[feats.condition.isin(MODEL_GROUPS[group]) & (feats.diagnostics_error.fillna("") == "")]
        c, cols = contributions(graders, rows, group)
        # The values the trees read: the manifest's columns with the appearance stage's scores in place.
        raw = booster.predict(graders.design(rows, group), raw_score=True)
        assert c.shape == (len(rows), 3, len(cols) + 1)
        assert np.allclose(c.sum(axis=2), raw, atol=1e-6)


def test_global_importance_is_normalised_and_documented(graders):
    imp = global_importance(graders)
    totals = imp.groupby("group").gain_share.sum()
    # a model of this tiny cohort may have made no split at all (every gain 0); any other sums to 1
    assert (totals > 0).any()
    assert np.allclose(totals[totals > 0], 1.0)
    top = imp.sort_values("gain_share", ascending=False).groupby("group").head(3)
    assert (top.definition != "").all()


def test_explained_grades_are_the_submitted_ones(graders, feats):
    """Explanations describe the submission: their probabilities are the ones `predict` writes (rows the
    any-severe sharpening leaves alone) and the grade named is the submission's most likely class."""
    sid = feats.study_id.iloc[0]
    table = explain_study(graders, feats, sid, top=3).set_index("row_id")
    assert len(table) == int((feats[feats.study_id == sid].diagnostics_error.fillna("") == "").sum())
    sub, _ = graders.predict(feats[feats.study_id == sid])
    sub = sub.set_index("row_id").loc[table.index]
    cols = ["normal_mild", "moderate", "severe"]
    untouched = ~table.index.str.contains("spinal_canal")
    assert untouched.sum() >= 10
    np.testing.assert_allclose(table.loc[untouched, cols].to_numpy(), sub.loc[untouched, cols].to_numpy(), atol=1e-9)
    assert (table.loc[untouched, "grade"] == sub.loc[untouched, cols].idxmax(axis=1)).all()
    assert all(len(d) == 3 for d in table.drivers)


def test_explain_cli_prints_and_writes_overlays(trained, cohort, tmp_path):
    sid = pd.read_csv(cohort / "test_series_descriptions.csv").study_id.iloc[0]
    res = CliRunner().invoke(app, ["explain", str(cohort), "--models", str(trained), "--study", str(sid),
                                   "--coords", str(cohort / "truth" / "test_label_coordinates.csv"),
                                   "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    assert "drivers" in res.output and re.search(r"normal|moderate|severe", res.output)
    assert len(list((tmp_path / "e" / "overlays").glob(f"{sid}_*.png"))) >= 20


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium; .ci/run installs it)")
def test_report_renders_in_a_headless_browser(trained, cohort, tmp_path):
    root = tmp_path / "reports"
    res = CliRunner().invoke(app, ["report", "--models", str(trained), "--data", str(cohort), "--root", str(root),
                                   "--name", "t", "--studies", "2"])
    assert res.exit_code == 0, res.output
    pages = sorted((root / "t").glob("*.html"))
    assert (root / "t" / "index.html") in pages and len(pages) == 3
    for page in pages:
        for src in re.findall(r"src=[\"']([^\"']+)[\"']", page.read_text()):
            assert (page.parent / src).is_file(), src
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600", f"--screenshot={shot}",
                    (root / "t" / "index.html").as_uri()], check=True, timeout=120, capture_output=True)
    img = cv2.imread(str(shot), cv2.IMREAD_GRAYSCALE)
    assert img is not None and img.shape == (1600, 1200)
    assert (img < 200).mean() > 0.02 and img.std() > 20        # text, tables and plots, not a blank page


def test_report_escapes_every_value(graders, trained, cohort, tmp_path):
    from spinefeat.dataset import DataFolder
    from spinefeat.report import write_report

    imp = global_importance(graders)
    imp.loc[imp.index[0], "definition"] = "<script>alert(1)</script>"
    manifest = dict(graders.manifest, cv=dict(graders.manifest["cv"], method={"points": "<b>bold</b> & more"}))
    index = write_report(tmp_path / "r", manifest=manifest, oof=pd.read_csv(trained / "oof.csv"),
                         train=DataFolder(cohort).train(), importance=imp, title="<i>x</i>")
    page = index.read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; more" in page and "<title>&lt;i&gt;x&lt;/i&gt;</title>" in page


def test_report_templates_ship_as_package_data():
    """The wheel carries the templates: each file under spinefeat/templates matches a package-data glob."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["spinefeat"]
    templates = sorted((root / "spinefeat" / "templates").iterdir())
    assert templates
    for t in templates:
        assert any(t.relative_to(root / "spinefeat").match(g) for g in globs), t.name
