"""Find the 25 condition-level points without labels: classical features, a learned detector, a chain model.

1. Sagittal T2: the mid-sagittal slice is the one with the most CSF in its
   elongated bright column; a curve ``col = f(row)`` is fitted through the
   column (pieces broken by a tight canal joined along the curve), continued
   straight past its ends, and sampled every millimetre.
2. At each sample, the tissue anterior to the canal (vertebral bodies and
   discs alternate) near the sample and up to 64 mm along the curve (is there
   a disc above and below: the sacrum has none), the canal's width, the
   distance to the end of the CSF and the height in the image (fields of view
   are centred on the lumbar spine) feed a LightGBM classifier: background or
   one of the five discs.
3. A chain model picks exactly five ordered samples, L1/L2 at the top, by
   dynamic programming over the detector's log-probabilities plus spacing
   priors learned from the training coordinates: no level is skipped or
   doubled. Each disc then sits at the centre of its detector plateau.
4. The dural sac centres on the axial T2 slices through the discs give the
   midline at each level (a Theil-Sen line along the spine: the sagittal plane
   may be tilted); each spinal point goes on the sagittal slice nearest to it.
5. Foramina (sagittal T1) and recesses (axial T2) are placed from the midline
   points through patient-space offsets learned from the training labels, on
   the slice chosen by patient position (never instance order). A foramen
   then moves to the middle of the run of slices showing its fat keyhole and
   to the keyhole's centre; a recess is placed from the dural sac segmented on
   its axial slice (front-back; left-right from the midline) through a second
   learned offset.

The detector is a LightGBM text model; everything else is JSON.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .dataset import CONDITION_SERIES, CONDITIONS, LEVELS, DataFolder
from .dicom import Stack
from .errors import GeometryError, SpinefeatError
from .geometry import orientation_axes, project_to_stacks
from .images import StudyImages
from .series import project_to_series, series_for_levels

log = logging.getLogger(__name__)
RECESSES = ("left_subarticular_stenosis", "right_subarticular_stenosis")
# sop_instance_uid names the slice where instance numbers repeat in a series.
COORD_COLUMNS = ["study_id", "series_id", "instance_number", "condition", "level", "x", "y", "confidence",
                 "sop_instance_uid"]
STEP_MM = 1.0
DISC_RADIUS_MM = 2.5
ANTERIOR_MM = (8.0, 13.0, 18.0, 23.0)
ALONG_MM = tuple(np.arange(-12.0, 12.1, 2.0))
#: Wider context, followed along the canal curve: is there a disc a level above or below (the sacrum has none)?
FAR_ANTERIOR_MM = (13.0, 18.0)
FAR_ALONG_MM = tuple(d for d in np.arange(-64.0, 64.1, 8.0) if abs(d) >= 16)
#: The canal's direction is read here along the curve (mm).
ANGLE_ALONG_MM = (-60.0, -40.0, -20.0, 0.0, 20.0, 40.0, 60.0)
DET_PARAMS = {"objective": "multiclass", "num_class": 6, "learning_rate": 0.1, "num_leaves": 31,
              "min_data_in_leaf": 40, "feature_fraction": 0.8, "verbose": -1, "seed": 0, "deterministic": True,
              "force_col_wise": True}


# ---------------------------------------------------------------------------
# Sagittal: mid slice, canal curve, samples and their features (pure)
# ---------------------------------------------------------------------------

def _norm(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [1, 99.5])
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1.2).astype(np.float32)


#: Tissue narrower than this across the image rows stands out of its row's background (the canal is 8-20 mm
#: AP; the vertebral bodies and the fat of a heavy back are wider).
TOPHAT_WIDTH_MM = 25.0
#: A column this close (mm, along its row) to air is the subcutaneous fat of the back, not the canal.
MIN_BODY_DEPTH_MM = 15.0
#: A CSF piece is brighter than its row's background by this share of the image's 99.5th percentile top-hat.
CSF_CUT = 0.3


def _row_tophat(x: np.ndarray, dc: float, width_mm: float = TOPHAT_WIDTH_MM) -> np.ndarray:
    """How much brighter each pixel is than its row's background: a white top-hat along the rows.

    The CSF column is bright against the dark bone, ligament and disc
    annulus on either side whatever the brightest tissue of the image is (fat
    is brighter than CSF on many T2): the top-hat keeps it and drops anything
    wider than ``width_mm``.
    """
    return x - ndi.grey_opening(x, size=(1, max(3, int(round(width_mm / dc)))))


def body_depth_mm(x: np.ndarray, dc: float, *, air: float = 0.06) -> np.ndarray:
    """Per pixel of a normalised slice: the distance (mm) along its row to the nearest air outside the body
    (the image edge is not air: fields of view cut the body)."""
    body = ndi.binary_fill_holes(ndi.binary_closing(ndi.uniform_filter(x, 9) > air, iterations=3))
    if body.all() or not body.any():
        return np.full(x.shape, np.inf)
    return ndi.distance_transform_edt(np.pad(body, ((0, 0), (1, 1)), constant_values=True),
                                      sampling=(1e9, dc))[:, 1:-1]


def _join_pieces(pieces: dict[int, tuple[np.ndarray, np.ndarray]], seed: int, dr: float, dc: float) -> list[int]:
    """The piece ``seed`` and the pieces (id -> pixel rows, cols) that continue it: one at a time, nearest
    first, each within 8 mm of a line through the 40 mm of column next to it (the column curves with the
    lordosis; a global fit drifts at the ends) and within 50 mm of it."""
    chain_ids = [seed]
    rr, cc = pieces[seed]
    todo = set(pieces) - {seed}
    while todo:
        gap = {i: min(abs(pieces[i][0].min() - rr.max()), abs(rr.min() - pieces[i][0].max())) for i in todo}
        i = min(todo, key=gap.get)
        todo.discard(i)
        if gap[i] * dr > 50.0:
            break
        r2, c2 = pieces[i]
        near = np.abs(rr - (r2.min() if r2.min() > rr.max() else r2.max())) * dr <= 40.0
        if near.sum() < 10 or np.ptp(rr[near]) == 0:
            continue
        coef = np.polyfit(rr[near], cc[near], 1)
        if np.median(np.abs(c2 - np.polyval(coef, r2))) * dc <= 8.0:
            chain_ids.append(i)
            rr, cc = np.concatenate([rr, r2]), np.concatenate([cc, c2])
    return chain_ids


def beside_periodicity(x: np.ndarray, mask: np.ndarray, dr: float, dc: float, *,
                       period_mm: tuple[float, float] = (20.0, 50.0)) -> float:
    """How periodic the tissue 5-25 mm beside a column is along it, on its more periodic side (0..1).

    Beside the canal, vertebral bodies and discs alternate every 25-45 mm:
    the largest normalised autocorrelation of the detrended intensity profile
    (1 mm steps along the rows) at a lag in ``period_mm``.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) < 2 or np.ptp(rows) * dr < 2 * period_mm[0]:
        return 0.0
    r = np.arange(rows[0], rows[-1] + 1, 1.0 / dr)
    cen = np.interp(r, rows, [np.flatnonzero(mask[q]).mean() for q in rows])
    best = 0.0
    for side in (-1.0, 1.0):
        cols = cen[:, None] + side * np.arange(5.0, 25.1, 5.0)[None, :] / dc
        p = ndi.map_coordinates(x, [np.repeat(r[:, None], cols.shape[1], 1), cols], order=1, mode="nearest").mean(1)
        p = p - ndi.uniform_filter1d(p, 61, mode="nearest")
        den = float(np.sum(p * p))
        if den <= 0:
            continue
        for lag in range(int(period_mm[0]), min(int(period_mm[1]), len(p) - 10) + 1):
            best = max(best, float(np.sum(p[:-lag] * p[lag:]) / den))
    return best


