"""Intensity profiles across the foraminal root: the fat on either side of it, line by line.

On a parasagittal T1 slice the exiting root is a dark spot in the keyhole of bright foraminal fat; a narrowed
foramen has lost the fat around it and the root lies against the disc or the facet. These features sample short
lines through the point in the window turned to the spine's axis (:func:`spinefeat.features.texture.aligned_window`:
rows along the axis, columns towards the back): lines across the foramen (antero-posterior, perpendicular to the
axis) at a few heights, and one along the axis. On each line the root is its darkest sample within
:data:`ROOT_SEARCH_MM` of the point; on either side of it, the fat is the run of samples brighter than half-way
from the root to the line's brightest sample within :data:`SIDE_MM` (scale- and offset-free: a ratio of the
line's own values, so any scanner contrast or windowed 8-bit export reads the same); its length in mm (from the
given spacing) is the fat's width on that side, and (side peak - root) / side peak the fat-to-root contrast.
"""

from __future__ import annotations

import numpy as np

from ..segment.common import crop_mm
from . import register
from .texture import ROI_SPACING_MM, aligned_window

#: Half-length of each line (mm) and its window's side (mm): the window turned to the spine holds every line.
LINE_HALF_MM = 9.0
#: The root is looked for within this distance of the point along each line (mm).
ROOT_SEARCH_MM = 2.5
#: The fat on each side of the root is looked for within this distance of it (mm).
SIDE_MM = 6.0
#: Heights of the lines across the foramen (mm along the spine's axis, + towards the feet).
ACROSS_OFFSETS_MM = (-4.0, -2.0, 0.0, 2.0, 4.0)
#: Fat narrower than this on a side of a line counts as lost there (mm).
LOST_MM = 1.0
#: Each line averages this many window pixels across it (0.5 mm each): a 1.5 mm band, less noise.
BAND_PX = 3

NAMES = {
    "foramen_cross_contrast_min": "smallest fat-to-root contrast ((side peak - root) / side peak, the weaker "
                                  "side of each line) over the lines across the foramen",
    "foramen_cross_contrast_mean": "mean over the lines across the foramen of the weaker side's fat-to-root contrast",
    "foramen_cross_contrast_centre": "the weaker side's fat-to-root contrast of the line across the foramen "
                                     "through the point",
    "foramen_cross_fat_front_mm": "fat width in front of the root, line across the foramen through the point",
    "foramen_cross_fat_back_mm": "fat width behind the root, line across the foramen through the point",
    "foramen_cross_fat_min_mm": "narrowest fat on either side of the root over the 3 middle lines across the foramen "
                                "(2 mm apart)",
    "foramen_cross_fat_mean_mm": "mean fat width on both sides of the root over the lines across the foramen",
    "foramen_cross_fat_total_max_mm": "widest fat (front plus back) of the lines across the foramen",
    "foramen_cross_root_width_mm": "dark width around the root (under the line's half-way level), line across "
                                   "the foramen through the point",
    "foramen_cross_sides_lost": f"sides (of {2 * len(ACROSS_OFFSETS_MM)}: front and back of each line across "
                                f"the foramen) with fat under {LOST_MM:g} mm",
    "foramen_cross_along_contrast": "the weaker side's fat-to-root contrast of the line along the spine's axis",
    "foramen_cross_fat_up_mm": "fat width above the root, line along the spine's axis through the point",
    "foramen_cross_fat_down_mm": "fat width below the root, line along the spine's axis through the point",
}
_UNIT = {n: ("mm" if n.endswith("_mm") else "1") for n in NAMES}
for _n, _d in NAMES.items():
    register(_n, f"{_d}; profiles {2 * LINE_HALF_MM:g} mm long, {BAND_PX * ROI_SPACING_MM:g} mm wide, in the "
                 f"window turned to the spine's axis; root: darkest within {ROOT_SEARCH_MM:g} mm of the point, fat: "
                 f"brighter than half-way from the root to the line's peak within {SIDE_MM:g} mm; sagittal T1, "
                 "directions from ImageOrientationPatient and the labelled levels", _UNIT[_n])


