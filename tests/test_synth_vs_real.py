"""The real-vs-phantom gap table (report.real_vs_phantom_gaps) on hand-made tables with known answers."""

import numpy as np
import pandas as pd
import pytest

from spinefeat.report import real_vs_phantom_gaps, write_real_vs_phantom


def _tables(shift: float):
    real = {"foraminal": pd.DataFrame({"foramen_shape_fat_area_mm2": np.linspace(10, 20, 501)})}
    phantom = pd.DataFrame({
        "condition": ["left_neural_foraminal_narrowing"] * 301 + ["spinal_canal_stenosis"] * 301,
        # the spinal rows are far away: they must not be counted as foramina
        "foramen_shape_fat_area_mm2": np.concatenate([np.linspace(10, 20, 301) + shift, np.full(301, 1e6)])})
    return real, phantom


def test_gaps_ks_is_small_for_one_distribution_and_one_for_disjoint_ones():
    real, phantom = _tables(0.0)
    row = real_vs_phantom_gaps(real, phantom).set_index("measurement").loc["foramen_shape_fat_area_mm2"]
    assert row.real_rows == 501 and row.phantom_rows == 301
    assert row.ks < 0.01 and row.median_ratio == pytest.approx(1.0)
    real, phantom = _tables(100.0)            # phantoms 10 x larger, no overlap
    row = real_vs_phantom_gaps(real, phantom).set_index("measurement").loc["foramen_shape_fat_area_mm2"]
    assert row.ks == 1.0
    assert row.median_ratio == pytest.approx(115.0 / 15.0)


def test_gaps_table_written_beside_the_plot(tmp_path):
    real, phantom = _tables(100.0)
    out = write_real_vs_phantom(real, phantom, tmp_path / "rvp.png")
    assert out.exists() and out.stat().st_size > 1000
    md = (tmp_path / "rvp.md").read_text().splitlines()
    assert len(md) == 3 and "foramen_shape_fat_area_mm2" in md[2] and md[2].rstrip().endswith("| 1.00 |")
