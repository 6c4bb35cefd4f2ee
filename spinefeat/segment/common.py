"""Shared pieces of the segmenters: fixed-mm crops and the result type."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..fastnp import median, percentile

FOUND, WEAK, FAILED = "found", "weak", "failed"


@dataclass
class Segmentation:
    """A segmenter's answer.

    Attributes
    ----------
    mask : ndarray of bool
        On the resampled crop (``spacing_mm`` per pixel, seed at the centre).
    measurements : dict
        Names carry their unit (``area_mm2``, ``ap_diameter_mm`` ...); NaN when failed.
    quality : str
        ``found``, ``weak`` or ``failed``.
    spacing_mm : float
        Pixel size of ``mask``.
    origin_rc : tuple
        Position of crop pixel (0, 0) in the input image (row, col, input pixels).
    """

    mask: np.ndarray
    measurements: dict
    quality: str
    spacing_mm: float
    origin_rc: tuple[float, float] = (0.0, 0.0)
    notes: list[str] = field(default_factory=list)


def crop_mm(image: np.ndarray, centre_rc, *, pixel_spacing_mm, size_mm: float, spacing_mm: float) -> tuple[np.ndarray, tuple[float, float]]:
    """A square crop of ``size_mm`` around ``centre_rc`` resampled to ``spacing_mm`` pixels.

    Outside the image is filled with the image minimum. Returns the crop and
    the input-pixel (row, col) of crop pixel (0, 0).
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    dr, dc = (float(v) for v in pixel_spacing_mm)
    n = int(round(size_mm / spacing_mm))
    half = (n - 1) / 2.0
    r0 = float(centre_rc[0]) - half * spacing_mm / dr
    c0 = float(centre_rc[1]) - half * spacing_mm / dc
    # Affine map from crop pixel to input pixel (x = col, y = row).
    m = np.array([[spacing_mm / dc, 0, c0], [0, spacing_mm / dr, r0]], dtype=np.float64)
    fill = float(np.min(image)) if image.size else 0.0
    crop = cv2.warpAffine(image, m, (n, n), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    return crop, (r0, c0)


def blank_reason(crop: np.ndarray) -> str | None:
    """Why a crop cannot be segmented (blank or saturated), or None."""
    return usable_normalised(crop)[0]


def usable_normalised(crop: np.ndarray, hi_pct: float | None = None) -> tuple[str | None, np.ndarray | None]:
    """:func:`blank_reason` of a crop and, when it is usable and ``hi_pct`` is given, ``normalise(crop,
    hi_pct=hi_pct)``, from one percentile pass: np.percentile gives each of several percentiles exactly the
    value it gives alone, and both scalings run through the same :func:`_scaled` with those values, so the
    saturation test's float32 comparison and the normalised crop are those of the separate calls."""
    if np.ptp(crop) < 1e-6:
        return "blank crop", None
    lo, p99, *top = percentile(crop, [1.0, 99.0] if hi_pct is None else [1.0, 99.0, hi_pct])
    if (_scaled(crop, lo, p99) > 0.95).mean() > 0.6:
        return "saturated crop", None
    return None, _scaled(crop, lo, top[0]) if top else None


def open_crop(image: np.ndarray, seed_rc, *, pixel_spacing_mm, size_mm: float, spacing_mm: float,
              keys, hi_pct: float | None = None) -> tuple[np.ndarray, tuple[float, float], "Segmentation | None"]:
    """The fixed-mm crop around a seed, its origin, and a ``failed`` result (NaN ``keys``) when it is unusable.

    With ``hi_pct`` the crop comes back normalised (``normalise(crop, hi_pct=hi_pct)``, see
    :func:`usable_normalised`)."""
    crop, origin = crop_mm(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, size_mm=size_mm, spacing_mm=spacing_mm)
    why, x = usable_normalised(crop, hi_pct)
    if why is None:
        return crop if x is None else x, origin, None
    return crop, origin, Segmentation(np.zeros(crop.shape, bool), {k: float("nan") for k in keys}, FAILED,
                                      spacing_mm, origin, [why])


def finish(mask, meas, spacing_mm, origin, *, min_area_mm2: float, border_is_weak: bool = True) -> Segmentation:
    """``found``, or ``weak`` when the mask is tiny or (where that matters) reaches the crop border."""
    touches = bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
    weak = (touches and border_is_weak) or meas.get("area_mm2", 1e9) < min_area_mm2
    seg = Segmentation(mask, meas, WEAK if weak else FOUND, spacing_mm, origin)
    if touches:
        seg.notes.append("mask reaches the crop border")
    return seg


def normalise(img: np.ndarray, *, lo_pct: float = 1.0, hi_pct: float = 99.0) -> np.ndarray:
    """Percentile scaling to [0, 1] (per crop or per series, the caller chooses the reference)."""
    lo, hi = percentile(img, [lo_pct, hi_pct])
    return _scaled(img, lo, hi)


def _scaled(img: np.ndarray, lo, hi) -> np.ndarray:
    if hi - lo < 1e-6:
        return np.zeros_like(img, dtype=np.float32)
    return np.clip((img - lo) / (hi - lo), 0, 1).astype(np.float32)


def disk(radius_px: int) -> np.ndarray:
    r = max(int(radius_px), 1)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy ** 2 + xx ** 2) <= r ** 2


