"""Spinal canal: the dural sac on axial T2, the CSF column's AP width on sagittal T2."""

from __future__ import annotations

import numpy as np

from ..fastnp import median
from .common import FAILED, FOUND, WEAK, Segmentation, axis_lengths_mm, bright_region, convex_hull, crop_mm, \
    extent_along_mm, finish, open_crop, usable_normalised

NAN = float("nan")
AXIAL_KEYS = ("area_mm2", "csf_area_mm2", "ap_diameter_mm", "transverse_diameter_mm", "equivalent_diameter_mm",
              "feret_max_mm", "minor_axis_mm", "csf_fraction", "solidity", "width_front_mm", "width_middle_mm",
              "width_back_mm", "back_to_front_width")
#: Where the sac's width across is read, as fractions of its extent from its front to its back: an oval or
#: trefoil sac is widest in its middle, the posterior epidural fat triangle (taken for the sac when the sac
#: itself is compressed and grey) is widest at its front and narrows to an apex at the back. Chosen before
#: looking at the grades; compared on the development half of the real axial crops (with and without the
#: ratio and the mask's shift from the seed), see the README.
SAC_WIDTH_AT = {"width_front_mm": 0.2, "width_middle_mm": 0.5, "width_back_mm": 0.8}
SAGITTAL_KEYS = ("ap_width_mm", "ap_width_above_mm", "ap_width_below_mm", "width_ratio")
#: Where the sac's centre lies behind the line joining the two recess points, in units of their distance
#: (the recess points mark the sac's antero-lateral corners; anatomy, compared with 0 and 0.3 on real
#: grades last round and confirmed on the held-out half, see the README).
SAC_BEHIND_RECESS = 0.2
#: Typical distance between the left and right recess points at a disc, mm: the median over the share's
#: 425 axial crops holding both (17.7 mm under real-check's assumed field of view; no grades used). Places
#: the midline when only one recess point is known.
RECESS_DISTANCE_MM = 17.5
#: Below this share of the sac crop's range (1st to 99.5th percentile), the brightest tissue within 4 mm of
#: the seed is not CSF: the sac is compressed and grey (no CSF signal left), or the seed missed it.
#: Chosen on the development half of the real axial crops (0.4 .. 0.7 compared), see the README.
SAC_CSF_LEVEL = 0.6
#: Seeds the sac is measured from, (mm towards the back, mm across) from the given seed, for
#: :func:`segment_axial_sac`'s ``seed_offsets_mm``: five along the antero-posterior line and two beside the
#: seed. A single seed near the sac's back wall falls in the posterior epidural fat or in the sac depending
#: on a mm or two; the sac is the pixels inside for most of these seeds. Compared on the development half
#: of the real axial crops (+-0.9 .. +-3.5 mm, 3 to 9 seeds along the line; 0, 2 or 4 beside it), see the
#: README.
SAC_SEED_OFFSETS_MM = ((-3.5, 0.0), (-1.75, 0.0), (0.0, 0.0), (1.75, 0.0), (3.5, 0.0), (0.0, -1.75), (0.0, 1.75))


def axial_sac_seed(recess_rc, *, pixel_spacing_mm, posterior_rc=(1.0, 0.0), left_rc=(0.0, 1.0),
                   sides=None) -> tuple[float, float]:
    """Seed (row, col) of the dural sac on an axial slice from its recess points (left and right, or one).

    Two points: their midpoint moved :data:`SAC_BEHIND_RECESS` of their distance towards the patient's
    back (``posterior_rc``, from :func:`spinefeat.geometry.axial_directions`). One point (``sides`` gives
    its side, +1 left, -1 right): the midline is taken :data:`RECESS_DISTANCE_MM` / 2 medial of it
    (towards the other side, ``left_rc`` is the direction to the patient's left) and the same shift back,
    of that typical distance. A few mm of error in the points moves the seed by less than that, and the
    sac is searched within 4 mm of it.
    """
    pts = np.asarray(recess_rc, float).reshape(-1, 2)
    dr, dc = (float(v) for v in pixel_spacing_mm)
    if len(pts) == 2:
        d_mm = float(np.hypot((pts[0, 0] - pts[1, 0]) * dr, (pts[0, 1] - pts[1, 1]) * dc))
        mid = pts.mean(axis=0)
    elif len(pts) == 1 and sides is not None and len(sides) == 1 and sides[0] in (1, -1):
        d_mm = RECESS_DISTANCE_MM
        to_mid = -0.5 * d_mm * float(sides[0])       # mm along left_rc: a left point's midline is to its right
        mid = pts[0] + np.array([to_mid * left_rc[0] / dr, to_mid * left_rc[1] / dc])
    else:
        raise ValueError(f"the sac is seeded from two recess points (left and right) or one with its side, got "
                         f"{len(pts)} point(s) and sides {sides}")
    shift = SAC_BEHIND_RECESS * d_mm
    return float(mid[0] + shift * posterior_rc[0] / dr), float(mid[1] + shift * posterior_rc[1] / dc)


