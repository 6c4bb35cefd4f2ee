"""The sagittal localisation steps checked on real anatomy: SPIDER sagittal T2 with canal and disc masks.

A SPIDER folder (van der Graaf et al., Sci Data 11:264, 2024; CC BY 4.0) holds
``images/<patient>_t2_SPACE_slice<k>.png`` and ``masks/<same name>`` (0
background, 29 intervertebral disc, 76 vertebra, 150 spinal canal), 0.46875 mm
pixels, 1 mm between slices, superior up and anterior to the left. Discs carry
no level: they are counted from the sacrum (the lowest disc is L5/S1).

For each patient :func:`check_spider` reports

- on the middle slice: the share of the canal mask's rows that the CSF column
  (:func:`~spinefeat.localize.csf_column`) covers and the Dice of that column
  against the canal mask, at the true pixel spacing and with the spacing
  mis-set (the exports a user meets do not always carry it);
- the slice :func:`~spinefeat.localize.mid_sagittal` picks against the slice
  with the largest canal area (mm apart);
- with a detector, per lumbar disc, the distance from the detected disc point
  to the mask's disc level on the canal: the point where the disc's long axis
  meets the canal mask's centre line (where a reader puts the spinal point),
  and whether a detected disc lies nearer another level's point (a level swap).

The detector can be checked leave-patients-out (:func:`spider_folds`) so no
patient is scored by a detector that saw it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .dataset import LEVELS
from .dicom import Stack
from .errors import SpinefeatError
from .geometry import StackGeometry

log = logging.getLogger(__name__)
PIXEL_MM = 0.46875
SLICE_MM = 1.0
DISC, VERTEBRA, CANAL = 29, 76, 150
#: Superior up, anterior to the left: columns run posterior (+y in LPS), rows run inferior (-z).
SPIDER_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
MISSET_SPACING_MM = 0.8
_NAME = re.compile(r"^(?P<patient>[^_]+)_t2_SPACE_slice(?P<k>\d+)\.png$")


@dataclass
class SpiderPatient:
    patient: str
    stack: Stack                 # the slices as a sagittal stack (geometry from the data set's published spacing)
    masks: np.ndarray            # (k, rows, cols) uint8 labels, same order


def read_spider(folder: Path) -> list[SpiderPatient]:
    """Every patient of a SPIDER folder, slices sorted by their number (neighbours 1 mm apart)."""
    from PIL import Image

    folder = Path(folder)
    if not (folder / "images").is_dir() or not (folder / "masks").is_dir():
        raise SpinefeatError(f"{folder}: not a SPIDER folder (needs images/ and masks/)")
    files: dict[str, list[tuple[int, Path]]] = {}
    for f in sorted((folder / "images").glob("*.png")):
        m = _NAME.match(f.name)
        if m:
            files.setdefault(m["patient"], []).append((int(m["k"]), f))
    if not files:
        raise SpinefeatError(f"{folder}/images: no <patient>_t2_SPACE_slice<k>.png files")
    out = []
    for n, (patient, fs) in enumerate(sorted(files.items(), key=lambda kv: kv[0])):
        fs.sort()
        imgs = [np.asarray(Image.open(f).convert("L"), np.float32) for _, f in fs]
        masks = []
        for _, f in fs:
            mf = folder / "masks" / f.name
            if not mf.is_file():
                raise SpinefeatError(f"{folder}: {f.name} has no mask")
            masks.append(np.asarray(Image.open(mf), np.uint8))
        ks = np.array([k for k, _ in fs], float)
        out.append(SpiderPatient(patient, spider_stack(np.stack(imgs), ks, study_id=n), np.stack(masks)))
    return out


def spider_stack(pixels: np.ndarray, slice_numbers, *, pixel_spacing_mm: float = PIXEL_MM, study_id: int = 0) -> Stack:
    """A sagittal :class:`~spinefeat.dicom.Stack` of SPIDER slices: slice ``k`` at x = -k mm, so the normal
    (F_r x F_c = -x) orders them by slice number."""
    ks = np.asarray(slice_numbers, float)
    pos = np.stack([-ks * SLICE_MM, np.zeros_like(ks), np.zeros_like(ks)], axis=1)
    geo = StackGeometry(pos, np.array(SPIDER_IOP), np.array([pixel_spacing_mm] * 2), pixels.shape[1:])
    return Stack(study_id, 0, "Sagittal T2/STIR", pixels.astype(np.float32), geo, ks.astype(int))


def with_spacing(stack: Stack, pixel_spacing_mm: float) -> Stack:
    g = stack.geometry
    geo = StackGeometry(g.positions_mm, g.iop, np.array([pixel_spacing_mm] * 2), g.shape)
    return Stack(stack.study_id, stack.series_id, stack.description, stack.pixels, geo, stack.instance_numbers)


# ---------------------------------------------------------------------------
# Truth from the masks (pure)
# ---------------------------------------------------------------------------

def canal_centreline(mask: np.ndarray) -> np.ndarray:
    """(row, col) of the canal mask's centre on every row it covers."""
    rows = np.flatnonzero(mask.any(axis=1))
    return np.array([[r, np.flatnonzero(mask[r]).mean()] for r in rows], float).reshape(-1, 2)