def dilate(mask: np.ndarray, footprint: np.ndarray | None = None, iterations: int = 1) -> np.ndarray:
    """:func:`scipy.ndimage.binary_dilation` of a 2-D mask by a symmetric footprint (default the 3 x 3 cross),
    outside the image counting as False, with OpenCV's morphology (the same pixels, several times faster)."""
    return _morphology(cv2.dilate, mask, footprint, iterations)


def erode(mask: np.ndarray, footprint: np.ndarray | None = None, iterations: int = 1) -> np.ndarray:
    """:func:`scipy.ndimage.binary_erosion` of a 2-D mask by a symmetric footprint, outside counting as False
    (so a mask touching the border is eroded from it, as scipy's default ``border_value=0`` does)."""
    return _morphology(cv2.erode, mask, footprint, iterations)


def _morphology(op, mask: np.ndarray, footprint: np.ndarray | None, iterations: int) -> np.ndarray:
    kernel = _CROSS if footprint is None else np.ascontiguousarray(footprint, np.uint8)
    out = op(np.ascontiguousarray(mask, bool).view(np.uint8), kernel, iterations=iterations,
             borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.view(bool)


def row_opening(x: np.ndarray, width_px: int) -> np.ndarray:
    """:func:`scipy.ndimage.grey_opening` of an image by ``width_px`` pixels along its rows
    (``size=(1, width_px)``) with OpenCV's morphology: the same pixels (a minimum then a maximum over the
    same windows, scipy's shift of an even window's maximum by one included), several times faster."""
    k, a = np.ones((1, width_px), np.uint8), width_px // 2
    low = cv2.erode(np.ascontiguousarray(x), k, anchor=(a, 0))
    return cv2.dilate(low, k, anchor=(a - 1 + width_px % 2, 0))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """:func:`scipy.ndimage.binary_fill_holes` of a 2-D mask (background reaching the border through 4-connected
    steps stays; everything else is filled) by one OpenCV flood fill from a frame around the image."""
    h, w = mask.shape
    img = np.zeros((h + 2, w + 2), np.uint8)
    img[1:-1, 1:-1] = mask
    cv2.floodFill(img, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2, flags=4)
    return img[1:-1, 1:-1] != 2


_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)


