"""Steps 4-5: the midline from the axial dural sac, the foramina moved to their fat keyhole on Sagittal T1, the
recesses placed from the axial sac."""

from __future__ import annotations

import logging

import numpy as np

from ..dicom import Stack
from ..errors import GeometryError
from ..series import project_to_series

log = logging.getLogger(__name__)


RECESSES = ("left_subarticular_stenosis", "right_subarticular_stenosis")


#: A keyhole counts as the foramen seen on a slice when its area (mm2) is in this range.
KEYHOLE_AREA_MM2 = (5.0, 250.0)


def _keyhole(img: np.ndarray, rc, pixel_spacing_mm, series_high: float, *,
             max_shift_mm: float = 4.0) -> tuple[float, float, float] | None:
    """Centre (row, col) and area (mm2) of the foraminal keyhole (fat with the root hole filled) segmented
    around ``rc`` on a T1 slice, or None when there is none of a plausible size within ``max_shift_mm``."""
    from ..segment import FOUND, segment_foramen

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
    from ..segment import FAILED, segment_axial_sac

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


def axial_midline_mm(images, stack: Stack, k: int, rc: np.ndarray) -> dict[int, float]:
    """Per level: the signed distance (mm, along the sagittal normal) from slice ``k`` to the dural sac
    centre found on the axial T2 slice the level's disc point projects to. Levels whose sac is not found
    are left out."""
    n = stack.geometry.normal
    dists: dict[int, list[float]] = {}
    for sid in images.series_of("Axial T2"):
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