def disc_points(labels: np.ndarray, *, pixel_spacing_mm: float = PIXEL_MM, min_area_mm2: float = 40.0) -> np.ndarray:
    """Per disc on a labelled sagittal slice, top to bottom: (row, col) where its long axis meets the canal's
    centre line. Discs smaller than ``min_area_mm2`` (a sliver cut by the slice) are left out."""
    line = canal_centreline(labels == CANAL)
    lab, n = ndi.label(labels == DISC)
    pts = []
    for i in range(1, n + 1):
        rr, cc = np.nonzero(lab == i)
        if len(rr) * pixel_spacing_mm ** 2 < min_area_mm2 or len(line) == 0:
            continue
        c0 = np.array([rr.mean(), cc.mean()])
        u = np.linalg.svd(np.stack([rr, cc], 1) - c0, full_matrices=False)[2][0]   # long axis (row, col)
        v = line - c0
        perp = np.abs(v[:, 0] * u[1] - v[:, 1] * u[0])      # distance of centre-line points from the axis
        along = np.abs(v @ u)
        # The nearest crossing: the axis of the lowest disc also meets the sacral canal, further along.
        cross = np.flatnonzero(perp <= 1.5)
        if len(cross):
            j = cross[np.argmin(along[cross])]
        else:
            near = np.flatnonzero(along < 60.0 / pixel_spacing_mm)
            if not len(near):
                continue
            j = near[np.argmin(perp[near])]
        pts.append(line[j])
    return np.array(sorted(pts, key=lambda p: p[0])).reshape(-1, 2)


def lumbar_disc_points(labels: np.ndarray, **kw) -> np.ndarray | None:
    """The five lumbar discs (L1/L2 .. L5/S1) counted from the sacrum: the lowest five discs; None with fewer."""
    pts = disc_points(labels, **kw)
    return pts[-5:] if len(pts) >= 5 else None


def canal_scores(column: np.ndarray, canal: np.ndarray) -> dict[str, float]:
    """Share of the canal mask's rows on which the column has a pixel inside the canal, and Dice of column
    against canal (a column on another structure covers nothing, whatever rows it spans)."""
    rows = canal.any(axis=1)
    covered = float((column & canal).any(axis=1).sum() / max(rows.sum(), 1))
    dice = float(2 * (column & canal).sum() / max(column.sum() + canal.sum(), 1))
    return {"rows_covered": covered, "dice": dice}


# ---------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------

def canal_row(p: SpiderPatient, mid: tuple[int, float]) -> dict:
    """Canal scores of one patient on its middle slice, at the true and at a mis-set spacing, and the
    distance (mm) from the slice :func:`~spinefeat.localize.mid_sagittal` picked (``mid``) to the widest canal
    slice."""
    from .localize import csf_column

    k = p.stack.geometry.n_slices // 2
    canal = p.masks[k] == CANAL
    row = {"patient": p.patient, "slices": p.stack.geometry.n_slices}
    for tag, px in (("", PIXEL_MM), ("_misset", MISSET_SPACING_MM)):
        col, _ = csf_column(p.stack.pixels[k], (px, px))
        for key, v in canal_scores(col, canal).items():
            row[key + tag] = v
    row["mid_slice_off_mm"] = abs(mid[0] - widest_slice(p)) * SLICE_MM
    return row


