"""Sagittal T2, step 1: the mid-sagittal slice, the CSF column and the canal curve sampled every millimetre (pure functions)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..fastnp import median, percentile
from ..dicom import Stack
from ..geometry import orientation_axes

log = logging.getLogger(__name__)


STEP_MM = 1.0


def normalise_intensity(img: np.ndarray) -> np.ndarray:
    """``np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1.2).astype(np.float32)`` with ``lo, hi`` the 1st and
    99.5th percentiles: the same float64 arithmetic on one buffer, in place (no temporaries, and np.maximum /
    np.minimum for np.clip, which give the same values, NaN included), then cast."""
    lo, hi = percentile(img, [1, 99.5])
    t = np.subtract(img, lo)                       # float64 (lo is a float64 scalar), as img - lo is
    np.divide(t, max(hi - lo, 1e-6), out=t)
    np.maximum(t, 0, out=t)
    return np.minimum(t, 1.2, out=t).astype(np.float32)


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
    from ..segment.common import row_opening      # scipy's grey opening, on OpenCV

    return x - row_opening(x, max(3, int(round(width_mm / dc))))


def body_depth_mm(x: np.ndarray, dc: float, *, air: float = 0.06) -> np.ndarray:
    """Per pixel of a normalised slice: the distance (mm) along its row to the nearest air outside the body
    (the image edge is not air: fields of view cut the body)."""
    body = _body(x, air=air)
    if body.all() or not body.any():
        return np.full(x.shape, np.inf)
    return row_distance_mm(body, dc)


def _body(x: np.ndarray, *, air: float = 0.06) -> np.ndarray:
    """The body of a normalised slice: not air, closed and its holes filled (see :func:`body_depth_mm`)."""
    from ..segment.common import dilate, erode, fill_holes       # scipy's closing and hole filling, on OpenCV

    return fill_holes(erode(dilate(ndi.uniform_filter(x, 9) > air, iterations=3), iterations=3))


def row_distance_mm(inside: np.ndarray, dc: float) -> np.ndarray:
    """Per pixel: the distance (mm) along its row to the nearest pixel not ``inside`` (0 on those; inf when
    its row has none): the nearest one before and after each pixel, by running maxima and minima."""
    cols = np.arange(inside.shape[1], dtype=float)
    before = np.maximum.accumulate(np.where(inside, -np.inf, cols), axis=1)
    after = np.minimum.accumulate(np.where(inside, np.inf, cols)[:, ::-1], axis=1)[:, ::-1]
    return np.minimum(cols - before, after - cols) * dc


def row_distance_at_mm(inside: np.ndarray, r: np.ndarray, c: np.ndarray, dc: float) -> np.ndarray:
    """:func:`row_distance_mm` at the pixels ``(r, c)`` only: the pixels not ``inside`` before and after each
    one in its row found by a binary search of their flat indices (the same distances, not the whole map)."""
    w = inside.shape[1]
    outside = np.flatnonzero(~inside)
    if not len(outside):
        return np.full(len(r), np.inf)
    f = np.asarray(r) * w + np.asarray(c)
    j = np.searchsorted(outside, f)                   # the first pixel not inside at or after each pixel
    after, before = outside[np.minimum(j, len(outside) - 1)], outside[np.maximum(j - 1, 0)]
    gap_after = np.where((j < len(outside)) & (after // w == f // w), after - f, np.inf)
    gap_before = np.where((j > 0) & (before // w == f // w), f - before, np.inf)
    return np.minimum(gap_before, gap_after) * dc


def row_medians(mask: np.ndarray) -> np.ndarray:
    """``[np.median(np.flatnonzero(row)) for row in mask]`` for a mask whose every row has a pixel, at once: a
    row's pixel columns come sorted, so its median is the middle one or the mean of the middle two (float64,
    as np.median of integers takes it)."""
    rr, cc = np.nonzero(mask)
    count = np.bincount(rr, minlength=mask.shape[0])
    start = np.concatenate(([0], np.cumsum(count)[:-1]))
    lo, hi = cc[start + (count - 1) // 2].astype(float), cc[start + count // 2].astype(float)
    return (lo + hi) / 2


def _row_centres(mask: np.ndarray) -> np.ndarray:
    """Mean column of the pixels of each row of ``mask`` (every row has one)."""
    return (mask * np.arange(mask.shape[1])).sum(axis=1) / mask.sum(axis=1)


def _members(lab: np.ndarray, n: int, ids) -> np.ndarray:
    """``np.isin(lab, ids)`` for a label image with labels 0..n, by look-up."""
    keep = np.zeros(n + 1, bool)
    keep[list(ids)] = True
    return keep[lab]


def _join_pieces(pieces: dict[int, tuple[np.ndarray, np.ndarray]], extent: dict[int, tuple[int, int]], seed: int,
                 dr: float, dc: float) -> list[int]:
    """The piece ``seed`` and the pieces (id -> pixel rows, cols; first and last row in ``extent``) that
    continue it: one at a time, nearest first, each within 8 mm of a line through the 40 mm of column next to
    it (the column curves with the lordosis; a global fit drifts at the ends) and within 50 mm of it."""
    chain_ids = [seed]
    rr, cc = pieces[seed]
    first, last = extent[seed]                        # the chain's rows
    todo = set(pieces) - {seed}
    while todo:
        gap = {i: min(abs(extent[i][0] - last), abs(first - extent[i][1])) for i in todo}
        i = min(todo, key=gap.get)
        todo.discard(i)
        if gap[i] * dr > 50.0:
            break
        r2, c2 = pieces[i]
        near = np.abs(rr - (extent[i][0] if extent[i][0] > last else extent[i][1])) * dr <= 40.0
        if near.sum() < 10 or np.ptp(rr[near]) == 0:
            continue
        if _near_line(rr[near], cc[near], r2, c2, dc, 8.0):
            chain_ids.append(i)
            rr, cc = np.concatenate([rr, r2]), np.concatenate([cc, c2])
            first, last = min(first, extent[i][0]), max(last, extent[i][1])
    return chain_ids


def _near_line(r: np.ndarray, c: np.ndarray, r2: np.ndarray, c2: np.ndarray, dc: float, max_mm: float) -> bool:
    """Whether the pixels ``(r2, c2)`` lie within ``max_mm`` (median, along the rows; ``dc`` mm a column) of the
    least-squares line ``c = f(r)`` through ``(r, c)`` (``np.polyfit(r, c, 1)``).

    Decided on the line in closed form (means and the covariance: a small share of ``np.polyfit``'s SVD), which
    is ``np.polyfit``'s to float rounding, far under a millionth of a pixel on images of up to
    :data:`~spinefeat.dicom.MAX_SIDE` rows; a median within a millionth of a pixel of the limit is decided on
    ``np.polyfit``'s line itself, so the answer is always ``np.polyfit``'s.
    """
    x = r.astype(float)
    x_mean, c_mean = x.mean(), c.mean()
    dx = x - x_mean
    slope = float((dx * (c - c_mean)).sum() / (dx * dx).sum())
    off_px = float(median(np.abs(c2 - (slope * r2 + (c_mean - slope * x_mean)))))
    if abs(off_px - max_mm / dc) > 1e-6:
        return off_px * dc <= max_mm
    return bool(median(np.abs(c2 - np.polyval(np.polyfit(r, c, 1), r2))) * dc <= max_mm)


def beside_periodicity(x: np.ndarray, mask: np.ndarray, dr: float, dc: float, *,
                       period_mm: tuple[float, float] = (20.0, 50.0)) -> float:
    """How periodic the tissue 5-25 mm beside a column is along it, on its more periodic side (0..1).

    Beside the canal, vertebral bodies and discs alternate every 25-45 mm:
    the largest normalised autocorrelation of the detrended intensity profile
    (1 mm steps along the rows) at a lag in ``period_mm``.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    return _periodicity(x, rows, _row_centres(mask[rows]), dr, dc, period_mm=period_mm)


def _periodicity(x: np.ndarray, rows: np.ndarray, centres: np.ndarray, dr: float, dc: float, *,
                 period_mm: tuple[float, float] = (20.0, 50.0)) -> float:
    """:func:`beside_periodicity` of the column with pixels on ``rows`` (ascending), centred at ``centres``."""
    if len(rows) < 2 or np.ptp(rows) * dr < 2 * period_mm[0]:
        return 0.0
    r = np.arange(rows[0], rows[-1] + 1, 1.0 / dr)
    cen = np.interp(r, rows, centres)
    best = 0.0
    for side in (-1.0, 1.0):
        cols = cen[:, None] + side * np.arange(5.0, 25.1, 5.0)[None, :] / dc
        p = ndi.map_coordinates(x, [np.repeat(r[:, None], cols.shape[1], 1), cols], order=1, mode="nearest").mean(1)
        p = p - ndi.uniform_filter1d(p, 61, mode="nearest")
        den = float(np.sum(p * p))
        lags = np.arange(int(period_mm[0]), min(int(period_mm[1]), len(p) - 10) + 1)
        if den <= 0 or not len(lags):
            continue
        # sum(p[:-lag] * p[lag:]) for every lag at once
        best = max(best, float(np.correlate(p, p, "full")[len(p) - 1 + lags].max() / den))
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


def _seed_column(img: np.ndarray, pixel_spacing_mm, *, cut: float, deep_only: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """The CSF column's own pieces (see :func:`csf_column`), the row top-hat image and its 99.5th percentile.
    ``deep_only``: no column when only pieces under the skin are found (no fallback to them)."""
    dr, dc = (float(v) for v in pixel_spacing_mm)
    x = ndi.uniform_filter(normalise_intensity(img), size=3)
    th = _row_tophat(x, dc)
    hi = float(percentile(th, 99.5))
    none = np.zeros(img.shape, bool)
    if hi <= 0:
        return none, th, hi
    lab, n = ndi.label(th > cut * hi)
    if n == 0:
        return none, th, hi
    # Tall, narrow pieces: their pixels (id -> rows, cols) and first and last row.
    pieces, extent, heights = {}, {}, {}
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        h_mm = (sl[0].stop - sl[0].start) * dr
        if h_mm < 15:               # too short whatever its width: not looked at (most pieces are)
            continue
        comp = lab[sl] == i
        width_mm = float(comp.sum()) * dr * dc / max(h_mm, 1e-6)
        if 1.5 <= width_mm <= 22 and h_mm / max(width_mm, 1e-6) > 3:
            r, c = np.nonzero(comp)
            pieces[i], extent[i], heights[i] = (r + sl[0].start, c + sl[1].start), (sl[0].start, sl[0].stop - 1), h_mm
    if not pieces:
        return none, th, hi
    # Deep in the body, or within MIN_BODY_DEPTH_MM of air along its row (the depth read at its pixels only).
    body = _body(x)
    if body.all() or not body.any():                  # no air to measure from: every piece is deep
        depth = {i: np.inf for i in pieces}
    else:
        at = row_distance_at_mm(body, *(np.concatenate(v) for v in zip(*pieces.values())), dc)
        ends = np.cumsum([len(r) for r, _ in pieces.values()])[:-1]
        depth = {i: median(d) for i, d in zip(pieces, np.split(at, ends))}
    cands, shallow = [], []
    for i in pieces:
        (cands if depth[i] >= MIN_BODY_DEPTH_MM else shallow).append((heights[i], i))
    cands = cands or ([] if deep_only else shallow)
    if not cands:
        return none, th, hi
    pieces = {i: pieces[i] for _, i in cands}
    # Each of the longest pieces seeds a chain of the pieces that join it. The column is the chain with
    # the most contrast times the square root of its length: the CSF stands out of its rows more than the
    # fat along the vertebral bodies or in the back muscles, and a canal broken at tight levels is still long;
    # and it runs along the vertebral column (bodies and discs alternate beside it), a band of fat does not.
    chains = [_join_pieces(pieces, extent, seed, dr, dc) for _, seed in sorted(cands)[-6:]]
    score = [_chain_score(x, th, [pieces[i] for i in ids], dr, dc) for ids in chains]
    return _members(lab, n, chains[int(np.argmax(score))]), th, hi


def _chain_score(x: np.ndarray, th: np.ndarray, pieces: list[tuple[np.ndarray, np.ndarray]], dr: float,
                 dc: float) -> float:
    """A chain's contrast times the square root of its length, weighted by its :func:`beside_periodicity`,
    from its pieces' pixels (the values the chain's mask gives: its pixels in the mask's order)."""
    r, c = np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])
    contrast = th.ravel()[np.sort(r * th.shape[1] + c)].mean()
    rows, at = np.unique(r, return_inverse=True)
    centres = np.bincount(at, weights=c) / np.bincount(at)
    return contrast * np.sqrt(rows[-1] - rows[0] + 1) * (0.5 + _periodicity(x, rows, centres, dr, dc))