def csf_column(img: np.ndarray, pixel_spacing_mm, *, cut: float = CSF_CUT, follow: bool = True) -> tuple[np.ndarray, float]:
    """The CSF column: bright, vertically elongated components standing out of their rows, inside the body.

    Brightness is read against each row's background (:func:`_row_tophat`), so
    neither the field of view's centre nor the brightest tissue matters; pieces
    within :data:`MIN_BODY_DEPTH_MM` of air (the fat under the skin of the
    back) are kept only when nothing deeper is found. Each of the longest
    pieces seeds a chain; other pieces join it, nearest first, when they lie within 8 mm
    of a line through the 40 mm of column next to them and start within 50 mm
    of it (the column breaks where a canal is tight, and curves with the
    lordosis); of the chains so formed, the one with the most contrast times
    the square root of its length, weighted by :func:`beside_periodicity`, is
    the column. With ``follow`` it goes on along its ridge
    (:func:`follow_column`). Returns the mask and its vertical extent (mm).
    """
    seed, th, hi = _seed_column(img, pixel_spacing_mm, cut=cut)
    mask = _follow(seed, th, hi, pixel_spacing_mm, cut) if follow else seed
    rows = np.flatnonzero(mask.any(axis=1))
    return mask, float(np.ptp(rows) * float(pixel_spacing_mm[0])) if len(rows) else 0.0


def _seed_column(img: np.ndarray, pixel_spacing_mm, *, cut: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The CSF column's own pieces (see :func:`csf_column`), the row top-hat image and its 99.5th percentile."""
    dr, dc = (float(v) for v in pixel_spacing_mm)
    x = ndi.uniform_filter(_norm(img), size=3)
    th = _row_tophat(x, dc)
    depth = body_depth_mm(x, dc)
    hi = float(np.percentile(th, 99.5))
    if hi <= 0:
        return np.zeros(img.shape, bool), th, hi
    lab, n = ndi.label(th > cut * hi)
    if n == 0:
        return np.zeros(img.shape, bool), th, hi
    cands, shallow = [], []
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        h_mm = (sl[0].stop - sl[0].start) * dr
        comp = lab[sl] == i
        width_mm = float(comp.sum()) * dr * dc / max(h_mm, 1e-6)
        if h_mm >= 15 and 1.5 <= width_mm <= 22 and h_mm / max(width_mm, 1e-6) > 3:
            deep = np.median(depth[sl][comp]) >= MIN_BODY_DEPTH_MM
            (cands if deep else shallow).append((h_mm, i))
    cands = cands or shallow
    if not cands:
        return np.zeros(img.shape, bool), th, hi
    # Each of the longest pieces seeds a chain of the pieces that join it. The column is the chain with
    # the most contrast times the square root of its length: the CSF stands out of its rows more than the
    # fat along the vertebral bodies or in the back muscles, and a canal broken at tight levels is still long;
    # and it runs along the vertebral column (bodies and discs alternate beside it), a band of fat does not.
    slices = ndi.find_objects(lab)
    pieces = {}
    for _, i in cands:
        r, c = np.nonzero(lab[slices[i - 1]] == i)
        pieces[i] = (r + slices[i - 1][0].start, c + slices[i - 1][1].start)
    chains = [np.isin(lab, _join_pieces(pieces, seed, dr, dc)) for _, seed in sorted(cands)[-6:]]
    score = [th[m].mean() * np.sqrt(np.ptp(np.flatnonzero(m.any(axis=1))) + 1) * (0.5 + beside_periodicity(x, m, dr, dc))
             for m in chains]
    best = int(np.argmax(score))
    return chains[best], th, hi


def _follow(seed: np.ndarray, th: np.ndarray, hi: float, pixel_spacing_mm, cut: float) -> np.ndarray:
    """The seed column continued along the top-hat ridge, at most 1.5 times its median width."""
    if not seed.any():
        return seed
    width_mm = float(np.median(seed.sum(axis=1)[seed.any(axis=1)])) * float(pixel_spacing_mm[1])
    return follow_column(th, seed, pixel_spacing_mm, low=0.5 * cut * hi, max_width_mm=max(1.5 * width_mm, 4.0))


def follow_column(ridge: np.ndarray, mask: np.ndarray, pixel_spacing_mm, *, low: float, max_slope: float = 1.2,
                  max_gap_mm: float = 30.0, max_width_mm: float = 22.0) -> np.ndarray:
    """Continue a column mask up and down along the ridge of ``ridge`` (brightness against the row's
    background).

    From each end of the column a path goes on row by row, at most
    ``max_slope`` mm sideways per mm down, through the pixels with the most
    ridge overall (dynamic programming, so it can cross a dark stretch to the
    canal beyond a tight level or the bend at the sacrum). Where the path's
    pixel is above ``low`` it joins the mask with the run of pixels above
    ``low`` around it (at most ``max_width_mm``); the mask stops at the first
    stretch of more than ``max_gap_mm`` without one.
    """
    dr, dc = (float(v) for v in pixel_spacing_mm)
    h, w = mask.shape
    out = mask.copy()
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) < 2:
        return out
    # The path follows the ridge smoothed over 3 mm of rows (noise); pixels join on their own value.
    reward = np.clip(ndi.uniform_filter1d(ridge, max(3, int(round(3.0 / dr))), axis=0) / max(2.0 * low, 1e-9), 0.0, 1.0)
    m = max(1, int(np.floor(max_slope * dr / dc)))
    half = max(1, int(round(0.5 * max_width_mm / dc)))
    for step in (-1, 1):
        r0 = int(rows[0] if step < 0 else rows[-1])
        seq = np.arange(r0 + step, -1 if step < 0 else h, step)
        if len(seq) == 0:
            continue
        score = np.full(w, -np.inf)
        score[int(round(np.flatnonzero(mask[r0]).mean()))] = 0.0
        back = np.zeros((len(seq), w), int)
        for n, r in enumerate(seq):
            best, arg = np.full(w, -np.inf), np.zeros(w, int)
            for d in range(-m, m + 1):
                cand = np.full(w, -np.inf)
                src_c = np.arange(w) - d
                ok = (src_c >= 0) & (src_c < w)
                cand[ok] = score[src_c[ok]] - 0.02 * abs(d)
                better = cand > best
                best[better], arg[better] = cand[better], src_c[better]
            score, back[n] = best + reward[r], arg
        path = np.zeros(len(seq), int)
        path[-1] = int(np.argmax(score))
        for n in range(len(seq) - 1, 0, -1):
            path[n - 1] = back[n, path[n]]
        missed = 0.0
        for r, c in zip(seq, path):
            if ridge[r, c] <= low:
                missed += dr
                if missed > max_gap_mm:
                    break
                continue
            missed = 0.0
            a, b = c, c
            while a > max(0, c - half) and ridge[r, a - 1] > low:
                a -= 1
            while b < min(w - 1, c + half) and ridge[r, b + 1] > low:
                b += 1
            out[r, a:b + 1] = True
    # Rows bridged inside the column (tight levels) keep a one-pixel path at the interpolated centre.
    rows = np.flatnonzero(out.any(axis=1))
    cen = np.array([np.flatnonzero(out[r]).mean() for r in rows])
    gaps = np.setdiff1d(np.arange(rows[0], rows[-1] + 1), rows)
    out[gaps, np.round(np.interp(gaps, rows, cen)).astype(int)] = True
    return out