def bright_region(x: np.ndarray, *, spacing_mm: float, input_px_mm: float, search_mm: float = 4.0,
                  strict: float = 0.85, fill: bool = True, close_mm: float = 0.75,
                  min_level: float = 0.05, join_mm: float = 0.0, join_within_mm: float = 10.0) -> tuple[np.ndarray, dict]:
    """The bright structure nearest the centre of a normalised, fixed-mm crop.

    1. ``hi`` = the 95th percentile within ``search_mm`` of the centre (the
       structure's own level);
    2. a strict threshold ``strict * hi`` separates the structure from
       moderately bright neighbours (epidural fat next to CSF, marrow next to
       foraminal fat); the component nearest the centre is kept, with (when
       ``join_mm > 0``) every other strict component within ``join_mm`` of it,
       repeatedly, as long as it comes within ``join_within_mm`` of the centre
       (CSF split into pieces by clumped rootlets is one sac);
    3. its edge is moved to the half-maximum between ``hi`` and its
       surroundings, within one input pixel of the strict mask, which removes
       the bias a high threshold puts on blurred edges;
    4. holes (rootlets, the nerve root) are filled.

    Returns the mask (empty when nothing within ``search_mm`` reaches
    ``min_level`` of the crop's scale, or nothing bright is near the centre) and
    ``{"hi", "lo", "threshold", "bright"}`` where ``bright`` is the unfilled
    above-threshold mask.
    """
    from scipy import ndimage as ndi

    dist_mm = centre_distance_mm(x.shape, spacing_mm)
    near = dist_mm <= search_mm
    info = {"hi": float("nan"), "lo": float("nan"), "threshold": float("nan"), "bright": np.zeros(x.shape, bool)}
    hi = float(percentile(x[near], 95))
    info["hi"] = hi
    if hi <= min_level:
        return np.zeros(x.shape, bool), info
    core = x >= strict * hi
    lab, n_lab = ndi.label(core)
    if n_lab == 0:
        return np.zeros(x.shape, bool), info
    # The component with a pixel closest to the centre.
    d = np.where(lab > 0, dist_mm, np.inf)
    best = lab.flat[int(np.argmin(d))]
    if d.min() > search_mm:
        return np.zeros(x.shape, bool), info
    comp = lab == best
    if join_mm > 0:
        # Pieces closer than join_mm touch once each is grown by half of it: one dilation, one labelling.
        allowed = members(lab, lab[(lab > 0) & (dist_mm <= join_within_mm)]) | comp
        near_lab, _ = ndi.label(dilate(allowed, disk(int(round(0.5 * join_mm / spacing_mm)))))
        comp = allowed & (near_lab == near_lab[comp].max())
    px = max(1, int(np.ceil(input_px_mm / spacing_mm)))
    close_px = int(round(close_mm / spacing_mm)) if close_mm > 0 else 0
    # Everything below stays within 2 px (the ring) and 2 close_px (the closing) of the component: it runs on
    # that window of the crop, with the same result as on the whole crop (a window edge inside the crop is
    # further away than any dilation reaches; at the crop's edge the window ends where the crop does).
    win = _window(comp, 2 * px + 2 * close_px + 3)
    xw, cw = x[win], comp[win]
    grown = dilate(cw, disk(px))
    ring = dilate(grown, disk(px)) & ~grown
    lo = float(median(xw[ring])) if ring.any() else 0.0
    thr = 0.5 * (hi + lo)
    bright = grown & (xw >= thr) | cw
    lab2, _ = ndi.label(bright)
    bright = members(lab2, lab2[cw])
    mask = bright
    if close_mm > 0:
        mask = erode(dilate(np.pad(mask, px + 2), disk(close_px)), disk(close_px))[px + 2:-px - 2, px + 2:-px - 2]
    if fill:
        mask = fill_holes(mask)
    info.update(lo=lo, threshold=thr, bright=_placed(bright, win, x.shape))
    return _placed(mask, win, x.shape), info


@functools.lru_cache(maxsize=32)
def centre_distance_mm(shape: tuple[int, int], spacing_mm: float) -> np.ndarray:
    """Distance (mm) of each pixel of a square crop from its centre, (n - 1) / 2 on both axes (read-only: the
    segmenters, searches and profiles ask for the same grid on every call, so it is made once per shape).
    """
    c = (shape[0] - 1) / 2
    yy, xx = np.indices(shape)
    dist = np.hypot(yy - c, xx - c) * spacing_mm
    dist.flags.writeable = False
    return dist