def _follow(seed: np.ndarray, th: np.ndarray, hi: float, pixel_spacing_mm, cut: float) -> np.ndarray:
    """The seed column continued along the top-hat ridge, at most 1.5 times its median width."""
    if not seed.any():
        return seed
    width_mm = float(median(seed.sum(axis=1)[seed.any(axis=1)])) * float(pixel_spacing_mm[1])
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
    cen = _row_centres(out[rows])
    gaps = np.setdiff1d(np.arange(rows[0], rows[-1] + 1), rows)
    out[gaps, np.round(np.interp(gaps, rows, cen)).astype(int)] = True
    return out


#: The sagittal slab is centred on the spine from left to right (the phantoms: sd 2.5 mm): the slice choice
#: weighs a slice this far (mm, sd) off the slab's centre down by a Gaussian (bands of fat under the skin
#: 15-30 mm lateral are as bright and long as the CSF column).
SLAB_CENTRE_SD_MM = 30.0
#: The slices whose weighted CSF contrast is within this share of the best one's are the sac's middle.
MID_SHARE = 0.7
#: Of those, the slice nearest the midline whose column is at least this share of the longest one's.
LONG_SHARE = 0.75


def column_evidence(img: np.ndarray, pixel_spacing_mm) -> tuple[float, float, tuple | None]:
    """The CSF column of one sagittal slice: its contrast, its pixels' brightness above their rows'
    background (normalised intensity) summed over its area (mm2), and its length (mm); (0, 0, None) when the
    column is under 40 mm long or only the fat under the skin stands out (:data:`MIN_BODY_DEPTH_MM`). Third,
    when the column counts, the :func:`_seed_column` result it came from (its pieces lie deep in the body,
    so it is also the column without ``deep_only``).

    The contrast is largest at the midline and falls off to either side as
    the slice cuts the edge of the sac: partial volume through a thick slice
    dims the CSF, and the fat of the foramina beside it adds area, not contrast.
    """
    dr, dc = (float(v) for v in pixel_spacing_mm)
    seed, th, hi = _seed_column(img, pixel_spacing_mm, cut=CSF_CUT, deep_only=True)
    rows = np.flatnonzero(seed.any(axis=1))
    if len(rows) < 2 or np.ptp(rows) * dr < 40.0:
        return 0.0, 0.0, None
    return float(th[seed].sum()) * dr * dc, float(np.ptp(rows)) * dr, (seed, th, hi)


