"""How far localised points are from labelled ones, and whether the confidence ranks the error."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..dataset import DataFolder
from ..images import StudyImages

log = logging.getLogger(__name__)


def point_errors(root: Path, predicted: pd.DataFrame, truth: pd.DataFrame, *, split: str) -> pd.DataFrame:
    """Per true point: distance (mm, patient space) to the predicted point of the same target,
    whether it sits nearer another level's true point (wrong level), and the slice offset."""
    folder = DataFolder(root)
    series = folder.series(split)
    out = []
    for sid, tp in truth.groupby("study_id"):
        pp = predicted[predicted["study_id"] == sid]
        if pp.empty:
            continue
        images = StudyImages(folder, split, int(sid), series)
        txyz = {(r.condition, r.level): images.label_xyz(r._asdict()) for r in tp.itertuples()}
        for r in pp.itertuples():
            key = (r.condition, r.level)
            if key not in txyz:
                continue
            p = images.label_xyz(r._asdict())
            d = np.linalg.norm(p - txyz[key])
            others = [np.linalg.norm(p - v) for (c, lv), v in txyz.items() if c == r.condition and lv != r.level]
            true_row = tp[(tp["condition"] == r.condition) & (tp["level"] == r.level)].iloc[0]
            if int(true_row["series_id"]) == int(r.series_id):
                st_t, k_t = images.locate(true_row["series_id"], true_row["instance_number"])
                st_p, k_p = images.locate(r.series_id, r.instance_number)
                slice_off = abs(k_t - k_p) if st_t is st_p else 99
            else:
                slice_off = 99
            out.append({"study_id": sid, "condition": r.condition, "level": r.level, "error_mm": float(d),
                        "wrong_level": bool(others and min(others) < d), "slice_offset": int(slice_off),
                        "confidence": float(getattr(r, "confidence", np.nan))})
    return pd.DataFrame(out)


def confidence_auc(err: pd.DataFrame, *, threshold_mm: float = 6.0) -> float:
    """How well a point's confidence ranks its error: the AUC of ``1 - confidence`` for an error over
    ``threshold_mm`` (0.5 is chance, 1 every large error is less confident than every small one). NaN
    when the points have no confidence or all errors fall on one side of the threshold."""
    ok = err.dropna(subset=["confidence"]) if "confidence" in err else err.iloc[0:0]
    bad = (ok["error_mm"] > threshold_mm).to_numpy()
    if bad.all() or not bad.any():
        return float("nan")
    rank = (-ok["confidence"]).rank().to_numpy()              # ties share their mean rank
    n1, n0 = int(bad.sum()), int((~bad).sum())
    return float((rank[bad].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def summarize_errors(err: pd.DataFrame) -> pd.DataFrame:
    """Per condition: median and 95th percentile error, share within 5 mm, wrong level, slice exact/off by one/worse."""
    rows = []
    for cond, g in err.groupby("condition"):
        rows.append({"condition": cond, "points": len(g), "median_mm": g.error_mm.median(),
                     "p95_mm": g.error_mm.quantile(0.95), "within_5mm": (g.error_mm <= 5).mean(),
                     "wrong_level": g.wrong_level.mean(), "slice_exact": (g.slice_offset == 0).mean(),
                     "slice_off_by_one": (g.slice_offset == 1).mean(), "slice_worse": (g.slice_offset > 1).mean()})
    return pd.DataFrame(rows)
