"""Intensity and texture on a fixed-mm crop (scikit-image GLCM, LBP, HOG)."""

from __future__ import annotations

import numpy as np
from skimage.feature import graycomatrix, graycoprops, hog, local_binary_pattern

from ..fastnp import percentile
from ..segment.common import centre_distance_mm, crop_mm
from . import register

ROI_MM = 24.0
ROI_SPACING_MM = 0.5
LEVELS = 32

NAMES = {
    "roi_intensity_p10": "10th percentile of the crop, over the series' 99.5th percentile",
    "roi_intensity_p50": "median of the crop, over the series' 99.5th percentile",
    "roi_intensity_p90": "90th percentile of the crop, over the series' 99.5th percentile",
    "roi_intensity_centre": "mean of the central 4 mm disc, over the series' 99.5th percentile",
    "roi_intensity_centre_to_p90": "central mean over the crop's 90th percentile",
    "roi_texture_glcm_contrast": "GLCM contrast (32 levels, distances 1-2 px, 4 angles)",
    "roi_texture_glcm_homogeneity": "GLCM homogeneity",
    "roi_texture_glcm_energy": "GLCM energy",
    "roi_texture_glcm_correlation": "GLCM correlation",
    "roi_texture_lbp_entropy": "entropy of the uniform LBP histogram (P=8, R=1)",
    "roi_texture_lbp_flat": "share of flat (uniform, all-equal) LBP codes",
    "roi_texture_hog_mean": "mean of the HOG descriptor (8 px cells)",
    "roi_texture_hog_std": "standard deviation of the HOG descriptor",
}
for _n, _d in NAMES.items():
    register(_n, f"{_d}; {ROI_MM:g} mm crop at {ROI_SPACING_MM} mm around the point", "1")


