"""Neural foramen on a parasagittal T1 slice: the keyhole of bright fat and the dark root inside."""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage as ndi

from ..fastnp import median, percentile
from .common import FAILED, FOUND, Segmentation, View, axis_lengths_mm, centre_distance_mm, convex_hull, extent_mm, \
    finish, members, open_crop

NAN = float("nan")
KEYS = ("area_mm2", "fat_area_mm2", "fat_within_mm2", "height_mm", "width_mm", "narrowest_width_mm", "fat_fraction",
        "root_area_mm2",
        "fat_up_mm", "fat_down_mm", "fat_front_mm", "fat_back_mm", "min_fat_mm", "n_directions_lost", "fat_level",
        "feret_max_mm", "major_axis_mm", "minor_axis_mm")
#: Brightest tissue near the point under this share of the series' fat level: no foraminal fat left.
FAT_LEVEL = 0.40
#: Fat thinner than this around the root counts as lost in that direction (mm).
FAT_LOST_MM = 1.0
#: The keyhole is looked for within this ellipse around the point (cranio-caudal, antero-posterior
#: semi-axes, mm): a normal foramen is 15-20 mm tall and 8-10 mm wide, and the point can sit anywhere in it.
#: Marrow of the pedicles and bodies is as bright as fat on T1 and, on coarse slices, joins it.
KEYHOLE_SEMI_AXES_MM = (11.0, 7.0)