def _run_around(score: np.ndarray, i: int, share: float) -> tuple[int, int]:
    """The first and last index of the run of ``score`` around ``i`` at or above ``share`` of ``score[i]``."""
    lo, hi = i, i
    while lo > 0 and score[lo - 1] >= share * score[i]:
        lo -= 1
    while hi < len(score) - 1 and score[hi + 1] >= share * score[i]:
        hi += 1
    return lo, hi


def mid_sagittal(stack: Stack) -> tuple[int, float]:
    """See :func:`mid_sagittal_seeded` (the slice and the offset only)."""
    return mid_sagittal_seeded(stack)[:2]


def mid_sagittal_seeded(stack: Stack) -> tuple[int, float, tuple | None]:
    """The mid-sagittal slice and the midline's offset from it along the slice normal (mm).

    Every slice's CSF column (:func:`column_evidence`): its contrast, smoothed
    over 5 mm of slices (thin slices are noisy) and weighed by the slice's
    distance from the slab's centre (:data:`SLAB_CENTRE_SD_MM`), peaks at the
    midline; the midline is the mean position of the slices around the peak
    within :data:`MID_SHARE` of it, weighted by that score (the sac is
    symmetric about it). The slice returned is the one nearest the midline
    among the slices of the sac's middle (unsmoothed contrast within
    :data:`MID_SHARE` of their best) whose column is nearly as long as their
    longest (:data:`LONG_SHARE`): the canal is fitted and its discs found on
    it, and a column that stops short (a bright sac end not joined, a tight
    level) loses the lowest discs.

    The third value is the chosen slice's CSF column as :func:`fit_canal` takes it (``seed``), so the
    canal is not looked for twice on it; None when no slice has a column.
    """
    g = stack.geometry
    k, sp = g.n_slices, float(g.slice_spacing_mm) if g.n_slices > 1 else 1.0
    evidence = [column_evidence(stack.pixels[i], g.pixel_spacing_mm) for i in range(k)]
    contrast, length = np.array([e[:2] for e in evidence]).reshape(k, 2).T
    if not contrast.any():
        return k // 2, 0.0, None
    weight = np.exp(-0.5 * (((np.arange(k) - (k - 1) / 2) * sp) / SLAB_CENTRE_SD_MM) ** 2)
    h = int(round(2.5 / sp))
    score = (ndi.uniform_filter1d(contrast, 2 * h + 1, mode="nearest") if h else contrast) * weight
    lo, hi = _run_around(score, int(np.argmax(score)), MID_SHARE)
    centre = float((np.arange(lo, hi + 1) * score[lo:hi + 1]).sum() / score[lo:hi + 1].sum())
    raw = contrast * weight
    a, b = _run_around(raw, lo + int(np.argmax(raw[lo:hi + 1])), MID_SHARE)
    longest = length[a:b + 1].max()
    mid = min((i for i in range(a, b + 1) if length[i] >= LONG_SHARE * longest), key=lambda i: abs(i - centre))
    return mid, (centre - mid) * sp, evidence[mid][2]