def segment_axial_sac(image: np.ndarray, seed_rc, *, pixel_spacing_mm, posterior_rc=(1.0, 0.0),
                      crop_size_mm: float = 28.0, spacing_mm: float = 0.25, strict: float = 0.85,
                      seed_offsets_mm=(0.0,), sizes: bool = True) -> Segmentation:
    """The dural sac (bright CSF, rootlet holes filled) around a seed on an axial T2 slice.

    The sac is the convex hull of the CSF component nearest the seed and the
    CSF pieces within 2 mm of it (clumped rootlets split the CSF), within a
    ``crop_size_mm`` square: an adult sac is under about 25 mm across, so a
    mask reaching the border has leaked (into facet fluid or paraspinal fat)
    and is flagged ``weak``.
    Returns a :class:`Segmentation` with ``area_mm2``, ``ap_diameter_mm`` and
    ``transverse_diameter_mm`` (extents towards the patient's back,
    ``posterior_rc`` from the orientation tags, and across it),
    ``csf_area_mm2`` (``area_mm2`` times ``csf_fraction``: the part of the
    sac that is bright CSF, without the rootlets and grey tissue inside it),
    ``equivalent_diameter_mm`` (of the circle of the same area, whatever the
    orientation) with ``feret_max_mm`` and ``minor_axis_mm`` (largest
    caliper diameter, minor axis of the ellipse of the same moments),
    ``csf_fraction`` (share of the filled sac that is bright CSF, low when
    rootlets clump), ``solidity``, and its widths across near its front, in
    its middle and near its back (:data:`SAC_WIDTH_AT`) with
    ``back_to_front_width``, their ratio. What fills it is sampled by
    :func:`spinefeat.features.axial.sac_profile`. When nothing within 4 mm
    of the seed reaches :data:`SAC_CSF_LEVEL` of the crop's range, the sac
    holds no CSF: every size is 0 and the result is ``weak``. A blank or
    saturated crop, or no bright structure near the seed, is ``failed``.

    ``seed_offsets_mm`` are mm along ``posterior_rc`` or (mm along it, mm across it: ``posterior_rc``
    turned by +90 deg) pairs. With several (e.g. :data:`SAC_SEED_OFFSETS_MM`), the sac is segmented from
    each seed moved that far and the result is the consensus (:func:`_consensus`): the pixels inside for
    at least half of the seeds, on a crop ``crop_size_mm`` plus twice the largest offset wide, centred on
    ``seed_rc``. With ``sizes=False`` (one seed), only ``area_mm2``,
    ``csf_fraction`` and ``solidity`` are measured (what the consensus uses of each seed's result); the other
    sizes are NaN.

    Examples
    --------
    >>> yy, xx = np.mgrid[:200, :200]
    >>> img = ((yy - 100) ** 2 + (xx - 100) ** 2 <= 40 ** 2).astype(float)   # r = 40 px = 10 mm
    >>> seg = segment_axial_sac(img, (100, 100), pixel_spacing_mm=(0.25, 0.25))
    >>> bool(abs(seg.measurements["area_mm2"] / (np.pi * 10 ** 2) - 1) < 0.03)
    True
    """
    offsets = [_offset_pair(o) for o in seed_offsets_mm]
    if len(offsets) > 1:
        return _consensus(image, seed_rc, offsets, pixel_spacing_mm=pixel_spacing_mm, posterior_rc=posterior_rc,
                          crop_size_mm=crop_size_mm, spacing_mm=spacing_mm, strict=strict)
    if offsets and offsets[0] != (0.0, 0.0):
        seed_rc = _moved(seed_rc, offsets[0], pixel_spacing_mm, posterior_rc)
    x, origin, fail = open_crop(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, size_mm=crop_size_mm,
                                spacing_mm=spacing_mm, keys=AXIAL_KEYS, hi_pct=99.5)
    if fail is not None:
        return fail
    back = tuple(float(v) for v in posterior_rc)
    mask, info = bright_region(x, spacing_mm=spacing_mm, input_px_mm=float(max(pixel_spacing_mm)), join_mm=2.0,
                               strict=strict, min_level=SAC_CSF_LEVEL)
    if not mask.any():
        if np.isfinite(info["hi"]) and info["hi"] <= SAC_CSF_LEVEL:
            # No CSF near the seed: a sac without CSF measures none (Schizas C/D), but a seed that missed
            # the sac looks the same, so the finding is only ``weak``.
            return Segmentation(mask, _no_csf(), WEAK, spacing_mm, origin, ["no CSF near the seed"])
        return Segmentation(mask, {k: NAN for k in AXIAL_KEYS}, FAILED, spacing_mm, origin,
                            ["no bright structure near the seed"])
    # Rootlets lie against the dependent (posterior) wall and notch the CSF from
    # outside, where hole filling cannot reach; the sac itself is nearly convex.
    hull = convex_hull(mask)
    csf, solidity = float(info["bright"][hull].mean()), float(mask.sum() / max(hull.sum(), 1))
    if sizes:
        meas = _sac_sizes(hull, spacing_mm, back, csf_fraction=csf, solidity=solidity)
    else:
        meas = {**dict.fromkeys(AXIAL_KEYS, NAN), "area_mm2": float(hull.sum()) * spacing_mm ** 2,
                "csf_fraction": csf, "solidity": solidity}
    return finish(hull, meas, spacing_mm, origin, min_area_mm2=5.0)