def segment_foramen(image: np.ndarray, seed_rc, *, pixel_spacing_mm, series_high: float | None = None, iop=None,
                    crop_size_mm: float = 32.0, spacing_mm: float = 0.25, sizes: bool = True) -> Segmentation:
    """Segment the foraminal fat (root hole filled) around a seed on a sagittal T1 slice.

    Fat is whatever is brighter than half-way between the crop's median
    tissue and the brightest fat (95th percentile) within
    the ellipse :data:`KEYHOLE_SEMI_AXES_MM` around the point; the keyhole is the convex hull of
    the fat pieces reaching within 4 mm of the point (the root fills the hole
    between them). The rule is free of scale and offset, so it holds on any
    scanner's contrast and on windowed 8-bit exports.

    Measurements: ``area_mm2`` of the keyhole, ``fat_area_mm2`` (its fat),
    ``fat_within_mm2`` (all fat within the ellipse), ``height_mm`` (cranio-caudal
    extent), ``width_mm`` (antero-posterior extent), ``narrowest_width_mm``
    over its middle (cranio-caudally), ``fat_fraction``, ``root_area_mm2``,
    the fat thickness from the root to the keyhole's edge up, down, front and
    back, ``n_directions_lost`` (thinner than :data:`FAT_LOST_MM`; Lee's
    grading counts these), and the orientation-invariant diameters
    ``feret_max_mm``, ``major_axis_mm`` and ``minor_axis_mm``.

    The anatomical directions come from ``iop`` (ImageOrientationPatient;
    default the standard sagittal orientation, columns to the back, rows to
    the feet), never from the image axes: a transposed or flipped slice with
    its own orientation measures the same.

    With ``series_high`` (the series' 99.5th percentile, its fat level on
    T1), ``fat_level`` is the brightest tissue within 4 mm of the point over
    it; under :data:`FAT_LEVEL` no fat is left: area 0, four directions lost.

    ``sizes=False`` measures only what the localiser's keyhole search reads: ``area_mm2``, ``height_mm``,
    ``width_mm`` (and ``fat_level``) of the same mask, with the same quality; the rest is NaN.
    """
    crop, origin, fail = open_crop(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, size_mm=crop_size_mm,
                                   spacing_mm=spacing_mm, keys=KEYS)
    if fail is not None:
        return fail
    view = View.from_iop((0.0, 1.0, 0.0, 0.0, 0.0, -1.0) if iop is None else iop)
    crop = view.apply(crop)        # rows now run to the feet, columns to the back
    near = centre_distance_mm(crop.shape, spacing_mm) <= 4.0
    fat_level = float(percentile(crop[near], 95) / series_high) if series_high else NAN
    if fat_level < FAT_LEVEL:
        return _no_fat(crop.shape, fat_level, spacing_mm, origin, "no fat left")
    # Fat is the tissue brighter than half-way between the crop's typical tissue (its median: marrow,
    # disc, muscle) and the brightest fat near the point; scale- and offset-free, so it holds on any
    # scanner's contrast and on windowed 8-bit exports.
    within = _within(crop.shape[0], spacing_mm)
    tissue = float(median(crop))
    peak = float(percentile(crop[within], 95))
    if peak - tissue <= 1e-6 * max(abs(peak), 1.0):
        return Segmentation(np.zeros(crop.shape, bool), {k: NAN for k in KEYS}, FAILED, spacing_mm, origin,
                            ["no contrast near the seed"])
    threshold = tissue + 0.5 * (peak - tissue)
    above = (crop >= threshold) & within
    # The root splits the fat ring into pieces: the keyhole is the convex hull of every fat piece
    # reaching within 4 mm of the point, as far as the keyhole reaches.
    lab, _ = ndi.label(above)
    keep = np.unique(lab[near & above])
    pieces = members(lab, keep[keep > 0])
    if not pieces.any():
        # Fat in the ellipse but none within 4 mm of the root: the fat around the root is lost (a finding,
        # as above), not a failure to measure.
        seg = _no_fat(crop.shape, fat_level, spacing_mm, origin, "no fat near the seed")
        seg.measurements["fat_within_mm2"] = float(above.sum()) * spacing_mm ** 2
        return seg
    mask = convex_hull(pieces)
    fat = pieces
    root = mask & ~fat
    h, w = extent_mm(mask, spacing_mm)
    if not sizes:       # the keyhole search reads the keyhole's mask, area and extent only
        meas = {**dict.fromkeys(KEYS, NAN), "area_mm2": float(mask.sum()) * spacing_mm ** 2, "height_mm": h,
                "width_mm": w, "fat_level": fat_level}
        return finish(view.undo(mask), meas, spacing_mm, origin, min_area_mm2=3.0)
    rows = np.flatnonzero(mask.any(axis=1))
    mid = rows[len(rows) // 5: max(len(rows) * 4 // 5, len(rows) // 5 + 1)]
    narrow = float(mask[mid].sum(axis=1).min()) * spacing_mm if len(mid) else NAN
    # Fat around the root: from the root's centre along the four image directions.
    lab, n = ndi.label(root)
    if n:
        root_px = np.bincount(lab.ravel(), minlength=n + 1)[1:]        # pixels of each root piece
        rr, cc = np.nonzero(lab == 1 + int(np.argmax(root_px)))
        r0, c0 = int(round(rr.mean())), int(round(cc.mean()))
        root_area = float(root_px.max()) * spacing_mm ** 2
    else:
        r0, c0 = mask.shape[0] // 2, mask.shape[1] // 2
        root_area = 0.0

    def fat_along(dr, dc):
        r, c, count, seen_root = r0, c0, 0, bool(root[r0, c0])
        while 0 <= r < mask.shape[0] and 0 <= c < mask.shape[1] and mask[r, c]:
            if fat[r, c]:
                count += 1
            elif seen_root and count:
                break
            r, c = r + dr, c + dc
        return count * spacing_mm

    up, down, front, back = fat_along(-1, 0), fat_along(1, 0), fat_along(0, -1), fat_along(0, 1)
    dirs = np.array([up, down, front, back])
    feret, major, minor = axis_lengths_mm(mask, spacing_mm)
    meas = {"area_mm2": float(mask.sum()) * spacing_mm ** 2, "height_mm": h, "width_mm": w,
            "narrowest_width_mm": narrow, "fat_fraction": float(fat.sum() / mask.sum()),
            "fat_area_mm2": float(fat.sum()) * spacing_mm ** 2,
            "fat_within_mm2": float(above.sum()) * spacing_mm ** 2,
            "root_area_mm2": root_area, "fat_up_mm": up, "fat_down_mm": down, "fat_front_mm": front,
            "fat_back_mm": back, "min_fat_mm": float(dirs.min()), "n_directions_lost": float((dirs < FAT_LOST_MM).sum()),
            "fat_level": fat_level, "feret_max_mm": feret, "major_axis_mm": major, "minor_axis_mm": minor}
    return finish(view.undo(mask), meas, spacing_mm, origin, min_area_mm2=3.0)


@functools.lru_cache(maxsize=8)
def _within(n: int, spacing_mm: float) -> np.ndarray:
    """The ellipse :data:`KEYHOLE_SEMI_AXES_MM` around the centre of an ``n`` x ``n`` crop (read-only: made once
    per crop size, as every keyhole fit of the search asks for the same)."""
    a, b = KEYHOLE_SEMI_AXES_MM
    yy, xx = np.indices((n, n))
    within = ((yy - (n - 1) / 2) * spacing_mm / a) ** 2 + ((xx - (n - 1) / 2) * spacing_mm / b) ** 2 <= 1
    within.flags.writeable = False
    return within


def _no_fat(shape, fat_level: float, spacing_mm: float, origin, note: str) -> Segmentation:
    """No fat around the root: areas 0, all four directions lost (Lee's worst)."""
    meas = {k: 0.0 for k in KEYS}
    meas.update(n_directions_lost=4.0, fat_level=fat_level, root_area_mm2=NAN, narrowest_width_mm=0.0)
    return Segmentation(np.zeros(shape, bool), meas, FOUND, spacing_mm, origin, [note])