def line_measure(p: np.ndarray, spacing_mm: float = ROI_SPACING_MM) -> dict[str, float]:
    """One profile ``p`` (odd length, the point at its middle, ``spacing_mm`` apart) across the root:
    ``contrast`` (the weaker side's (peak - root) / peak), ``fat_lo_mm`` / ``fat_hi_mm`` (fat width towards the
    profile's start / end), ``root_width_mm`` (the dark run around the root)."""
    p = np.asarray(p, float)
    c = (len(p) - 1) // 2
    k = int(round(ROOT_SEARCH_MM / spacing_mm))
    s = int(round(SIDE_MM / spacing_mm))
    t0 = c - k + int(np.argmin(p[c - k: c + k + 1]))
    root = float(p[t0])
    lo, hi = p[max(t0 - s, 0): t0][::-1], p[t0 + 1: t0 + 1 + s]       # outwards from the root
    peak_lo = float(lo.max()) if lo.size else root
    peak_hi = float(hi.max()) if hi.size else root
    peak = max(peak_lo, peak_hi)
    nan = float("nan")
    if not np.isfinite(peak) or peak <= 0:
        return {"contrast": nan, "fat_lo_mm": nan, "fat_hi_mm": nan, "root_width_mm": nan}
    thr = root + 0.5 * (peak - root)
    contrast = (min(peak_lo, peak_hi) - root) / peak if peak > root else 0.0

    def dark_run(side):
        above = np.flatnonzero(side >= thr)
        return int(above[0]) if above.size else len(side)

    def fat_run(side):
        # The first run of fat out from the root (the root's own dark run first), no further.
        bright = side >= thr
        start = dark_run(side)
        if start >= len(side) or peak <= root:
            return 0
        end = np.flatnonzero(~bright[start:])
        return int(end[0]) if end.size else len(side) - start

    root_width = (1 + dark_run(lo) + dark_run(hi)) * spacing_mm
    return {"contrast": float(contrast), "fat_lo_mm": fat_run(lo) * spacing_mm, "fat_hi_mm": fat_run(hi) * spacing_mm,
            "root_width_mm": float(root_width)}


def foramen_cross(image: np.ndarray, seed_rc, *, pixel_spacing_mm, series_high: float, view, axis_rc=None
                  ) -> dict[str, float]:
    """The :data:`NAMES` features of one foramen (see the module doc); NaN when the series' level is unusable.

    ``view``: the foramen's (rows to the feet, columns to the back, from ImageOrientationPatient); ``axis_rc``:
    the spine's direction to the feet at the point (image (row, col); None: the view's rows)."""
    if not np.isfinite(series_high) or series_high <= 0:
        return {n: float("nan") for n in NAMES}
    size = 2 * LINE_HALF_MM + ROI_SPACING_MM                 # odd number of samples, the point in the middle
    crop, _ = crop_mm(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, size_mm=float(np.ceil(size * np.sqrt(2))) + 1,
                      spacing_mm=ROI_SPACING_MM)
    win = aligned_window(crop, series_high=series_high, view=view, axis_rc=axis_rc, size_mm=size)
    c = (win.shape[0] - 1) // 2
    b = BAND_PX // 2
    across = []
    for off in ACROSS_OFFSETS_MM:
        r = c + int(round(off / ROI_SPACING_MM))
        across.append(line_measure(win[r - b: r + b + 1].mean(axis=0)))
    along = line_measure(win[:, c - b: c + b + 1].mean(axis=1))
    centre = across[list(ACROSS_OFFSETS_MM).index(0.0)]
    con = np.array([m["contrast"] for m in across])
    fat = np.array([[m["fat_lo_mm"], m["fat_hi_mm"]] for m in across])
    return {
        "foramen_cross_contrast_min": float(con.min()), "foramen_cross_contrast_mean": float(con.mean()),
        "foramen_cross_contrast_centre": centre["contrast"],
        "foramen_cross_fat_front_mm": centre["fat_lo_mm"], "foramen_cross_fat_back_mm": centre["fat_hi_mm"],
        "foramen_cross_fat_min_mm": float(fat[1:-1].min()), "foramen_cross_fat_mean_mm": float(fat.mean()),
        "foramen_cross_fat_total_max_mm": float(fat.sum(axis=1).max()),
        "foramen_cross_root_width_mm": centre["root_width_mm"],
        "foramen_cross_sides_lost": float((fat < LOST_MM).sum()),
        "foramen_cross_along_contrast": along["contrast"],
        "foramen_cross_fat_up_mm": along["fat_lo_mm"], "foramen_cross_fat_down_mm": along["fat_hi_mm"],
    }
