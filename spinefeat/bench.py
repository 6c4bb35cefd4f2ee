"""Speed and memory: decode-only vs the whole predict path per study, and training time.

Numbers, not assertions: `spinefeat bench` prints them and writes JSON under reports/.
"""

from __future__ import annotations

import platform
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .dataset import DataFolder
from .dicom import load_series
from .extract import add_relative_features, extract_study


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_predict_path(root: Path, points: pd.DataFrame | None, graders, *, split: str, studies: int,
                      localizer=None) -> dict:
    """Per study on one core: decode all series only, then read + localise + segment + features + grade.

    With ``localizer`` the points are found (``points`` is ignored); otherwise they come from ``points``.
    """
    folder = DataFolder(root)
    series = folder.series(split)
    ids = list(dict.fromkeys(series["study_id"]))[:studies]
    decode, full = [], []
    for sid in ids:
        t0 = time.perf_counter()
        for rec in series[series["study_id"] == sid].itertuples():
            load_series(folder.images_dir(split) / str(sid) / str(rec.series_id))
        decode.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        feats = add_relative_features(extract_study(root, split, sid, series, points, localizer=localizer))
        if graders is not None:
            graders.predict(feats)
        full.append(time.perf_counter() - t0)
    d, f = np.array(decode), np.array(full)
    return {"studies": len(ids), "points": "localised" if localizer is not None else "given",
            "decode_s_per_study_median": float(np.median(d)),
            "predict_path_s_per_study_median": float(np.median(f)),
            "predict_over_decode_median": float(np.median(f / d))}


def time_training(features: pd.DataFrame, train: pd.DataFrame, *, studies: int, jobs: int, seed: int = 0) -> dict:
    """Fit time for ``studies`` studies' rows, bootstrapped from a feature table (new ids per copy)."""
    from .models import fit

    rng = np.random.default_rng(seed)
    src = np.array(sorted(set(features["study_id"]) & set(train.index)))
    pick = rng.choice(src, size=studies, replace=True)
    feats, labels = [], []
    for i, sid in enumerate(pick):
        new = 10 ** 9 + i
        f = features[features["study_id"] == sid].copy()
        f["study_id"] = new
        f["row_id"] = f["row_id"].str.replace(f"{sid}_", f"{new}_", n=1, regex=False)
        feats.append(f)
        labels.append(train.loc[[sid]].rename(index={sid: new}))
    big_f = pd.concat(feats, ignore_index=True)
    big_t = pd.concat(labels)
    t0 = time.perf_counter()
    res = fit(big_f, big_t, folds=5, jobs=jobs, seed=seed)
    return {"train_studies": studies, "train_rows": res["cv"]["rows"], "train_jobs": jobs,
            "train_seconds_5fold_cv_plus_final": time.perf_counter() - t0,
            "train_seconds_final_fit_25_targets": res["cv"]["seconds_final_fit"]}


def environment() -> dict:
    import os

    return {"spinefeat_version": __version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "peak_rss_mb": _peak_rss_mb()}