def _offset_pair(o) -> tuple[float, float]:
    """A seed offset as (mm towards the back, mm across): a number is along the back only."""
    ap, across = (o, 0.0) if np.isscalar(o) else o
    return float(ap), float(across)


def _moved(seed_rc, offset, pixel_spacing_mm, posterior_rc) -> tuple[float, float]:
    """``seed_rc`` moved by ``offset`` (mm towards the back, mm across: ``posterior_rc`` turned by 90 deg)."""
    dr, dc = (float(v) for v in pixel_spacing_mm)
    ap, lr = offset
    d = (ap * posterior_rc[0] - lr * posterior_rc[1], ap * posterior_rc[1] + lr * posterior_rc[0])
    return float(seed_rc[0] + d[0] / dr), float(seed_rc[1] + d[1] / dc)


def _no_csf() -> dict[str, float]:
    """A sac holding no CSF: every size 0, the ratios undefined."""
    meas = {k: 0.0 for k in AXIAL_KEYS}
    meas["solidity"] = meas["back_to_front_width"] = NAN
    return meas


def _widths_mm(mask, spacing_mm, back) -> dict[str, float]:
    """The mask's width across at :data:`SAC_WIDTH_AT` of its extent along ``back`` (one pixel thick strips)."""
    rr, cc = np.nonzero(mask)
    t = rr * back[0] + cc * back[1]                        # pixels along the patient's back
    t0, t1 = t.min(), t.max()
    return {k: float((np.floor(t - (t0 + f * (t1 - t0)) + 0.5) == 0).sum()) * spacing_mm
            for k, f in SAC_WIDTH_AT.items()}


def _sac_sizes(mask, spacing_mm, back, *, csf_fraction, solidity) -> dict[str, float]:
    across = (-back[1], back[0])
    area = float(mask.sum()) * spacing_mm ** 2
    feret, _, minor = axis_lengths_mm(mask, spacing_mm)
    widths = _widths_mm(mask, spacing_mm, back)
    front = widths["width_front_mm"]
    return {"area_mm2": area, "csf_area_mm2": area * csf_fraction,
            "ap_diameter_mm": extent_along_mm(mask, spacing_mm, back),
            "transverse_diameter_mm": extent_along_mm(mask, spacing_mm, across),
            "equivalent_diameter_mm": float(2 * np.sqrt(area / np.pi)), "feret_max_mm": feret,
            "minor_axis_mm": minor, "csf_fraction": csf_fraction, "solidity": solidity, **widths,
            "back_to_front_width": widths["width_back_mm"] / front if front > 0 else NAN}