def convex_hull(mask: np.ndarray) -> np.ndarray:
    """:func:`skimage.morphology.convex_hull_image` of a 2-D mask, the same pixels, several times faster.

    As scikit-image does, the hull is that of the midpoints of the pixels' edges (each pixel (r, c) stands for
    (r +- 0.5, c) and (r, c +- 0.5)), and a pixel is in it when its centre lies inside or on the hull. Only the
    leftmost and rightmost pixel of each row can add a hull vertex (any pixel between them lies between their
    points); the hull is OpenCV's of those points, and each row of the mask's bounding box (which holds every
    centre in the hull) keeps the columns between the bounds its edges' half-planes set. Every coordinate is a
    multiple of 1/2 and small, so both steps are exact in floating point (a bound that is a whole column is
    computed exactly; one that is not lies at least 1/(8 * rows) from one), where scikit-image runs qhull and
    a point-in-polygon test of every pixel of the image. An empty mask gives an empty hull.
    """
    out = np.zeros(mask.shape, bool)
    if not mask.any():
        return out
    win = _window(mask, 0)
    m = mask[win]
    rows = np.flatnonzero(m.any(axis=1))
    ends = np.empty((2 * len(rows), 2), np.float32)             # (row, col) of each row's first and last pixel
    ends[:, 0] = np.tile(rows, 2)
    ends[:len(rows), 1] = m[rows].argmax(axis=1)
    ends[len(rows):, 1] = m.shape[1] - 1 - m[rows, ::-1].argmax(axis=1)
    hull = cv2.convexHull((ends[:, None, :] + _EDGE_MIDPOINTS).reshape(-1, 2)).reshape(-1, 2).astype(float)
    d = np.concatenate((hull[1:], hull[:1])) - hull                 # np.roll(hull, -1, axis=0) - hull
    sign = 1.0 if float(np.sum(hull[:, 0] * d[:, 1] - d[:, 0] * hull[:, 1])) > 0 else -1.0   # twice the area's
    hr, hc, dr, dc = hull[:, 0], hull[:, 1], d[:, 0], d[:, 1]
    # Inside or on edge k: sign * (dr_k * (col - hc_k) - dc_k * (row - hr_k)) >= 0.
    y = np.arange(m.shape[0], dtype=float)[:, None]
    slanted = dr != 0
    bound = hc[slanted] + dc[slanted] * (y - hr[slanted]) / dr[slanted]
    below = sign * dr[slanted] > 0                                   # col >= bound, else col <= bound
    lo = np.ceil(np.where(below, bound, -np.inf).max(axis=1, initial=-np.inf))
    hi = np.floor(np.where(below, np.inf, bound).min(axis=1, initial=np.inf))
    flat = ~slanted
    ok = (-sign * dc[flat] * (y - hr[flat]) >= 0).all(axis=1)
    cols = np.arange(m.shape[1])
    out[win] = ok[:, None] & (cols >= lo[:, None]) & (cols <= hi[:, None])
    return out


#: A pixel's edge midpoints relative to its centre (row, col), as scikit-image's convex hull takes them.
_EDGE_MIDPOINTS = np.array([[-0.5, 0], [0.5, 0], [0, -0.5], [0, 0.5]], np.float32)


def members(lab: np.ndarray, ids) -> np.ndarray:
    """``np.isin(lab, ids)`` for a label image (non-negative integers, as :func:`scipy.ndimage.label` gives) by a
    lookup table over its labels, without isin's sorting."""
    lut = np.zeros(int(lab.max()) + 1, bool)
    ids = np.asarray(ids, dtype=np.intp).ravel()
    lut[ids[(ids >= 0) & (ids < lut.size)]] = True
    return lut[lab]


