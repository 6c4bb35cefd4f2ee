"""Intensity profiles of the axial T2 regions: the lateral recess and the dural sac, in anatomical directions.

On real T2 FSE the grade shows as much in what fills the space as in its outline: a patent recess
holds bright CSF or fat around the dark root, a stenosed one disc, ligament and bone; a stenosed sac
loses its CSF to clumped rootlets and grey tissue. These features sample that directly, without a
segmentation: means over the series' bright reference (its 99.5th percentile: CSF and fat on T2) in
small squares along the patient's front-back and medial-lateral axes through the point, the
directions read from ImageOrientationPatient (:func:`spinefeat.geometry.axial_directions`).
"""

from __future__ import annotations

import numpy as np

from ..fastnp import percentile
from ..segment.common import Segmentation, centre_distance_mm, crop_mm, profile
from . import register

CROP_MM = 24.0
SPACING_MM = 0.25
#: Recess profile offsets (mm): medial (-) to lateral (+), and front (-) to back (+) of the point.
RECESS_LATERAL_MM = (-4.0, -2.0, 0.0, 2.0, 4.0)
RECESS_AP_MM = (-3.0, -1.5, 1.5, 3.0)
#: Sac profile offsets (mm) through its seed: front to back, right to left.
SAC_AP_MM = (-6.0, -3.0, 0.0, 3.0, 6.0)
SAC_LR_MM = (-8.0, -4.0, 0.0, 4.0, 8.0)


def _offset_name(mm: float) -> str:
    return (f"m{-mm:g}" if mm < 0 else f"{mm:g}").replace(".", "p") + "mm"


RECESS_NAMES = {
    "recess_profile_point": "mean within 1.5 mm of the point (the traversing root and what surrounds it)",
    "recess_profile_peak_3mm": "95th percentile within 3 mm of the point (the recess's brightest space)",
    **{f"recess_profile_lateral_{_offset_name(o)}": f"mean of a 2 mm square {abs(o):g} mm "
       f"{'lateral to' if o > 0 else ('medial to' if o < 0 else 'at')} the point" for o in RECESS_LATERAL_MM},
    **{f"recess_profile_ap_{_offset_name(o)}": f"mean of a 2 mm square {abs(o):g} mm "
       f"{'behind' if o > 0 else 'in front of'} the point" for o in RECESS_AP_MM},
}
SAC_NAMES = {
    "canal_ax_profile_peak_4mm": "95th percentile within 4 mm of the sac seed (the CSF level)",
    "canal_ax_profile_sac_mean": "mean inside the segmented sac (NaN when none was found)",
    "canal_ax_profile_bright_share_6mm": "share of the 6 mm disc around the seed above half the series' reference",
    **{f"canal_ax_profile_ap_{_offset_name(o)}": f"mean of a 3 mm square {abs(o):g} mm "
       f"{'behind' if o > 0 else ('in front of' if o < 0 else 'at')} the sac seed" for o in SAC_AP_MM},
    **{f"canal_ax_profile_lr_{_offset_name(o)}": f"mean of a 3 mm square {abs(o):g} mm "
       f"{'left of' if o > 0 else ('right of' if o < 0 else 'at')} the sac seed" for o in SAC_LR_MM},
}
for _n, _d in {**RECESS_NAMES, **SAC_NAMES}.items():
    register(_n, f"{_d}; over the series' 99.5th percentile, axial T2, directions from ImageOrientationPatient",
             "1")


def _scaled_crop(image, seed_rc, pixel_spacing_mm, series_high, size_mm=CROP_MM):
    crop, _ = crop_mm(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, size_mm=size_mm, spacing_mm=SPACING_MM)
    x = np.clip(crop / series_high, 0, 1.5)
    c = (x.shape[0] - 1) / 2
    return x, c, centre_distance_mm(x.shape, SPACING_MM)


def recess_profile(image: np.ndarray, seed_rc, *, pixel_spacing_mm, series_high: float, posterior_rc,
                   lateral_rc) -> dict[str, float]:
    """Profile features of one recess (see the module doc); ``lateral_rc`` points away from the midline.

    NaN when the series' reference is unusable.
    """
    if not np.isfinite(series_high) or series_high <= 0:
        return {n: float("nan") for n in RECESS_NAMES}
    x, c, r = _scaled_crop(image, seed_rc, pixel_spacing_mm, series_high)
    out = {"recess_profile_point": float(x[r <= 1.5].mean()),
           "recess_profile_peak_3mm": float(percentile(x[r <= 3.0], 95))}
    lat = profile(x, (c, c), lateral_rc, RECESS_LATERAL_MM, spacing_mm=SPACING_MM)
    ap = profile(x, (c, c), posterior_rc, RECESS_AP_MM, spacing_mm=SPACING_MM)
    out.update({f"recess_profile_lateral_{_offset_name(o)}": float(v) for o, v in zip(RECESS_LATERAL_MM, lat)})
    out.update({f"recess_profile_ap_{_offset_name(o)}": float(v) for o, v in zip(RECESS_AP_MM, ap)})
    return out


def sac_profile(image: np.ndarray, seed_rc, seg: Segmentation, *, pixel_spacing_mm, series_high: float,
                posterior_rc, left_rc) -> dict[str, float]:
    """Profile features of the dural sac around its seed, and its mean inside ``seg``'s mask."""
    if not np.isfinite(series_high) or series_high <= 0:
        return {n: float("nan") for n in SAC_NAMES}
    x, c, r = _scaled_crop(image, seed_rc, pixel_spacing_mm, series_high)
    out = {"canal_ax_profile_peak_4mm": float(percentile(x[r <= 4.0], 95)),
           "canal_ax_profile_bright_share_6mm": float((x[r <= 6.0] >= 0.5).mean()),
           "canal_ax_profile_sac_mean": float("nan")}
    if seg.mask.any():
        # The mask's own crop: same seed, size and spacing as the segmenter's.
        own, _ = crop_mm(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm,
                         size_mm=seg.mask.shape[0] * seg.spacing_mm, spacing_mm=seg.spacing_mm)
        out["canal_ax_profile_sac_mean"] = float(np.clip(own[seg.mask] / series_high, 0, 1.5).mean())
    ap = profile(x, (c, c), posterior_rc, SAC_AP_MM, spacing_mm=SPACING_MM, half_width_mm=1.5)
    lr = profile(x, (c, c), left_rc, SAC_LR_MM, spacing_mm=SPACING_MM, half_width_mm=1.5)
    out.update({f"canal_ax_profile_ap_{_offset_name(o)}": float(v) for o, v in zip(SAC_AP_MM, ap)})
    out.update({f"canal_ax_profile_lr_{_offset_name(o)}": float(v) for o, v in zip(SAC_LR_MM, lr)})
    return out