def disc_row(p: SpiderPatient, localizer, mid: tuple[int, float] | None = None) -> dict:
    """Per lumbar disc: the distance (mm) from the detected disc point to the mask's disc level on the canal
    of the slice the localiser picked (``mid``: :func:`~spinefeat.localize.mid_sagittal`'s pick when already
    made), and whether any detected disc is nearer another level's point."""
    row: dict = {"patient": p.patient}
    try:
        k, _, rc, conf, flags = localizer.find_discs(p.stack, mid=mid)
    except SpinefeatError as exc:
        row["error"] = str(exc)
        return row
    row["count_flags"] = "; ".join(flags)
    truth = lumbar_disc_points(p.masks[k])
    if truth is None:
        row["error"] = "fewer than five discs in the mask on the picked slice"
        return row
    d = np.linalg.norm((rc[:, None, :] - truth[None, :, :]) * PIXEL_MM, axis=2)      # [detected, true]
    for li, lv in enumerate(LEVELS):
        row[f"{lv}_mm"] = float(d[li, li])
        row[f"{lv}_confidence"] = float(conf[li])
    row["level_swap"] = bool(np.any(np.argmin(d, axis=1) != np.arange(5)))
    for lv, v in zip(LEVELS, curve_distances_mm(p.stack, k, truth)):
        row[f"{lv}_curve_mm"] = v
    return row


def curve_distances_mm(stack: Stack, k: int, truth: np.ndarray) -> list[float | None]:
    """Per true disc point (row, col) on slice ``k``: the distance (mm) to the nearest sample of the canal curve
    that the detector reads there (:func:`~spinefeat.localize.fit_canal`, as ``find_discs`` fits it), None
    each when no canal is found. A disc much further off than its curve distance was missed by the detector
    or the count, not by the curve."""
    from .localize import fit_canal

    g = stack.geometry
    canal = fit_canal(stack.pixels[k], g.pixel_spacing_mm, g.iop)
    if canal is None:
        return [None] * len(truth)
    dr, dc = (float(v) for v in g.pixel_spacing_mm)
    d = np.hypot((canal.rows[None, :] - truth[:, :1]) * dr, (canal.cols[None, :] - truth[:, 1:]) * dc)
    return [float(v) for v in d.min(axis=1)]


def _summary(rows: list[dict]) -> dict:
    canal = [r for r in rows if "rows_covered" in r]
    out = {}
    for tag, key in (("", "sagittal_canal"), ("_misset", f"sagittal_canal_spacing_{MISSET_SPACING_MM:g}mm".replace(".", "_"))):
        cov = np.array([r["rows_covered" + tag] for r in canal])
        out[key] = {"rows_covered_median": float(np.median(cov)) if len(cov) else None,
                    "rows_covered_min": float(cov.min()) if len(cov) else None,
                    "dice_median": float(np.median([r["dice" + tag] for r in canal])) if canal else None,
                    "patients": len(canal)}
    out["sagittal_canal"]["mid_slice_off_mm_median"] = (float(np.median([r["mid_slice_off_mm"] for r in canal]))
                                                        if canal else None)
    discs = [r for r in rows if "level_swap" in r]
    if discs:
        mm = np.array([[r[f"{lv}_mm"] for lv in LEVELS] for r in discs])
        curve = np.array([r[f"{lv}_curve_mm"] for r in discs for lv in LEVELS if r.get(f"{lv}_curve_mm") is not None])
        out["discs"] = {"within_5mm": float((mm <= 5).mean()), "median_mm": float(np.median(mm)),
                        "level_swaps": int(sum(r["level_swap"] for r in discs)), "patients": len(discs),
                        "failed": [r["patient"] for r in rows if "error" in r],
                        # where the true disc points lie from the canal curve the detector reads (no detector)
                        "curve_within_3mm": float((curve <= 3).mean()) if len(curve) else None,
                        "curve_max_mm": float(curve.max()) if len(curve) else None}
    return out


def widest_slice(p: SpiderPatient) -> int:
    """The slice with the most canal in its mask (the true mid-sagittal slice)."""
    return int(np.argmax((p.masks == CANAL).sum(axis=(1, 2))))


