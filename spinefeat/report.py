"""Pictures and reports written to disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import pandas as pd
import numpy as np

from .dataset import SERIES_TYPES, DataFolder
from .dicom import load_series
from .viz import contact_sheet


def preview_sheet(folders: list[Path], *, studies: int = 1, tile_px: int = 256) -> np.ndarray:
    """Contact sheets of the first ``studies`` studies of each folder, grouped by series type.

    Rows come in the order of :data:`~spinefeat.dataset.SERIES_TYPES`, so a real
    and a synthetic folder given together show each series type side by side.
    """
    rows = {t: [] for t in SERIES_TYPES}
    for root in folders:
        folder = DataFolder(root)
        for split in folder.splits():
            ser = folder.series(split)
            for study_id in list(dict.fromkeys(ser["study_id"]))[:studies]:
                for rec in ser[ser["study_id"] == study_id].itertuples():
                    stacks = load_series(folder.images_dir(split) / str(study_id) / str(rec.series_id),
                                         description=rec.series_description)
                    title = f"{study_id} {rec.series_description}"
                    rows[rec.series_description].append(contact_sheet(stacks, title=title, tile_px=tile_px))
            break   # one split per folder
    return np.vstack([r for t in SERIES_TYPES for r in rows[t]])


def write_preview(folders: list[Path], out: Path, *, studies: int = 1) -> Path:
    """Write :func:`preview_sheet` as a PNG."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), preview_sheet(folders, studies=studies))
    return out


#: (feature column, truth column, error kind) of the main measurement per condition group.
MAIN_MEASUREMENTS = {
    "spinal_canal_stenosis": [("canal_ax_shape_area_mm2", "canal_area_mm2", "relative"),
                              ("canal_ax_shape_ap_diameter_mm", "canal_ap_mm", "absolute")],
    "neural_foraminal_narrowing": [("foramen_shape_area_mm2", "foramen_area_mm2", "relative"),
                                   ("foramen_shape_height_mm", "foramen_height_mm", "absolute")],
    "subarticular_stenosis": [("recess_shape_depth_mm", "recess_depth_mm", "absolute"),
                              # the truth's recess area is the lobe alone, the measurement the open space: no error
                              ("recess_shape_area_mm2", None, None)],
}


def synth_accuracy(features: pd.DataFrame, truth: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Measurements against a synthetic cohort's truth sidecar (``truth/targets.csv``).

    Returns ``(errors, separation)``: per measurement the median absolute
    error (in % for areas, mm for lengths) and the share of failed
    segmentations; per measurement the Spearman correlation with the rendered
    grade and with the written label, and its median per grade.
    """
    m = features.merge(truth, on=["study_id", "condition", "level"])
    errs, seps = [], []
    for group, items in MAIN_MEASUREMENTS.items():
        sub = m[m["condition"].str.contains(group)]
        for feat, true, kind in items:
            est = sub[feat].astype(float)
            if true is not None:
                ref = sub[true].astype(float)
                ok = est.notna() & ref.notna()
                e = (est[ok] / ref[ok] - 1).abs() * 100 if kind == "relative" else (est[ok] - ref[ok]).abs()
                errs.append({"group": group, "measurement": feat, "points": int(len(sub)), "measured": int(ok.sum()),
                             "median_abs_error": float(e.median()), "unit": "%" if kind == "relative" else "mm"})
            lab = sub["label"].where(sub["label"] >= 0)
            seps.append({"group": group, "measurement": feat,
                         "spearman_grade": float(est.corr(sub["true_grade"], method="spearman")),
                         "spearman_label": float(est.corr(lab, method="spearman")),
                         **{f"median_{g}": float(est[sub["true_grade"] == i].median())
                            for i, g in enumerate(("normal_mild", "moderate", "severe"))}})
    return pd.DataFrame(errs), pd.DataFrame(seps)
