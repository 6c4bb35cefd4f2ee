"""A study drawn, rendered and written; a cohort's studies and its CSVs in the Kaggle layout with a truth sidecar."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..dataset import CONDITION_SERIES, CONDITIONS, LEVEL_NAMES, LEVELS, SEVERITIES, TARGETS, TRAIN_COLUMNS
from ..geometry import project_to_stacks
from .acquisition import plan_study
from .anatomy import Phantom, make_phantom
from .dicom_writer import uid, write_dicom
from .latents import draw_latents, label_stats
from .rendering import render_slice
from .truth import label_points, true_measurements


def _unique_ids(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[int]:
    """``n`` distinct random integers in ``[lo, hi)`` (RSNA-like ids)."""
    ids: list[int] = []
    while len(ids) < n:
        cand = int(rng.integers(lo, hi))
        if cand not in ids:
            ids.append(cand)
    return ids


@dataclass
class StudyResult:
    """What one written study adds to the cohort's CSVs and truth sidecar."""

    study_id: int
    series: list[tuple[int, str]]            # (series_id, description)
    labels: dict[str, int | None]
    coordinates: list[dict]
    truth: list[dict]
    seconds: float


def draw_study(seed: int, index: int, stats: dict | None = None):
    """The generator, latents and phantom of study ``index`` of a cohort drawn with ``seed``.

    The generator is returned in the state the acquisition and rendering go on from.
    """
    rng = np.random.default_rng([seed, index, 7])
    latents = draw_latents(rng, stats)
    return rng, latents, make_phantom(rng, latents)


def study_phantom(seed: int, index: int) -> Phantom:
    """The phantom of study number ``index`` of a cohort drawn with ``seed`` (``synth_index`` in truth/targets.csv)."""
    return draw_study(seed, index)[2]


def synth_study(root: Path, split: str, study_id: int, seed: int, index: int, *, stats: dict | None = None) -> StudyResult:
    """Draw, render and write one study under ``root/{split}_images/<study_id>/``."""
    t0 = time.perf_counter()
    rng, latents, ph = draw_study(seed, index, stats)
    frame = uid("frame", seed, study_id)
    plans = plan_study(rng, ph, frame)
    study_uid = uid("study", seed, study_id)
    scale = rng.uniform(700, 2600)
    noise = rng.uniform(0.018, 0.04)
    cache: dict = {}
    series_ids = _unique_ids(rng, len(plans), 10 ** 8, 4 * 10 ** 9)
    series_out, ser_geo = [], {}
    for si, (desc, plan) in enumerate(plans.items()):
        series_id = int(series_ids[si])
        sdir = Path(root) / f"{split}_images" / str(study_id) / str(series_id)
        sdir.mkdir(parents=True, exist_ok=True)
        series_uid = uid("series", seed, study_id, series_id)
        series_gain = scale * rng.uniform(0.85, 1.15)
        for st, numbers in zip(plan.stacks, plan.instance_order):
            for k in range(st.n_slices):
                img, _ = render_slice(ph, st, k, plan.sequence, rng, noise=noise, thickness_mm=plan.thickness_mm,
                                      cache=cache)
                px = np.clip(img * series_gain, 0, 65535).astype(np.uint16)
                write_dicom(sdir / f"{numbers[k]}.dcm", px, st, k, study_uid=study_uid, series_uid=series_uid,
                             series_number=si + 2, description=desc, instance=numbers[k],
                             thickness=plan.thickness_mm, spacing=st.slice_spacing_mm, study_id=study_id)
        series_out.append((series_id, desc))
        ser_geo[desc] = (series_id, plan)
    # Coordinates: each point on the instance nearest to the structure it marks.
    coords = []
    pts = label_points(ph)
    for (cond, lv), xyz in pts.items():
        series_id, plan = ser_geo[CONDITION_SERIES[cond]]
        p = project_to_stacks(xyz, plan.stacks, frame_of_reference=plan.stacks[0].frame_of_reference)
        coords.append({"study_id": study_id, "series_id": series_id,
                       "instance_number": plan.instance_order[p["stack"]][p["slice"]],
                       "condition": cond, "level": lv, "x": p["col"], "y": p["row"],
                       "x_mm": float(xyz[0]), "y_mm": float(xyz[1]), "z_mm": float(xyz[2])})
    meas = true_measurements(ph)
    truth = []
    for cond in CONDITIONS:
        for lv in LEVELS:
            lat = latents[f"{cond}_{lv}"]
            truth.append({"study_id": study_id, "split": split, "synth_index": index, "condition": cond, "level": lv,
                          "latent_f": lat["f"], "true_grade": lat["grade"],
                          "label": -1 if lat["label"] is None else lat["label"], **meas[(cond, lv)]})
    labels = {t: latents[t]["label"] for t in TRAIN_COLUMNS}
    return StudyResult(study_id, series_out, labels, coords, truth, time.perf_counter() - t0)