#: A row's CSF run wider than this times the column's typical width is widened on one side (fat beside the
#: sac, the cauda equina's spread, a bright facet joint): its centre is not the run's.
WIDE_RUN = 1.5


#: Runs of CSF on a row this close (mm) are one run: the cord or the roots of the cauda equina split the sac's
#: CSF in two on many rows.
RUN_GAP_MM = 10.0


def _runs(row: np.ndarray, max_gap: float = 0.0) -> np.ndarray:
    """The runs of True of a boolean row: (first, last) column of each, left to right; runs at most
    ``max_gap`` columns apart are joined."""
    d = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
    a, b = np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1
    if len(a) > 1 and max_gap > 0:
        keep = np.concatenate([[True], a[1:] - b[:-1] - 1 > max_gap])
        a, b = a[keep], b[np.concatenate([keep[1:], [True]])]
    return np.stack([a, b], axis=1)


def tracked_centres(mask: np.ndarray, rows: np.ndarray, dc: float = 1.0, *, wide: float = WIDE_RUN,
                    gap_mm: float = RUN_GAP_MM) -> np.ndarray:
    """The CSF column's centre column on each of ``rows`` (ascending, each with pixels in ``mask``), followed
    row by row.

    A row's runs of CSF less than ``gap_mm`` apart (``dc`` mm a column) are one run (the cord or the roots
    split the sac's CSF). The typical width is the median width of each row's widest run. From the row
    whose run is nearest that width in the column's middle half, the centre goes up and down: on each row the run nearest the previous centre; where it is
    at most ``wide`` times the typical width its centre is the run's middle, and its two edges are the
    ones the next row is compared with; where it is wider, the edge that moved least from the previous row's
    kept its place and the centre is half a typical width in from it (the other edge is the widening: fat
    beside the sac, the spread of the cauda equina, the bright bend at the sacrum), and the previous edges
    carry on with the kept one updated. The per-row median of before pulled the centre half the widening's
    width towards it.
    """
    rows = np.asarray(rows)
    runs = [_runs(mask[r], gap_mm / dc) for r in rows]
    if not len(rows):
        return np.zeros(0)
    widest = np.array([int(np.argmax(u[:, 1] - u[:, 0])) for u in runs])
    typical = float(np.median([u[i, 1] - u[i, 0] + 1 for u, i in zip(runs, widest)]))
    half = 0.5 * typical
    n = len(rows)
    q0, q1 = n // 4, max(n // 4 + 1, (3 * n) // 4)
    width0 = np.array([runs[i][widest[i], 1] - runs[i][widest[i], 0] + 1 for i in range(q0, q1)])
    start = q0 + int(np.argmin(np.abs(width0 - typical)))
    out = np.zeros(n)
    a0, b0 = (float(v) for v in runs[start][widest[start]])
    out[start] = 0.5 * (a0 + b0)
    for step in (-1, 1):
        a, b, c = a0, b0, out[start]
        for i in range(start + step, -1 if step < 0 else n, step):
            u = runs[i]
            mids = 0.5 * (u[:, 0] + u[:, 1])
            j = int(np.argmin(np.where((u[:, 0] <= c) & (u[:, 1] >= c), -1.0, np.abs(mids - c))))
            ra, rb = float(u[j, 0]), float(u[j, 1])
            if rb - ra + 1 <= wide * typical:
                a, b, c = ra, rb, 0.5 * (ra + rb)
            elif abs(ra - a) <= abs(rb - b):
                a, c = ra, ra + half - 0.5
                b = max(b, c)
            else:
                b, c = rb, rb - half + 0.5
                a = min(a, c)
            out[i] = c
    return out


