"""Shared fixtures: the path to ../shared (real reference data) and a small synthetic cohort."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spinefeat.cli import app

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """SPINEFEAT_SHARED, or the `shared/` folder beside the checkout."""
    return Path(os.environ.get("SPINEFEAT_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    root = shared_dir() / "data"
    if not root.is_dir():
        pytest.skip(f"real reference data not found at {root} (set SPINEFEAT_SHARED to the shared/ folder)")
    return root


@pytest.fixture(scope="session")
def rsna(shared) -> Path:
    return shared / "rsna"


@pytest.fixture(scope="session")
def real_study(shared) -> Path:
    return shared / "real_study"


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """6 train + 2 test phantom studies written through the CLI (seed 3)."""
    out = tmp_path_factory.mktemp("cohort") / "c"
    res = CliRunner().invoke(app, ["synth", str(out), "--studies", "6", "--test-studies", "2", "--seed", "3",
                                   "--jobs", "2"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="session")
def trained(cohort, tmp_path_factory):
    """Graders trained on the cohort through the CLI (3 folds)."""
    out = tmp_path_factory.mktemp("models") / "m"
    res = CliRunner().invoke(app, ["train", str(cohort), "--out", str(out), "--folds", "3", "--jobs", "2"])
    assert res.exit_code == 0, res.output
    return out