def spider_samples(p: SpiderPatient, *, around: int = 1) -> tuple[list, list, list]:
    """Detector samples of one patient (on the widest canal slice and ``around`` slices either side: the
    localiser's mid-sagittal pick is rarely exact) and its disc gaps (mm). The lowest five discs of the
    mask are L1/L2 .. L5/S1 (:func:`~spinefeat.localize.disc_samples`), discs above L1/L2 background: the
    detector learns to count from the sacrum."""
    from .localize import disc_samples

    xs, ys, gaps = [], [], []
    w = widest_slice(p)
    g = p.stack.geometry
    for k in range(max(0, w - around), min(g.n_slices, w + around + 1)):
        discs = disc_points(p.masks[k])
        if len(discs) < 5:
            continue
        got = disc_samples(p.stack.pixels[k], g.pixel_spacing_mm, g.iop, discs)
        if got is None:
            continue
        xs.append(got[0])
        ys.append(got[1])
        if k == w:
            gaps.append(np.linalg.norm(np.diff(discs[-5:], axis=0) * g.pixel_spacing_mm, axis=1))
    return xs, ys, gaps


def spider_folds(patients: list[SpiderPatient], folds: int) -> list[list[int]]:
    """Patient indices of each fold (every ``folds``-th patient in name order)."""
    return [list(range(f, len(patients), folds)) for f in range(folds)]


def check_spider(folder: Path, *, localizer=None, folds: int = 4, base=None, jobs: int = 1, progress=None) -> dict:
    """The SPIDER check: per-patient rows and the summary (JSON keys ``sagittal_canal``, ``discs``, ...).

    The discs are detected by ``localizer`` when given (a patient it was
    trained on is marked ``in_training``), else leave-patients-out: ``folds``
    detectors, each trained on the other folds' patients plus ``base`` (the
    samples of :func:`~spinefeat.localize.rsna_samples`, e.g. phantoms), so no
    patient is scored by a detector that saw it.
    """
    from .localize import Localizer, fit_detector, gap_stats, mid_sagittal

    patients = read_spider(folder)
    rows, mids = [], []
    for n, p in enumerate(patients):
        mids.append(mid_sagittal(p.stack))          # once: the canal row and the disc row both use it
        rows.append(canal_row(p, mids[-1]))
        if progress is not None:
            progress(n + 1, 2 * len(patients))
    samples = None
    if localizer is None:
        samples = [spider_samples(p) for p in patients]
    done = len(patients)
    for f, test in enumerate(spider_folds(patients, 1 if localizer is not None else folds)):
        if localizer is None:
            train = [i for i in range(len(patients)) if i not in test]
            xs = [x for i in train for x in samples[i][0]] + list(base["x"] if base else [])
            ys = [y for i in train for y in samples[i][1]] + list(base["y"] if base else [])
            gaps = [g for i in train for g in samples[i][2]] + list(base["gaps"] if base else [])
            loc = Localizer(fit_detector(xs, ys, jobs=jobs), gap_stats(gaps))
        else:
            loc = localizer
        seen = set(loc.trained_on.get("spider_patients", [])) if localizer is not None else set()
        for i in test:
            r = disc_row(patients[i], loc, mids[i])
            r["in_training"] = patients[i].patient in seen
            r["fold"] = f if localizer is None else None
            rows[i].update(r)
            done += 1
            if progress is not None:
                progress(done, 2 * len(patients))
    summary = _summary(rows)
    summary["discs"]["detector"] = ("given localiser" if localizer is not None else
                                    f"leave-patients-out, {folds} folds" + (", plus the given training folder" if base else ""))
    summary["discs"]["patients_in_training"] = int(sum(r.get("in_training", False) for r in rows))
    return {"patients": rows, **summary}


def spider_training(folder: Path) -> dict:
    """What the localiser learns from a SPIDER folder (:func:`spinefeat.localize.train_localizers`'s
    ``extra``): every patient's detector samples and disc gaps."""
    out = {"x": [], "y": [], "gaps": [], "trained_on": {}}
    patients = read_spider(folder)
    for p in patients:
        xs, ys, gaps = spider_samples(p)
        out["x"] += xs
        out["y"] += ys
        out["gaps"] += gaps
    out["trained_on"]["spider_patients"] = [p.patient for p in patients]
    return out