@dataclass
class Canal:
    rows: np.ndarray            # sample rows (float, input pixels), top to bottom
    cols: np.ndarray            # canal centre column at each sample
    s_mm: np.ndarray            # arc position of each sample (mm from the top sample)
    width_mm: np.ndarray        # CSF width at each sample
    end_mm: float               # arc position of the lowest CSF (thecal sac end)
    anterior: float             # +1 when anterior is increasing column, else -1


#: Whether :func:`fit_canal`'s centre line is :func:`tracked_centres` (else each row's median column). On: on
#: SPIDER it gains (discs within 5 mm 0.66 -> 0.78 / 0.61 -> 0.70, LightGBM seeds 0 / 1; swaps 4 -> 2 and 5 -> 3
#: of 16), on held-out phantoms it does not lose (0.875 -> 0.890 within 5 mm, no wrong level); on ``kaggle_study``
#: one point fewer is within 6 mm (17 of 25, not 18: its L5/S1 spinal point 8.8 -> 13.8 mm; README "Finding the
#: points"). Real anatomy with masks (80 discs) outweighs one point of one study.
TRACKED_CENTRE_LINE = True


def fit_canal(img: np.ndarray, pixel_spacing_mm, iop, *, extend_mm: tuple[float, float] = (20.0, 40.0),
              seed: tuple | None = None, tracked: bool | None = None) -> Canal | None:
    """Fit ``col = f(row)`` through the CSF column and sample it every :data:`STEP_MM`.

    The curve goes on straight (along its end tangent) ``extend_mm`` above and
    below the CSF, within the image: the CSF can stop above the lowest disc
    (a tight canal at L5/S1, a short sac), and the detector must still be able
    to find it there. ``seed``: this slice's :func:`_seed_column` result when already computed
    (:func:`mid_sagittal_seeded`). ``tracked``: the centre line by :func:`tracked_centres` (default
    :data:`TRACKED_CENTRE_LINE`).
    """
    dr, dc = (float(v) for v in pixel_spacing_mm)
    csf, th, hi = seed if seed is not None else _seed_column(img, pixel_spacing_mm, cut=CSF_CUT)
    mask = _follow(csf, th, hi, pixel_spacing_mm, CSF_CUT)
    rows_csf = np.flatnonzero(csf.any(axis=1))
    if len(rows_csf) < 2 or np.ptp(rows_csf) * dr < 40:
        return None
    # The centre line: followed row by row (:func:`tracked_centres`: neither a bright blob beside the column
    # nor a widening on one side pulls it; ``tracked=False``: each row's median column), rows
    # without CSF (tight levels) interpolated, smoothed over 10 mm. A real canal bends too much between the
    # thoracic spine and the sacrum for one polynomial.
    rows_m = np.flatnonzero(mask.any(axis=1))
    top, bottom = int(rows_m[0]), int(rows_m[-1])
    tracked = TRACKED_CENTRE_LINE if tracked is None else tracked
    at = tracked_centres(mask, rows_m, dc) if tracked else row_medians(mask[rows_m])
    centre = np.interp(np.arange(top, bottom + 1), rows_m, at)
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