def mid_sagittal(stack: Stack) -> tuple[int, float]:
    """The mid-sagittal slice and the midline's offset from it along the slice normal (mm).

    The sac is widest at the midline, so its CSF area on a sagittal slice peaks
    there: the slice with the largest CSF-column area among those whose column
    is nearly as long as the longest (a bright patch of fat off the spine can
    have a large area, never the column's length), refined between slices by a
    parabola through it and its neighbours.
    """
    k = stack.geometry.n_slices
    cands = list(range(max(0, k // 2 - 4), min(k, k // 2 + 5)))
    area, extent = {}, {}
    for i in cands:
        mask, extent[i] = csf_column(stack.pixels[i], stack.geometry.pixel_spacing_mm, follow=False)
        area[i] = float(mask.sum()) if extent[i] >= 40 else 0.0
    longest = max(extent.values())
    best = max(cands, key=lambda i: (extent[i] >= 0.75 * longest and area[i] > 0, area[i], -abs(i - (k - 1) / 2)))
    shift = 0.0
    if best - 1 in area and best + 1 in area:
        a0, a1, a2 = area[best - 1], area[best], area[best + 1]
        den = a0 - 2 * a1 + a2
        if den < 0:
            shift = float(np.clip(0.5 * (a0 - a2) / den, -0.5, 0.5))
    return best, shift * stack.geometry.slice_spacing_mm


@dataclass
class Canal:
    rows: np.ndarray            # sample rows (float, input pixels), top to bottom
    cols: np.ndarray            # canal centre column at each sample
    s_mm: np.ndarray            # arc position of each sample (mm from the top sample)
    width_mm: np.ndarray        # CSF width at each sample
    end_mm: float               # arc position of the lowest CSF (thecal sac end)
    anterior: float             # +1 when anterior is increasing column, else -1


def fit_canal(img: np.ndarray, pixel_spacing_mm, iop, *, extend_mm: tuple[float, float] = (20.0, 40.0)) -> Canal | None:
    """Fit ``col = f(row)`` through the CSF column and sample it every :data:`STEP_MM`.

    The curve goes on straight (along its end tangent) ``extend_mm`` above and
    below the CSF, within the image: the CSF can stop above the lowest disc
    (a tight canal at L5/S1, a short sac), and the detector must still be able
    to find it there.
    """
    dr, dc = (float(v) for v in pixel_spacing_mm)
    csf, th, hi = _seed_column(img, pixel_spacing_mm, cut=CSF_CUT)
    mask = _follow(csf, th, hi, pixel_spacing_mm, CSF_CUT)
    rows_csf = np.flatnonzero(csf.any(axis=1))
    if len(rows_csf) < 2 or np.ptp(rows_csf) * dr < 40:
        return None
    # The centre line: each row's median column (a bright blob beside the column does not pull it), rows
    # without CSF (tight levels) interpolated, smoothed over 10 mm. A real canal bends too much between the
    # thoracic spine and the sacrum for one polynomial.
    rows_m = np.flatnonzero(mask.any(axis=1))
    top, bottom = int(rows_m[0]), int(rows_m[-1])
    centre = np.interp(np.arange(top, bottom + 1), rows_m, [np.median(np.flatnonzero(mask[r])) for r in rows_m])
    win = max(3, int(round(10.0 / dr)) | 1)
    centre = ndi.uniform_filter1d(ndi.median_filter(centre, size=win, mode="nearest"), win, mode="nearest")
    end = max(2, int(round(15.0 / dr)))
    slope = [np.polyfit(np.arange(min(end, len(centre))), centre[:end], 1)[0],
             np.polyfit(np.arange(min(end, len(centre))), centre[-end:], 1)[0]]
    first = max(0.0, top - extend_mm[0] / dr)
    last = min(img.shape[0] - 1.0, bottom + extend_mm[1] / dr)
    dense = np.arange(first, last + 0.01, 0.25)
    col = np.where(dense < top, centre[0] + slope[0] * (dense - top),
                   np.where(dense > bottom, centre[-1] + slope[1] * (dense - bottom),
                            np.interp(dense, np.arange(top, bottom + 1), centre)))
    ds = np.hypot(0.25 * dr, np.gradient(col) * dc)
    s = np.concatenate([[0.0], np.cumsum(ds[1:])])
    targets = np.arange(0.0, s[-1], STEP_MM)
    rows = np.interp(targets, s, dense)
    cols = np.interp(targets, s, col)
    # Width and end are the CSF's own (the sac), not the canal's continuation along its ridge.
    width = np.array([csf[int(round(r)), :].sum() * dc for r in rows])
    f_r, _, _ = orientation_axes(iop)
    # LPS +y is posterior: anterior is the column direction with F_r . y < 0.
    anterior = -1.0 if f_r[1] > 0 else 1.0
    return Canal(rows, cols, targets, width, float(np.interp(rows_csf[-1], dense, s)), anterior)


def sample_features(img: np.ndarray, pixel_spacing_mm, canal: Canal) -> np.ndarray:
    """Per canal sample: tissue intensities anterior to the canal over +-12 mm along the image rows and at
    +-16..64 mm along the canal curve (NaN beyond its ends), the CSF width, the position."""
    dr, dc = (float(v) for v in pixel_spacing_mm)
    x = ndi.uniform_filter(_norm(img), size=max(3, int(round(2.0 / dr))))
    h, w = x.shape
    feats = []
    for a in ANTERIOR_MM:
        for d in ALONG_MM:
            r = np.clip(np.round(canal.rows + d / dr), 0, h - 1).astype(int)
            c = np.clip(np.round(canal.cols + canal.anterior * a / dc), 0, w - 1).astype(int)
            feats.append(x[r, c])
    prof = np.array(feats).T                          # (n, len(ANTERIOR)*len(ALONG))
    n = len(canal.rows)
    far = []
    for a in FAR_ANTERIOR_MM:
        c_all = np.clip(np.round(canal.cols + canal.anterior * a / dc), 0, w - 1).astype(int)
        r_all = np.clip(np.round(canal.rows), 0, h - 1).astype(int)
        for d in FAR_ALONG_MM:
            j = np.arange(n) + int(round(d / STEP_MM))
            ok = (j >= 0) & (j < n)
            v = np.full(n, np.nan, np.float32)
            v[ok] = x[r_all[j[ok]], c_all[j[ok]]]
            far.append(v)
    centre = prof[:, [i * len(ALONG_MM) + len(ALONG_MM) // 2 for i in range(len(ANTERIOR_MM))]]
    rel = prof - prof.reshape(len(canal.rows), len(ANTERIOR_MM), len(ALONG_MM)).mean(axis=2).repeat(len(ALONG_MM), 1)
    # Where along the image: fields of view are centred on the lumbar spine (real layouts put L3/L4 near the middle).
    pos = np.stack([canal.end_mm - canal.s_mm, canal.width_mm, (canal.rows - (h - 1) / 2) * dr], 1)
    # The canal's direction (degrees from the image's vertical, positive leaning anterior going down) here and
    # along it: the lordosis peaks at L3-L4 and the canal turns back behind the sacrum.
    angle = np.degrees(np.arctan2(canal.anterior * np.gradient(canal.cols) * dc, np.gradient(canal.rows) * dr))
    turn = []
    for d in ANGLE_ALONG_MM:
        j = np.arange(n) + int(round(d / STEP_MM))
        ok = (j >= 0) & (j < n)
        v = np.full(n, np.nan, np.float32)
        v[ok] = angle[j[ok]]
        turn.append(v)
    return np.concatenate([prof, rel, centre, np.array(far).T, pos, np.array(turn).T], axis=1).astype(np.float32)


def chain(logp: np.ndarray, s_mm: np.ndarray, gaps: np.ndarray) -> tuple[np.ndarray, float]:
    """Best ordered choice of one sample per level (top to bottom).

    ``logp`` (n, 5): log-probability of each sample being each level;
    ``gaps`` (4, 2): mean and sd (mm) of the distance from level k to k+1.
    Returns the sample index per level and the total score. Levels are
    strictly ordered and spaced by at least half the smallest mean gap, so a
    missing or extra candidate can never give a skipped or doubled level.
    """
    n, k = logp.shape
    if n < k:
        raise SpinefeatError("canal too short for five levels")
    min_gap = 0.5 * float(gaps[:, 0].min())
    score = logp[:, 0].copy()
    back = np.zeros((k, n), int)
    diff = s_mm[None, :] - s_mm[:, None]                     # [i, j] = s_j - s_i
    for lv in range(1, k):
        mu, sd = gaps[lv - 1]
        trans = -0.5 * ((diff - mu) / sd) ** 2
        trans[diff < min_gap] = -np.inf
        tot = score[:, None] + trans
        back[lv] = np.argmax(tot, axis=0)
        score = tot[back[lv], np.arange(n)] + logp[:, lv]
    idx = np.zeros(k, int)
    idx[-1] = int(np.argmax(score))
    for lv in range(k - 1, 0, -1):
        idx[lv - 1] = back[lv][idx[lv]]
    return idx, float(score[idx[-1]])


# ---------------------------------------------------------------------------
# The model: training and use
# ---------------------------------------------------------------------------

@dataclass
class Localizer:
    detector: lgb.Booster
    gaps: np.ndarray                         # (4, 2) mm
    offsets: dict = field(default_factory=dict)   # condition -> level -> [dx, dy, dz] from the spinal point
    sac_offsets: dict = field(default_factory=dict)  # recess condition -> level -> [dx, dy, dz] from the axial sac centre
    trained_on: dict = field(default_factory=dict)   # what the detector learnt from (studies, SPIDER patients)

    def save(self, out: Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        from .io import write_json, write_text

        write_text(out / "localizer.txt", self.detector.model_to_string())
        write_json(out / "localizer.json", {"gaps_mm": self.gaps.tolist(), "offsets_mm": self.offsets,
                                            "sac_offsets_mm": self.sac_offsets, "step_mm": STEP_MM,
                                            "trained_on": self.trained_on})

    @property
    def fingerprint(self) -> str:
        """Hash of the detector and the learned geometry (cache keys of features at localised points)."""
        import hashlib

        meta = json.dumps({"gaps": self.gaps.tolist(), "offsets": self.offsets, "sac": self.sac_offsets}, sort_keys=True)
        return hashlib.sha256(self.detector.model_to_string().encode() + meta.encode()).hexdigest()[:16]

    @classmethod
    def load(cls, models: Path) -> "Localizer":
        from .models import load_localizer_files

        detector, meta = load_localizer_files(models)   # hashes checked against manifest.json
        return cls(detector, np.array(meta["gaps_mm"]), meta["offsets_mm"], meta.get("sac_offsets_mm", {}),
                   meta.get("trained_on", {}))

    def find_discs(self, stack: Stack) -> tuple[int, float, np.ndarray, np.ndarray]:
        """Mid-sagittal slice, the midline's offset from it (mm), the five disc (row, col) on it, a confidence per level."""
        k, shift_mm = mid_sagittal(stack)
        img = stack.pixels[k]
        canal = fit_canal(img, stack.geometry.pixel_spacing_mm, stack.geometry.iop)
        if canal is None:
            raise SpinefeatError(f"study {stack.study_id} series {stack.series_id}: no CSF column found")
        p = self.detector.predict(sample_features(img, stack.geometry.pixel_spacing_mm, canal))
        logp = np.log(np.clip(p[:, 1:], 1e-6, 1))
        idx, _ = chain(logp, canal.s_mm, self.gaps)
        s_mm = np.array([disc_centre_mm(p[:, lv + 1], canal.s_mm, i) for lv, i in enumerate(idx)])
        rc = np.stack([np.interp(s_mm, canal.s_mm, canal.rows), np.interp(s_mm, canal.s_mm, canal.cols)], axis=1)
        return k, shift_mm, rc, p[idx, np.arange(1, 6)]


def disc_centre_mm(p_level: np.ndarray, s_mm: np.ndarray, i: int, *, half_window_mm: float = 2.0 * DISC_RADIUS_MM) -> float:
    """Arc position of a disc: the detector-probability-weighted mean of the samples around the chain's choice ``i``.

    The detector marks every sample within :data:`DISC_RADIUS_MM` of a disc
    centre, so its probability is a plateau; the plateau's centre is finer
    than its argmax (which lands anywhere on it).
    """
    near = np.abs(s_mm - s_mm[i]) <= half_window_mm
    w = p_level[near]
    return float(np.sum(w * s_mm[near]) / w.sum()) if w.sum() > 0 else float(s_mm[i])


def _series_desc(ser: pd.DataFrame, study_id: int, desc: str) -> list[int]:
    return ser.loc[(ser["study_id"] == study_id) & (ser["series_description"] == desc), "series_id"].astype(int).tolist()


def _label_xyz(images, point) -> np.ndarray:
    st, k = images.locate(point["series_id"], point["instance_number"])
    return st.geometry.to_patient(k, float(point["y"]), float(point["x"]))


def disc_samples(img: np.ndarray, pixel_spacing_mm, iop, disc_rc) -> tuple[np.ndarray, np.ndarray] | None:
    """Detector training samples of one sagittal slice: the features of every canal sample and its class,
    the level (1..5, L1/L2 first) of the disc point ``disc_rc[k]`` (row, col) for the samples within
    :data:`DISC_RADIUS_MM` along the curve of the sample nearest that point (when the curve passes within
    10 mm of it), else 0. None when no canal is found."""
    canal = fit_canal(img, pixel_spacing_mm, iop)
    if canal is None:
        return None
    dr, dc = (float(v) for v in pixel_spacing_mm)
    y = np.zeros(len(canal.rows), int)
    for li, (r, c) in enumerate(disc_rc):
        # The disc's place on the curve: its nearest sample, when the curve passes within 10 mm of the point.
        d = np.hypot((canal.rows - r) * dr, (canal.cols - c) * dc)
        if d.min() <= 10.0:
            y[np.abs(canal.s_mm - canal.s_mm[np.argmin(d)]) <= DISC_RADIUS_MM] = li + 1
    return sample_features(img, pixel_spacing_mm, canal), y


def fit_detector(xs: list[np.ndarray], ys: list[np.ndarray], *, jobs: int = 1) -> lgb.Booster:
    """The disc detector on the samples of many slices (every disc sample weighs as ten background ones)."""
    x, y = np.concatenate(xs), np.concatenate(ys)
    return lgb.train(dict(DET_PARAMS, num_threads=jobs), lgb.Dataset(x, y, weight=np.where(y > 0, 10.0, 1.0)), 200)


def gap_stats(gaps: list[np.ndarray]) -> np.ndarray:
    """(4, 2) mean and sd (mm, at least 2) of the distances between neighbouring discs."""
    g = np.array(gaps)
    return np.stack([g.mean(axis=0), np.maximum(g.std(axis=0), 2.0)], axis=1)


def rsna_samples(root: Path, points: pd.DataFrame, *, progress=None) -> dict:
    """Everything the localiser learns from a labelled Kaggle-layout folder: detector samples (``x``, ``y``
    lists, with the study of each in ``owner``), disc gaps (mm), offsets of the other points from the spinal
    point and of the recesses from the axial sac centre (condition -> level -> list of (study, [dx, dy, dz])).""" 
    folder = DataFolder(root)
    ser = folder.series("train")
    out = {"x": [], "y": [], "gaps": [], "owner": [], "studies": 0,
           "offsets": {c: {lv: [] for lv in LEVELS} for c in CONDITIONS[1:]},
           "sac_offsets": {c: {lv: [] for lv in LEVELS} for c in RECESSES}}
    study_ids = sorted(points["study_id"].unique())
    for n, sid in enumerate(study_ids):
        if progress is not None:
            progress(n, len(study_ids))
        pts = points[points["study_id"] == sid]
        sp = pts[pts["condition"] == "spinal_canal_stenosis"].set_index("level")
        if len(sp) < 5 or sp["series_id"].nunique() != 1:
            continue
        images = StudyImages(folder, "train", sid, ser)
        try:
            (stack,) = images.stacks(int(sp["series_id"].iloc[0]))[:1]
            spine_xyz = {lv: _label_xyz(images, sp.loc[lv]) for lv in LEVELS}
            k = stack.slice_of_instance(int(sp["instance_number"].iloc[0]))
            got = disc_samples(stack.pixels[k], stack.geometry.pixel_spacing_mm, stack.geometry.iop,
                               [(sp.loc[lv, "y"], sp.loc[lv, "x"]) for lv in LEVELS])
        except (SpinefeatError, ValueError, KeyError) as exc:
            log.warning("study %s skipped for the localiser: %s", sid, exc)
            continue
        if got is None:
            continue
        out["x"].append(got[0])
        out["y"].append(got[1])
        out["owner"].append(int(sid))
        out["studies"] += 1
        z = np.array([spine_xyz[lv] for lv in LEVELS])
        out["gaps"].append(np.linalg.norm(np.diff(z, axis=0), axis=1))
        for cond in CONDITIONS[1:]:
            for _, p in pts[pts["condition"] == cond].iterrows():
                try:
                    xyz = _label_xyz(images, p)
                    out["offsets"][cond][p["level"]].append((int(sid), (xyz - spine_xyz[p["level"]]).tolist()))
                    if cond in RECESSES:
                        centre = sac_centre(*images.locate(p["series_id"], p["instance_number"]),
                                            spine_xyz[p["level"]], keep_lateral=True)
                        if centre is not None:
                            out["sac_offsets"][cond][p["level"]].append((int(sid), (xyz - centre).tolist()))
                except (SpinefeatError, KeyError):
                    pass
    if progress is not None:
        progress(len(study_ids), len(study_ids))
    return out


def train_localizer(root: Path, points: pd.DataFrame, *, spider: Path | None = None, jobs: int = 1,
                    progress=None) -> Localizer:
    """Learn the detector, the level spacing and the offsets of the other points from labelled studies,
    and with ``spider`` (a SPIDER folder, :mod:`spinefeat.spider`) the detector and the spacing also from
    its real sagittal T2 and disc masks."""
    return train_localizers(root, points, spider=spider, jobs=jobs, progress=progress)[0]


def train_localizers(root: Path, points: pd.DataFrame, *, folds: dict[int, int] | None = None,
                     spider: Path | None = None, jobs: int = 1,
                     progress=None) -> tuple[Localizer, dict[int, Localizer]]:
    """:func:`train_localizer` on all studies, and with ``folds`` (study -> fold) one localiser per fold
    learnt without that fold's studies (to cross-fit: each study localised by a localiser that never saw
    it; SPIDER patients, never scored, serve every fold). Each study is read once."""
    got = rsna_samples(root, points, progress=progress)
    owner = list(got["owner"])
    trained_on = {"studies": got["studies"]}
    if spider is not None:
        from .spider import read_spider, spider_samples

        patients = read_spider(spider)
        for p in patients:
            xs, ys, gaps = spider_samples(p)
            got["x"] += xs
            got["y"] += ys
            got["gaps"] += gaps
            owner += [None] * len(xs)
        trained_on["spider_patients"] = [p.patient for p in patients]
    # A SPIDER slice may carry no gap (gaps and samples are then not one to one): gaps keep their own owners.
    gap_owner = list(got["owner"]) + [None] * (len(got["gaps"]) - len(got["owner"]))

    def fit(keep) -> Localizer:
        use = [i for i, sid in enumerate(owner) if sid is None or keep(sid)]
        if not use:
            raise SpinefeatError("no study could train the localiser (need five spinal points on one sagittal slice)")

        def medians(table):
            return {c: {lv: np.median(np.array([o for sid, o in v if keep(sid)]), axis=0).tolist()
                        for lv, v in d.items() if any(keep(sid) for sid, _ in v)} for c, d in table.items()}

        gaps = [g for g, sid in zip(got["gaps"], gap_owner) if sid is None or keep(sid)]
        return Localizer(fit_detector([got["x"][i] for i in use], [got["y"][i] for i in use], jobs=jobs),
                         gap_stats(gaps), medians(got["offsets"]), medians(got["sac_offsets"]),
                         dict(trained_on, studies=sum(1 for sid in got["owner"] if keep(sid))))

    by_fold = {k: fit(lambda sid, k=k: folds.get(sid) != k) for k in sorted(set((folds or {}).values()))}
    return fit(lambda sid: True), by_fold


#: A keyhole counts as the foramen seen on a slice when its area (mm2) is in this range.
KEYHOLE_AREA_MM2 = (5.0, 250.0)


def _keyhole(img: np.ndarray, rc, pixel_spacing_mm, series_high: float, *,
             max_shift_mm: float = 4.0) -> tuple[float, float, float] | None:
    """Centre (row, col) and area (mm2) of the foraminal keyhole (fat with the root hole filled) segmented
    around ``rc`` on a T1 slice, or None when there is none of a plausible size within ``max_shift_mm``."""
    from .segment import FOUND, segment_foramen

    seg = segment_foramen(img, rc, pixel_spacing_mm=pixel_spacing_mm, series_high=series_high)
    area = seg.measurements["area_mm2"]
    if seg.quality != FOUND or not KEYHOLE_AREA_MM2[0] <= area <= KEYHOLE_AREA_MM2[1]:
        return None
    dr, dc = (float(v) for v in pixel_spacing_mm)
    cr, cc = np.argwhere(seg.mask).mean(axis=0)
    r, c = seg.origin_rc[0] + cr * seg.spacing_mm / dr, seg.origin_rc[1] + cc * seg.spacing_mm / dc
    if np.hypot((r - rc[0]) * dr, (c - rc[1]) * dc) > max_shift_mm:
        return None
    return float(r), float(c), float(area)


def _same_keyhole(area: float, area_k: float, max_ratio: float) -> bool:
    return bool(np.isfinite(area) and area_k / max_ratio <= area <= area_k * max_ratio)


def middle_of_run(area: np.ndarray, pos_mm: np.ndarray, k: int, prior_mm: float, *, max_ratio: float = 1.5) -> int:
    """The slice in the middle of the run of slices that show the foramen.

    ``area``: per slice, the keyhole area seen at the point (NaN where none);
    ``pos_mm``: slice positions along the normal; ``k``: the slice the prior
    position ``prior_mm`` falls on. A foramen is a tube running laterally and
    the label marks its middle; the run is the slices around ``k`` whose
    keyhole is within ``max_ratio`` of the one on ``k`` (a much larger one
    is the fat of the canal, medially). With an even run the two middle
    slices tie and the one nearer the prior wins. No keyhole on ``k`` keeps ``k``.
    """
    if not np.isfinite(area[k]):
        return k
    lo, hi = k, k
    while lo > 0 and _same_keyhole(area[lo - 1], area[k], max_ratio):
        lo -= 1
    while hi < len(area) - 1 and _same_keyhole(area[hi + 1], area[k], max_ratio):
        hi += 1
    run = np.arange(lo, hi + 1)
    mid = pos_mm[run].mean()
    quarter = 0.25 * float(np.median(np.abs(np.diff(pos_mm)))) if len(pos_mm) > 1 else 1.0
    return int(min(run, key=lambda j: (round(abs(pos_mm[j] - mid) / quarter), abs(pos_mm[j] - prior_mm))))


def place_foramen(st: Stack, xyz: np.ndarray, pr: dict, series_high: float, *, reach: int = 2,
                  max_ratio: float = 1.5) -> tuple[int, float, float]:
    """Slice, row and col of a foraminal point: the middle of the slices within ``reach`` of the prior's
    that show the keyhole at the prior's position (see :func:`middle_of_run`), then the keyhole's centre
    on that slice. Slices are segmented outwards from the prior's only while the run goes on."""
    g = st.geometry
    k, rc = pr["slice"], (pr["row"], pr["col"])
    area = np.full(g.n_slices, np.nan)
    centres = {k: _keyhole(st.pixels[k], rc, g.pixel_spacing_mm, series_high)}
    if centres[k] is not None:
        area[k] = centres[k][2]
        for step in (-1, 1):
            for j in range(k + step, k + step * (reach + 1), step):
                if not 0 <= j < g.n_slices:
                    break
                centres[j] = _keyhole(st.pixels[j], rc, g.pixel_spacing_mm, series_high)
                if centres[j] is not None:
                    area[j] = centres[j][2]
                if not _same_keyhole(area[j], area[k], max_ratio):
                    break
    j = middle_of_run(area, g.positions_mm @ g.normal, k, float(np.asarray(xyz) @ g.normal), max_ratio=max_ratio)
    r, c = centres[j][:2] if centres.get(j) is not None else rc
    return j, r, c


def sac_centre(ax: Stack, k: int, xyz, *, keep_lateral: bool = False) -> np.ndarray | None:
    """Patient position of the dural sac's centre on slice ``k`` of an axial T2 stack, segmented around the
    in-plane projection of ``xyz``; None when no sac is found there. With ``keep_lateral`` the left-right
    position (along the image rows) is the one of ``xyz``."""
    from .segment import FAILED, segment_axial_sac

    g = ax.geometry
    pr = {key: float(v[0]) for key, v in g.project(xyz).items() if key in ("row", "col")}
    seg = segment_axial_sac(ax.pixels[k], (pr["row"], pr["col"]), pixel_spacing_mm=g.pixel_spacing_mm)
    if seg.quality == FAILED:
        return None
    cr, cc = np.argwhere(seg.mask).mean(axis=0)
    dr, dc = g.pixel_spacing_mm
    centre = g.to_patient(k, seg.origin_rc[0] + cr * seg.spacing_mm / dr, seg.origin_rc[1] + cc * seg.spacing_mm / dc)
    if keep_lateral:
        lateral = np.asarray(g.iop[:3], float)
        centre = centre + ((np.asarray(xyz, float) - centre) @ lateral) * lateral
    return centre


def _axial_midline_mm(images, series: pd.DataFrame, study_id: int, stack: Stack, k: int, rc: np.ndarray) -> dict[int, float]:
    """Per level: the signed distance (mm, along the sagittal normal) from slice ``k`` to the dural sac
    centre found on the axial T2 slice the level's disc point projects to. Levels whose sac is not found
    are left out."""
    n = stack.geometry.normal
    dists: dict[int, list[float]] = {}
    for sid in _series_desc(series, study_id, "Axial T2"):
        for li, (r, c) in enumerate(rc):
            xyz = stack.geometry.to_patient(k, r, c)
            try:
                _, ax, pr = project_to_series(xyz, images, [sid], frame_of_reference=stack.geometry.frame_of_reference)
            except GeometryError:       # another frame: this series tells nothing about the midline
                break
            if not pr["in_image"]:
                continue
            centre = sac_centre(ax, pr["slice"], xyz)
            if centre is not None:
                dists.setdefault(li, []).append(float((centre - stack.geometry.positions_mm[k]) @ n))
    return {li: float(np.median(v)) for li, v in dists.items()}


def midline_offsets_mm(per_level: dict[int, float], t_mm: np.ndarray, fallback_mm: float) -> np.ndarray:
    """Offset of the midline from the mid-sagittal slice at each level (mm along the slice normal).

    A tilted sagittal plane crosses the midline at a slant, so the offset is a
    line along the spine (``t_mm``: the levels' positions along it), fitted
    through the levels' axial estimates by Theil-Sen, which ignores a level
    whose sac was mis-segmented. With fewer than three estimates their median
    is used, with none ``fallback_mm``.
    """
    t_mm = np.asarray(t_mm, float)
    if not per_level:
        return np.full(len(t_mm), float(fallback_mm))
    li = np.array(sorted(per_level))
    d = np.array([per_level[i] for i in li])
    if len(li) < 3:
        return np.full(len(t_mm), float(np.median(d)))
    # Theil-Sen by hand: five points, and importing scipy.stats costs a second per worker process.
    t = t_mm[li]
    i, j = np.triu_indices(len(li), 1)
    slope = float(np.median((d[j] - d[i]) / (t[j] - t[i])))
    intercept = float(np.median(d - slope * t))
    return intercept + slope * t_mm


def localize_study(loc: Localizer, root: Path, split: str, study_id: int, series: pd.DataFrame, *,
                   images=None) -> tuple[list[dict], list[str]]:
    """The 25 points of one study (rows in the coordinate-file layout + confidence), and reasons for missing
    ones ("condition level: why", "condition: why" or, for the whole study, "why"). ``images`` reuses a
    :class:`~spinefeat.images.StudyImages` (its decoded series)."""
    images = images or StudyImages(DataFolder(root), split, study_id, series)
    rows, missing = [], []
    levels = series_for_levels(images)
    if levels is None:
        return [], ["no sagittal series: no levels found"]
    stack, frame = levels.stack, levels.stack.geometry.frame_of_reference
    log.info("study %s: levels found on %s", study_id, levels.reason)
    k, shift_mm, rc, conf = loc.find_discs(stack)
    # The axial sac centres show where the midline is at each level; the spinal point of a level goes
    # on the sagittal slice nearest to its midline point (tilted planes cross slices along the spine).
    t_mm = np.linalg.norm((rc - rc[0]) * np.asarray(stack.geometry.pixel_spacing_mm), axis=1)
    d = midline_offsets_mm(_axial_midline_mm(images, series, study_id, stack, k, rc), t_mm, shift_mm)
    midline = {}
    on_t2 = levels.description == CONDITION_SERIES["spinal_canal_stenosis"]
    for li, lv in enumerate(LEVELS):
        midline[lv] = stack.geometry.to_patient(k, rc[li, 0], rc[li, 1]) + d[li] * stack.geometry.normal
        if not on_t2:
            continue
        pr = project_to_stacks(midline[lv], [stack.geometry], frame_of_reference=frame)
        rows.append({"study_id": study_id, "series_id": levels.series_id,
                     "instance_number": int(stack.instance_numbers[pr["slice"]]),
                     "condition": "spinal_canal_stenosis", "level": lv, "x": float(pr["col"]), "y": float(pr["row"]),
                     "confidence": float(conf[li]), "sop_instance_uid": stack.sop_uid(pr["slice"])})
    if not on_t2:
        missing.append(f"spinal_canal_stenosis: no {CONDITION_SERIES['spinal_canal_stenosis']} series to read the "
                       f"canal on (levels found on {levels.reason})")
    sacs: dict[tuple, np.ndarray | None] = {}
    for cond in CONDITIONS[1:]:
        desc = CONDITION_SERIES[cond]
        sids = _series_desc(series, study_id, desc)
        if not sids:
            missing.append(f"{cond}: no {desc} series")
            continue
        for lv in LEVELS:
            if lv not in loc.offsets[cond]:
                missing.append(f"{cond} {lv}: no training point to learn its offset from")
                continue
            xyz = midline[lv] + np.asarray(loc.offsets[cond][lv])
            try:
                sid, st, pr = project_to_series(xyz, images, sids, frame_of_reference=frame)
            except GeometryError as exc:
                missing.append(f"{cond} {lv}: {exc}")
                continue
            if not pr["in_image"]:
                missing.append(f"{cond} {lv}: outside the {desc} series")
                continue
            j, r, c = pr["slice"], pr["row"], pr["col"]
            if "foraminal" in cond:
                # The label marks the middle of the foramen: the centre of its fat keyhole on T1.
                j, r, c = place_foramen(st, xyz, pr, images.series_high(sid))
            elif lv in loc.sac_offsets.get(cond, {}):
                # A recess lies beside the dural sac: placed from the sac found on its slice (its front-back
                # position; left-right the midline line is steadier than one slice's sac).
                # Both sides of a level usually fall on one slice: segment its sac once.
                key = (sid, id(st), j, lv)
                if key not in sacs:
                    sacs[key] = sac_centre(st, j, midline[lv], keep_lateral=True)
                centre = sacs[key]
                if centre is not None:
                    q = st.geometry.project(centre + np.asarray(loc.sac_offsets[cond][lv]))
                    r, c = float(q["row"][0]), float(q["col"][0])
            rows.append({"study_id": study_id, "series_id": sid, "instance_number": int(st.instance_numbers[j]),
                         "condition": cond, "level": lv, "x": c, "y": r, "confidence": float(conf[LEVELS.index(lv)]),
                         "sop_instance_uid": st.sop_uid(j)})
    return rows, missing


def localize(loc: Localizer, root: Path, *, split: str = "test", jobs: int = 1, progress=None,
             scheduler=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Points of every study of a split, and a table of what could not be placed and why.

    Studies run in ``jobs`` local processes or on the Dask cluster at ``scheduler``
    (:func:`spinefeat.parallel.map_studies`); a failing study is recorded and the run goes on."""
    from .parallel import map_studies

    series = DataFolder(root).series(split, check_planes=True)
    ids = sorted(series["study_id"].unique())

    def one(sid):
        return localize_study(loc, root, split, int(sid), series)

    rows, missing = [], []
    done = 0
    for sid, (r, m) in map_studies(one, ids, jobs=jobs, scheduler=scheduler,
                                   on_error=lambda s, exc: ([], [f"{type(exc).__name__}: {exc}"])):
        rows.extend(r)
        missing.extend({"study_id": int(sid), "reason": x} for x in m)
        done += 1
        if progress is not None:
            progress(done, len(ids))
    pts = pd.DataFrame(rows, columns=COORD_COLUMNS).sort_values(["study_id", "condition", "level"]).reset_index(drop=True)
    return pts, pd.DataFrame(missing, columns=["study_id", "reason"])


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
        txyz = {(r.condition, r.level): _label_xyz(images, r._asdict()) for r in tp.itertuples()}
        for r in pp.itertuples():
            key = (r.condition, r.level)
            if key not in txyz:
                continue
            p = _label_xyz(images, r._asdict())
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
