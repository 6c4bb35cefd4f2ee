"""Intensity profiles around a point in anatomical directions: how much fat surrounds the foraminal root.

Lee's foraminal grade is read from the perineural fat lost around the root (up-down, front-back, all
four). These features sample that directly, without a segmentation: the mean intensity (over the
series' 99.5th percentile, its fat level on T1) in sectors of rings around the labelled point, in the
directions read from ImageOrientationPatient. A narrowed foramen is dark where a normal one is bright.
"""

from __future__ import annotations

import numpy as np

from ..fastnp import median, percentile
from ..segment.common import View, crop_mm
from . import register

PROFILE_MM = 24.0
PROFILE_SPACING_MM = 0.5
#: Ring bounds around the point (mm).
RINGS_MM = (0.0, 1.5, 3.0, 4.5, 6.0, 8.0)
#: Sector centres (degrees; 0 = front, 90 = up, in the view with rows to the feet and columns to the back).
SECTORS = {"front": 0, "up_front": 45, "up": 90, "up_back": 135, "back": 180, "down_back": 225, "down": 270,
           "down_front": 315}


def _ring_name(r0: float, r1: float) -> str:
    return f"{r0:g}_{r1:g}mm".replace(".", "p")


NAMES: dict[str, str] = {}
for _a, _b in zip(RINGS_MM[:-1], RINGS_MM[1:]):
    NAMES[f"foramen_profile_ring_{_ring_name(_a, _b)}"] = f"mean intensity {_a:g}-{_b:g} mm from the point"
    for _s in SECTORS if _a > 0 else ():      # the innermost disc has no directions
        NAMES[f"foramen_profile_{_s}_{_ring_name(_a, _b)}"] = (f"mean intensity {_a:g}-{_b:g} mm from the point, "
                                                                f"{_s.replace('_', '-')} sector (45 deg)")
NAMES.update({
    "foramen_profile_peak_6mm": "95th percentile within 6 mm of the point (the foraminal fat)",
    "foramen_profile_peak_to_local": "95th percentile within 6 mm over the median of the 24 mm crop",
    "foramen_profile_centre_to_peak": "mean within 1.5 mm (the root) over the 95th percentile within 6 mm",
    "foramen_profile_bright_sectors_3mm": "sectors (of 8) whose 1.5-4.5 mm mean reaches half the 6 mm peak",
    "foramen_profile_vertical_to_horizontal": "mean of the up and down 1.5-4.5 mm sectors over front and back",
})
for _n, _d in NAMES.items():
    register(_n, f"{_d}; over the series' 99.5th percentile unless a ratio; sagittal T1, directions from "
                 "ImageOrientationPatient", "1")


def foramen_profile(image: np.ndarray, seed_rc, *, pixel_spacing_mm, series_high: float, iop) -> dict[str, float]:
    """The profile features of one foramen (see the module doc); NaN when the series' level is unusable."""
    if not np.isfinite(series_high) or series_high <= 0:
        return {n: float("nan") for n in NAMES}
    crop, _ = crop_mm(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, size_mm=PROFILE_MM,
                      spacing_mm=PROFILE_SPACING_MM)
    x = View.from_iop(iop).apply(crop) / series_high
    n = x.shape[0]
    c = (n - 1) / 2
    yy, xx = np.indices(x.shape)
    dy, dx = yy - c, xx - c
    r = np.hypot(dy, dx) * PROFILE_SPACING_MM
    # Rows run to the feet and columns to the back: "up" is -row, "front" is -col.
    ang = np.degrees(np.arctan2(-dy, -dx)) % 360
    out: dict[str, float] = {}
    sector_of = {}
    for s, a in SECTORS.items():
        sector_of[s] = np.abs((ang - a + 180) % 360 - 180) <= 22.5
    for a, b in zip(RINGS_MM[:-1], RINGS_MM[1:]):
        ring = (r >= a) & (r < b) if a > 0 else r < b
        out[f"foramen_profile_ring_{_ring_name(a, b)}"] = float(x[ring].mean())
        for s, sec in sector_of.items() if a > 0 else ():
            out[f"foramen_profile_{s}_{_ring_name(a, b)}"] = float(x[ring & sec].mean())
    peak = float(percentile(x[r <= 6.0], 95))
    local = float(median(x))
    centre = float(x[r < 1.5].mean())
    near = (r >= 1.5) & (r < 4.5)
    sector_means = {s: float(x[near & sec].mean()) for s, sec in sector_of.items()}
    horiz = sector_means["front"] + sector_means["back"]
    out.update({
        "foramen_profile_peak_6mm": peak,
        "foramen_profile_peak_to_local": peak / local if local > 0 else float("nan"),
        "foramen_profile_centre_to_peak": centre / peak if peak > 0 else float("nan"),
        "foramen_profile_bright_sectors_3mm": float(sum(v >= 0.5 * peak for v in sector_means.values())),
        "foramen_profile_vertical_to_horizontal":
            (sector_means["up"] + sector_means["down"]) / horiz if horiz > 0 else float("nan"),
    })
    return out