def _grade_name(g):
    return "" if g is None else SEVERITIES[g]


def synth_cohort(out: Path, *, studies: int, test_studies: int = 0, seed: int = 0, jobs: int = 1,
                 progress=None) -> dict:
    """Write a cohort in the Kaggle layout; returns a summary (counts, seconds per study).

    ``progress`` is called with the number of studies written after each one.
    """
    from joblib import Parallel, delayed

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stats = label_stats()
    rng = np.random.default_rng([seed, 0])
    ids = _unique_ids(rng, studies + test_studies, 10 ** 6, 4 * 10 ** 9)
    work = [("train", int(ids[i]), i) for i in range(studies)]
    work += [("test", int(ids[studies + i]), studies + i) for i in range(test_studies)]
    results: list[tuple[str, StudyResult]] = []
    runner = Parallel(n_jobs=jobs, return_as="generator")
    for split, res in zip((w[0] for w in work),
                          runner(delayed(synth_study)(out, sp, sid, seed, i, stats=stats) for sp, sid, i in work)):
        results.append((split, res))
        if progress is not None:
            progress(len(results))
    (out / "truth").mkdir(exist_ok=True)
    desc_cols = ["study_id", "series_id", "series_description"]
    coord_cols = ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]
    title = {c: c.replace("_", " ").title() for c in CONDITIONS}
    lvl = dict(zip(LEVELS, LEVEL_NAMES))

    def label_frame(rs):
        return pd.DataFrame([{"study_id": r.study_id, **{t: _grade_name(r.labels[t]) for t in TRAIN_COLUMNS}}
                             for r in rs], columns=["study_id", *TRAIN_COLUMNS])

    def coord_frame(rs):
        df = pd.DataFrame([c for r in rs for c in r.coordinates])
        df["condition"] = df["condition"].map(title)
        df["level"] = df["level"].map(lvl)
        return df

    for split in ("train", "test"):
        rs = [r for s, r in results if s == split]
        if not rs:
            continue
        pd.DataFrame([(r.study_id, sid, d) for r in rs for sid, d in r.series], columns=desc_cols) \
            .to_csv(out / f"{split}_series_descriptions.csv", index=False)
        coords = coord_frame(rs)
        if split == "train":
            label_frame(rs).to_csv(out / "train.csv", index=False)
            # Only labelled targets get coordinates, as in the challenge.
            keep = [(r.study_id, c["condition"], c["level"]) for r in rs for c in r.coordinates
                    if r.labels[f"{c['condition']}_{c['level']}"] is not None]
            keep_df = pd.DataFrame(keep, columns=["study_id", "condition", "level"])
            keep_df["condition"] = keep_df["condition"].map(title)
            keep_df["level"] = keep_df["level"].map(lvl)
            coords.merge(keep_df)[coord_cols].to_csv(out / "train_label_coordinates.csv", index=False)
        else:
            label_frame(rs).to_csv(out / "truth" / "test_labels.csv", index=False)
            coords.to_csv(out / "truth" / "test_label_coordinates.csv", index=False)
            pd.DataFrame([{"row_id": f"{r.study_id}_{t}", "normal_mild": 1 / 3, "moderate": 1 / 3, "severe": 1 / 3}
                          for r in rs for t in TARGETS]).to_csv(out / "sample_submission.csv", index=False)
    pd.DataFrame([t for _, r in results for t in r.truth]).to_csv(out / "truth" / "targets.csv", index=False)
    pd.DataFrame([c for _, r in results for c in r.coordinates]).assign(
        split=[s for s, r in results for _ in r.coordinates]).to_csv(out / "truth" / "coordinates_mm.csv", index=False)
    secs = [r.seconds for _, r in results]
    summary = {"spinefeat_version": __version__, "seed": seed, "train_studies": studies,
               "test_studies": test_studies, "seconds_per_study_mean": float(np.mean(secs)) if secs else 0.0,
               "seconds_per_study_max": float(np.max(secs)) if secs else 0.0}
    (out / "truth" / "synth.json").write_text(json.dumps(summary, indent=2))
    return summary