def roi_features(crop: np.ndarray, *, series_high: float) -> dict[str, float]:
    """Intensity and texture of a fixed-mm crop already resampled to :data:`ROI_SPACING_MM`."""
    if crop.size == 0 or not np.isfinite(series_high) or series_high <= 0:
        return {n: float("nan") for n in NAMES}
    x = np.clip(crop / series_high, 0, 1.5).astype(np.float32)
    centre = centre_distance_mm(x.shape, ROI_SPACING_MM) <= 2.0
    p10, p50, p90 = percentile(x, [10, 50, 90])
    q = np.clip(x / 1.5 * LEVELS, 0, LEVELS - 1).astype(np.uint8)
    glcm = graycomatrix(q, distances=[1, 2], angles=[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=LEVELS,
                        symmetric=True, normed=True)
    lbp = local_binary_pattern(q, P=8, R=1, method="uniform")
    hist = np.bincount(lbp.astype(int).ravel(), minlength=10) / lbp.size
    nz = hist[hist > 0]
    h = hog(x, orientations=8, pixels_per_cell=(8, 8), cells_per_block=(1, 1), feature_vector=True)
    cm = float(x[centre].mean())
    return {
        "roi_intensity_p10": float(p10), "roi_intensity_p50": float(p50), "roi_intensity_p90": float(p90),
        "roi_intensity_centre": cm, "roi_intensity_centre_to_p90": cm / float(p90) if p90 > 0 else float("nan"),
        "roi_texture_glcm_contrast": float(graycoprops(glcm, "contrast").mean()),
        "roi_texture_glcm_homogeneity": float(graycoprops(glcm, "homogeneity").mean()),
        "roi_texture_glcm_energy": float(graycoprops(glcm, "energy").mean()),
        "roi_texture_glcm_correlation": float(np.nan_to_num(graycoprops(glcm, "correlation")).mean()),
        "roi_texture_lbp_entropy": float(-(nz * np.log(nz)).sum()),
        "roi_texture_lbp_flat": float(hist[8]),
        "roi_texture_hog_mean": float(h.mean()), "roi_texture_hog_std": float(h.std()),
    }


# ---------------------------------------------------------------- the foramen's appearance along the spine

#: The window turned to the spine's axis for the foramen's HOG: side (mm), cell side (mm), orientation bins.
HOG_WINDOW_MM, HOG_CELL_MM, HOG_ORIENTATIONS = 16.0, 4.0, 6
_HOG_CELLS = int(HOG_WINDOW_MM / HOG_CELL_MM)
HOG_NAMES = {
    f"foramen_hog_r{r}c{c}_o{k}": (
        f"HOG of the {HOG_WINDOW_MM:g} mm window around the point turned to the spine's axis "
        f"({HOG_CELL_MM:g} mm cells, each L2-Hys normalised): cell row {r} (0 = cranial) and column {c} "
        f"(0 = anterior), gradients {k * 180 // HOG_ORIENTATIONS}-{(k + 1) * 180 // HOG_ORIENTATIONS} deg "
        f"from the spine's perpendicular")
    for r in range(_HOG_CELLS) for c in range(_HOG_CELLS) for k in range(HOG_ORIENTATIONS)}
for _n, _d in HOG_NAMES.items():
    register(_n, f"{_d}; resampled to {ROI_SPACING_MM} mm, over the series' 99.5th percentile; sagittal T1, "
                 "directions from ImageOrientationPatient and the labelled levels", "1")


def spine_axes_rc(level_index, rows, cols, *, pixel_spacing_mm) -> list[tuple[float, float] | None]:
    """The spine's direction towards the feet at each point of one side of one sagittal series.

    ``level_index`` (0 = L1/L2 .. 4 = L5/S1), ``rows``, ``cols``: the points (image pixels). At each point,
    the unit (row, col) direction in mm (pixel spacing per axis) from the level above to the level below
    (the point itself at either end of the chain); None where the side has no other level. Levels missing
    between two points are bridged.
    """
    dr, dc = (float(v) for v in pixel_spacing_mm)
    li = np.asarray(level_index, float)
    pos = np.c_[np.asarray(rows, float) * dr, np.asarray(cols, float) * dc]
    out: list[tuple[float, float] | None] = []
    for i in range(len(li)):
        above, below = li < li[i], li > li[i]
        a = pos[np.flatnonzero(above)[np.argmax(li[above])]] if above.any() else pos[i]
        b = pos[np.flatnonzero(below)[np.argmin(li[below])]] if below.any() else pos[i]
        d = b - a
        n = float(np.hypot(*d))
        out.append((float(d[0] / n), float(d[1] / n)) if n > 0 else None)
    return out


def aligned_window(crop: np.ndarray, *, series_high: float, view, axis_rc=None, size_mm: float,
                   spacing_mm: float = ROI_SPACING_MM) -> np.ndarray:
    """The square ``size_mm`` window around the centre of ``crop``, turned to the spine's axis when one is given.

    ``crop``: a crop at :data:`ROI_SPACING_MM` around the point (image axes), large enough for the window
    turned by the axis (beyond it the crop is mirrored); ``view`` (:class:`spinefeat.segment.common.View`)
    turns it to the region's view (the foramen's: rows to the feet, columns to the back); ``axis_rc``: the
    spine's direction towards the feet in the image's (row, col) (:func:`spine_axes_rc`; None: the view's own
    rows). Rows of the window run along the axis (0 = cranial), columns along its perpendicular towards the
    view's columns (0 = anterior), sampled at :data:`ROI_SPACING_MM` and averaged down to ``spacing_mm``;
    values over ``series_high``, clipped to 0-1.5.
    """
    import cv2

    x = view.apply(np.clip(crop / series_high, 0, 1.5).astype(np.float32))
    a = np.array([1.0, 0.0])
    if axis_rc is not None:
        v = np.array(axis_rc, float)
        v = v[::-1] if view.transpose else v                # the axis in the view's (row, col)
        v = v * [-1 if view.flip_rows else 1, -1 if view.flip_cols else 1]
        a = v / np.hypot(*v)
    b = np.array([-a[1], a[0]])                             # the perpendicular towards the back
    c = (x.shape[0] - 1) / 2
    n = int(round(size_mm / ROI_SPACING_MM))
    h = (n - 1) / 2
    # Window pixel (i along the axis, j along b) samples the view at c + (i - h) a + (j - h) b (x = col, y = row).
    m = np.array([[b[1], a[1], 0.0], [b[0], a[0], 0.0]])
    m[:, 2] = c - m[:, :2] @ [h, h]
    win = cv2.warpAffine(x, m, (n, n), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    k = int(round(size_mm / spacing_mm))
    return win if k == n else cv2.resize(win, (k, k), interpolation=cv2.INTER_AREA)


def aligned_hog(crop: np.ndarray, *, series_high: float, view, axis_rc=None) -> dict[str, float]:
    """HOG of the foramen's window turned to the spine's axis (see :data:`HOG_NAMES`, :func:`aligned_window`).

    ``crop``: the :data:`ROI_MM` crop at :data:`ROI_SPACING_MM` around the point. A normal and a narrowed
    keyhole differ in the edges around the root; turned to the spine and sampled in mm, the same cells look
    at the same anatomy in every series.
    """
    if crop.size == 0 or not np.isfinite(series_high) or series_high <= 0:
        return {n: float("nan") for n in HOG_NAMES}
    win = aligned_window(crop, series_high=series_high, view=view, axis_rc=axis_rc, size_mm=HOG_WINDOW_MM)
    cell = int(round(HOG_CELL_MM / ROI_SPACING_MM))
    v = hog(win, orientations=HOG_ORIENTATIONS, pixels_per_cell=(cell, cell), cells_per_block=(1, 1),
            feature_vector=True)
    return {name: float(val) for name, val in zip(HOG_NAMES, v)}


#: The windows read by the graders' fitted appearance stages (:data:`spinefeat.models.APPEARANCE`), per region:
#: (side mm, pixel mm) of each. The foramen's turned to the spine as its HOG's (rows to the feet, columns to the
#: back); the axial sac's in the axial view (rows to the back, columns to the patient's left); the lateral
#: recess's too, with its columns towards its own side (left recess: the patient's left; right: the right).
WINDOWS_MM = {"foramen": ((32.0, 2.0), (48.0, 3.0), (64.0, 4.0)), "canal_ax": ((32.0, 2.0),), "recess": ((32.0, 2.0),)}
_WINDOW_AXES = {"foramen": ("row 0 = cranial", "column 0 = anterior"),
                "canal_ax": ("row 0 = anterior", "column 0 = the patient's right"),
                "recess": ("row 0 = anterior", "column 0 = medial")}
WINDOW_NAMES = {region: {
    f"{region}_window_{size:g}mm_r{r:02d}c{c:02d}": (
        f"mean intensity of the {spacing:g} mm pixel at row {r} ({_WINDOW_AXES[region][0]}) and column {c} "
        f"({_WINDOW_AXES[region][1]}) of the {size:g} mm window around the point"
        f"{' turned to the spine' if region == 'foramen' else ''}, over the series' 99.5th percentile (clipped to "
        "1.5); read by the grader's appearance stage, not by its trees")
    for size, spacing in windows for r in range(int(round(size / spacing))) for c in range(int(round(size / spacing)))}
    for region, windows in WINDOWS_MM.items()}
for _names in WINDOW_NAMES.values():
    for _n, _d in _names.items():
        register(_n, f"{_d}; directions from ImageOrientationPatient (and the foramen's from the labelled levels)", "1")


def aligned_windows(region: str, image: np.ndarray, seed_rc, *, pixel_spacing_mm, series_high: float, view,
                    axis_rc=None) -> dict[str, float]:
    """The ``region``'s :data:`WINDOWS_MM` windows (:func:`aligned_window`, from a crop large enough to turn the
    largest at any angle) as its :data:`WINDOW_NAMES` columns."""
    names = WINDOW_NAMES[region]
    if not np.isfinite(series_high) or series_high <= 0:
        return {n: float("nan") for n in names}
    windows = WINDOWS_MM[region]
    crop, _ = crop_mm(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm,
                      size_mm=float(np.ceil(max(s for s, _ in windows) * np.sqrt(2))), spacing_mm=ROI_SPACING_MM)
    vals = [aligned_window(crop, series_high=series_high, view=view, axis_rc=axis_rc, size_mm=size,
                           spacing_mm=spacing).ravel() for size, spacing in windows]
    return {name: float(v) for name, v in zip(names, np.concatenate(vals))}
