"""Intensity and texture on a fixed-mm crop (scikit-image GLCM, LBP, HOG)."""

from __future__ import annotations

import numpy as np
from skimage.feature import graycomatrix, graycoprops, hog, local_binary_pattern

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
    n = x.shape[0]
    c = (n - 1) / 2
    yy, xx = np.indices(x.shape)
    centre = np.hypot(yy - c, xx - c) * ROI_SPACING_MM <= 2.0
    p10, p50, p90 = np.percentile(x, [10, 50, 90])
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