def _consensus(image, seed_rc, offsets, *, pixel_spacing_mm, posterior_rc, crop_size_mm, spacing_mm,
               strict) -> Segmentation:
    """The sac from several seeds around ``seed_rc`` (see :func:`segment_axial_sac`).

    Each seed's mask is placed on one crop centred on ``seed_rc`` (to the nearest crop pixel) and the
    pixels inside for at least half of the seeds are the sac. It is ``weak`` when most seeds' results are
    (their masks reach their crop's border, or they found no CSF); with an empty consensus, all sizes are 0
    (``weak``) when most seeds found no CSF, else it is ``failed``. ``csf_fraction`` and ``solidity`` are
    the means over the seeds that found a sac.
    """
    dr, dc = (float(v) for v in pixel_spacing_mm)
    back = tuple(float(v) for v in posterior_rc)
    size_mm = crop_size_mm + 2 * max(np.hypot(*o) for o in offsets)
    n = int(round(size_mm / spacing_mm))
    half = (n - 1) / 2.0
    origin = (float(seed_rc[0]) - half * spacing_mm / dr, float(seed_rc[1]) - half * spacing_mm / dc)
    votes = np.zeros((n, n), np.int32)
    segs = [segment_axial_sac(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, posterior_rc=back,
                              crop_size_mm=crop_size_mm, spacing_mm=spacing_mm, strict=strict, seed_offsets_mm=(o,),
                              sizes=False)
            for o in offsets]
    for seg in segs:
        if not seg.mask.any():
            continue
        i = int(round((seg.origin_rc[0] - origin[0]) * dr / spacing_mm))
        j = int(round((seg.origin_rc[1] - origin[1]) * dc / spacing_mm))
        m = seg.mask.shape[0]
        votes[max(i, 0):i + m, max(j, 0):j + m] += seg.mask[max(-i, 0):n - i, max(-j, 0):n - j]
    mask = 2 * votes >= len(segs)
    weak = 2 * sum(s.quality == WEAK for s in segs) > len(segs)
    notes = sorted({note for s in segs for note in s.notes})
    if not mask.any():
        if 2 * sum("no CSF near the seed" in s.notes for s in segs) > len(segs):
            return Segmentation(mask, _no_csf(), WEAK, spacing_mm, origin, ["no CSF near the seed"])
        return Segmentation(mask, {k: NAN for k in AXIAL_KEYS}, FAILED, spacing_mm, origin,
                            notes or ["no sac where most seeds agree"])
    found = [s.measurements for s in segs if s.mask.any()]
    meas = _sac_sizes(mask, spacing_mm, back, csf_fraction=float(np.mean([m["csf_fraction"] for m in found])),
                      solidity=float(np.nanmean([m["solidity"] for m in found])))
    seg = finish(mask, meas, spacing_mm, origin, min_area_mm2=5.0)
    if weak:
        seg.quality = WEAK
    seg.notes = sorted({*seg.notes, *notes})
    return seg


def _column_width(image, seed_rc, pixel_spacing_mm, spacing_mm, search_mm) -> tuple[float, np.ndarray, tuple]:
    crop, origin = crop_mm(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, size_mm=24.0, spacing_mm=spacing_mm)
    why, x = usable_normalised(crop, 99.5)
    if why:
        return NAN, np.zeros(crop.shape, bool), origin
    mask, _ = bright_region(x, spacing_mm=spacing_mm, input_px_mm=float(max(pixel_spacing_mm)), search_mm=search_mm)
    if not mask.any():
        return NAN, mask, origin
    c = mask.shape[0] // 2
    band = mask[max(c - int(1 / spacing_mm), 0): c + int(1 / spacing_mm) + 1]
    widths = band.sum(axis=1)          # columns run antero-posterior on a sagittal slice
    return float(median(widths)) * spacing_mm, mask, origin


def measure_sagittal_canal(image: np.ndarray, seed_rc, *, pixel_spacing_mm, body_offset_mm: float = 17.0,
                           spacing_mm: float = 0.25) -> Segmentation:
    """AP width of the CSF column at a disc on a sagittal T2 slice, and at the vertebral bodies above and below.

    Widths are read along image columns (antero-posterior on a sagittal
    slice) over +-1 mm of rows; ``width_ratio`` is the width at the disc over
    the mean of the widths ``body_offset_mm`` above and below (a ratio inside
    the patient).
    """
    dr = float(pixel_spacing_mm[0])
    w0, mask, origin = _column_width(image, seed_rc, pixel_spacing_mm, spacing_mm, 4.0)
    off = body_offset_mm / dr
    wa, _, _ = _column_width(image, (seed_rc[0] - off, seed_rc[1]), pixel_spacing_mm, spacing_mm, 8.0)
    wb, _, _ = _column_width(image, (seed_rc[0] + off, seed_rc[1]), pixel_spacing_mm, spacing_mm, 8.0)
    ref = np.nanmean([wa, wb]) if np.isfinite([wa, wb]).any() else NAN
    meas = {"ap_width_mm": w0, "ap_width_above_mm": wa, "ap_width_below_mm": wb,
            "width_ratio": float(w0 / ref) if np.isfinite(w0) and np.isfinite(ref) and ref > 0 else NAN}
    if not np.isfinite(w0):
        return Segmentation(mask, meas, FAILED, spacing_mm, origin, ["no CSF column at the seed"])
    return Segmentation(mask, meas, FOUND if np.isfinite(ref) else WEAK, spacing_mm, origin)