def _window(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The bounding box of ``mask`` grown by ``margin`` pixels on each side, within the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (slice(max(0, rows[0] - margin), rows[-1] + margin + 1),
            slice(max(0, cols[0] - margin), cols[-1] + margin + 1))


def _placed(part: np.ndarray, win: tuple[slice, slice], shape) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[win] = part
    return out


def extent_mm(mask: np.ndarray, spacing_mm: float) -> tuple[float, float]:
    """(rows, cols) extent of a mask in mm."""
    if not mask.any():
        return float("nan"), float("nan")
    rr, cc = np.nonzero(mask)
    return float(rr.max() - rr.min() + 1) * spacing_mm, float(cc.max() - cc.min() + 1) * spacing_mm


def run_through(mask: np.ndarray, r: int, c: int, axis: int) -> int:
    """Length (pixels) of the run of True through (r, c) along ``axis`` (0 = rows, 1 = cols)."""
    line = mask[:, c] if axis == 0 else mask[r, :]
    i = r if axis == 0 else c
    if not line[i]:
        return 0
    lo = i
    while lo > 0 and line[lo - 1]:
        lo -= 1
    hi = i
    while hi < len(line) - 1 and line[hi + 1]:
        hi += 1
    return hi - lo + 1


#: Patient (LPS) directions the sagittal regions are read in: rows towards the feet, columns towards the back.
DOWN_LPS = (0.0, 0.0, -1.0)
BACK_LPS = (0.0, 1.0, 0.0)
#: Towards the patient's left (the axial view's columns: rows towards the back).
LEFT_LPS = (1.0, 0.0, 0.0)


@dataclass(frozen=True)
class View:
    """How to turn a crop so its rows run along one patient direction and its columns along another.

    Read from ImageOrientationPatient (never assumed from the image axes): ``transpose`` first, then
    ``flip_rows`` / ``flip_cols``. :meth:`apply` turns a crop into the view, :meth:`undo` turns a mask back.
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @classmethod
    def from_iop(cls, iop, *, rows_along=DOWN_LPS, cols_along=BACK_LPS) -> "View":
        from ..geometry import orientation_axes

        f_r, f_c, _ = orientation_axes(iop)        # directions of increasing column and of increasing row
        rows_along, cols_along = np.asarray(rows_along, float), np.asarray(cols_along, float)
        transpose = abs(f_r @ rows_along) > abs(f_c @ rows_along)
        row_dir, col_dir = (f_r, f_c) if transpose else (f_c, f_r)
        return cls(bool(transpose), bool(row_dir @ rows_along < 0), bool(col_dir @ cols_along < 0))

    def apply(self, a: np.ndarray) -> np.ndarray:
        a = a.T if self.transpose else a
        a = a[::-1] if self.flip_rows else a
        return np.ascontiguousarray(a[:, ::-1] if self.flip_cols else a)

    def undo(self, a: np.ndarray) -> np.ndarray:
        a = a[:, ::-1] if self.flip_cols else a
        a = a[::-1] if self.flip_rows else a
        return np.ascontiguousarray(a.T if self.transpose else a)


def axis_lengths_mm(mask: np.ndarray, spacing_mm: float) -> tuple[float, float, float]:
    """Orientation-invariant diameters of a mask: (largest Feret, major axis, minor axis) in mm.

    The values of scikit-image's regionprops (``feret_diameter_max``, ``axis_major_length``,
    ``axis_minor_length`` of the mask as one region), computed without its per-region machinery: the
    Feret diameter exactly as regionprops does, as the largest distance between the points where the edge of
    the mask's convex hull crosses between pixel centres (the points regionprops' contour tracing at level
    0.5 visits, :func:`_hull_edge_points`); the axes are those of the ellipse with the same second moments
    (4 square roots of the eigenvalues of their covariance), equal to regionprops' up to float rounding.
    """
    from scipy.spatial.distance import pdist

    if not mask.any():
        return float("nan"), float("nan"), float("nan")
    image = mask[_window(mask, 0)]
    feret = float(np.sqrt(np.max(pdist(_hull_edge_points(convex_hull(image)), "sqeuclidean"))))
    rr, cc = np.nonzero(image)
    dr, dc = rr - rr.mean(), cc - cc.mean()
    a, d, b = float(dr @ dr) / rr.size, float(dc @ dc) / rr.size, float(dr @ dc) / rr.size
    half_sum, root = 0.5 * (a + d), float(np.hypot(0.5 * (a - d), b))
    major, minor = 4 * np.sqrt(max(half_sum + root, 0.0)), 4 * np.sqrt(max(half_sum - root, 0.0))
    return feret * spacing_mm, float(major) * spacing_mm, float(minor) * spacing_mm


def _hull_edge_points(hull: np.ndarray) -> np.ndarray:
    """(row, col) of the midpoints of the pixel-centre links that cross the edge of a binary image.

    These are the vertices of its iso-line at level 0.5 (:func:`skimage.measure.find_contours` on the
    image padded by 2 pixels, in the coordinates of that padding, which is how regionprops traces it for
    ``feret_diameter_max``): on a 0/1 image each crossing lies exactly halfway along its link. Only the set of
    points matters for a largest distance, not the order in which a contour visits them.
    """
    padded = np.pad(hull, 2)
    rr, cc = np.nonzero(padded[:, 1:] != padded[:, :-1])         # across columns: (r, c + 0.5)
    pts_c = np.column_stack((rr.astype(float), cc + 0.5))
    rr, cc = np.nonzero(padded[1:] != padded[:-1])                # across rows: (r + 0.5, c)
    return np.vstack((pts_c, np.column_stack((rr + 0.5, cc.astype(float)))))


def extent_along_mm(mask: np.ndarray, spacing_mm: float, direction_rc) -> float:
    """Extent of a mask along a unit (row, col) direction, in mm (a Feret diameter at that angle)."""
    if not mask.any():
        return float("nan")
    rr, cc = np.nonzero(mask)
    t = rr * direction_rc[0] + cc * direction_rc[1]
    # +1 pixel: the extent of pixel areas, not of their centres (as extent_mm).
    return float(t.max() - t.min() + 1) * spacing_mm


def run_along_mm(mask: np.ndarray, r: float, c: float, direction_rc, spacing_mm: float) -> float:
    """Length (mm) of the run of True through (r, c) along a unit (row, col) direction, both ways."""
    total = 0
    for sign in (1, -1):
        k = 1 if sign == 1 else 0      # (r, c) itself is counted once, on the forward walk
        while True:
            i = int(round(r + sign * k * direction_rc[0]))
            j = int(round(c + sign * k * direction_rc[1]))
            if not (0 <= i < mask.shape[0] and 0 <= j < mask.shape[1]) or not mask[i, j]:
                break
            total += 1
            k += 1
    return total * spacing_mm


def profile(x: np.ndarray, centre_rc, direction_rc, offsets_mm, *, spacing_mm: float,
            half_width_mm: float = 1.0) -> np.ndarray:
    """Mean of ``x`` in small squares (side ``2 * half_width_mm``) at ``offsets_mm`` along a direction from a centre.

    NaN where a square leaves the crop. Gives intensity profiles across a structure in anatomical
    directions, whatever the image orientation.
    """
    h = max(int(round(half_width_mm / spacing_mm)), 0)
    out = []
    for off in offsets_mm:
        i = int(round(centre_rc[0] + off / spacing_mm * direction_rc[0]))
        j = int(round(centre_rc[1] + off / spacing_mm * direction_rc[1]))
        if i - h < 0 or j - h < 0 or i + h >= x.shape[0] or j + h >= x.shape[1]:
            out.append(float("nan"))
        else:
            out.append(float(x[i - h:i + h + 1, j - h:j + h + 1].mean()))
    return np.asarray(out)
