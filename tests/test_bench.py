"""The benchmark times real work: a replicated folder given by a relative path still measures its studies."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from spinefeat import bench
from spinefeat.errors import SpinefeatError
from spinefeat.pipeline import points_at


def test_throughput_on_a_relative_folder_measures_the_replicated_studies(cohort, monkeypatch):
    # A folder smaller than the run is replicated by symlinks; given as a relative path (`bench ../data`),
    # links relative to the temporary folder used to dangle and every study failed at once.
    monkeypatch.chdir(cohort.parent)
    root = Path(cohort.name)
    points = points_at(root, "labels", "train")[0]
    ids = sorted(points["study_id"].unique().tolist())[:2]
    res = bench.time_throughput(root, "train", ids, points, workers=(1,), min_studies=len(ids) + 1)
    assert res["throughput_studies"] == len(ids) + 1
    # Measuring a phantom study costs tenths of a CPU second; a failed one costs milliseconds.
    assert res["cpu_s_per_study_1_workers"] > 0.05


def test_a_run_whose_study_failed_on_every_row_is_refused():
    table = pd.DataFrame({"study_id": [1, 1, 2, 2], "diagnostics_error": ["", "", "DicomError: x", "DicomError: y"]})
    with pytest.raises(SpinefeatError, match="1 of 2 studies failed"):
        bench._check_measured(table)
    bench._check_measured(table.assign(diagnostics_error=["", "", "", "SegmentError: z"]))
