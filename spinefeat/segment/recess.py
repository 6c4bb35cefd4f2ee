"""Lateral (subarticular) recess on an axial T2 slice."""

from __future__ import annotations

import numpy as np

from .common import FOUND, Segmentation, bright_region, finish, normalise, open_crop, run_through

NAN = float("nan")
#: Below this share of the crop's bright reference (the sac's CSF), nothing near the point is recess space.
OBLITERATED_LEVEL = 0.45
KEYS = ("area_mm2", "depth_mm", "lateral_extent_mm", "csf_fraction", "lf_thickness_mm", "dark_fraction")


def measure_recess(image: np.ndarray, seed_rc, *, pixel_spacing_mm, posterior_sign: float = 1.0,
                   crop_size_mm: float = 16.0, spacing_mm: float = 0.25) -> Segmentation:
    """The bright space (CSF, fat) of a lateral recess around a seed on an axial T2 slice.

    ``depth_mm`` is its antero-posterior extent through the seed's column
    (image rows run antero-posteriorly on an axial slice), ``lateral_extent_mm``
    its extent along the seed's row, ``area_mm2`` its area within the crop.
    ``lf_thickness_mm`` is the dark band (ligamentum flavum, facet) met going
    posterior from the recess (``posterior_sign`` +1 when rows increase
    towards the patient's back, from the orientation tags). ``dark_fraction``
    is the share of the crop darker than the half-maximum (encroaching tissue).
    """
    crop, origin, fail = open_crop(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, size_mm=crop_size_mm,
                                   spacing_mm=spacing_mm, keys=KEYS)
    if fail is not None:
        return fail
    x = normalise(crop, hi_pct=99.5)
    # The recess is space (fat or CSF, both bright on T2) around the dark traversing root:
    # a low strict level keeps fat, hole filling takes the root in.
    mask, info = bright_region(x, spacing_mm=spacing_mm, input_px_mm=float(max(pixel_spacing_mm)),
                               search_mm=3.0, strict=0.5, close_mm=0.5, min_level=OBLITERATED_LEVEL)
    if not mask.any():
        # Nothing bright near the point: the recess is obliterated (Bartynski 3), a finding.
        meas = {k: 0.0 for k in KEYS}
        meas["lf_thickness_mm"] = NAN
        meas["dark_fraction"] = float((x < 0.5 * info["hi"]).mean()) if np.isfinite(info["hi"]) else NAN
        return Segmentation(mask, meas, FOUND, spacing_mm, origin, ["recess obliterated"])
    rr, cc = np.nonzero(mask)
    c = mask.shape[0] // 2
    # Nearest mask pixel to the seed, then the runs through it.
    k = int(np.argmin((rr - c) ** 2 + (cc - c) ** 2))
    r0, c0 = int(rr[k]), int(cc[k])
    depth = run_through(mask, r0, c0, axis=0) * spacing_mm
    lateral = run_through(mask, r0, c0, axis=1) * spacing_mm
    # Going posterior from the recess's back edge: dark pixels until it brightens again.
    col = mask[:, c0]
    rows = np.flatnonzero(col)
    step = 1 if posterior_sign >= 0 else -1
    r = (rows.max() if step > 0 else rows.min()) + step
    dark_thr = info["lo"] + 0.25 * (info["hi"] - info["lo"]) if np.isfinite(info["lo"]) else 0.3
    lf = 0
    while 0 <= r < x.shape[0] and x[r, c0] <= max(dark_thr, 0.35):
        lf += 1
        r += step
    meas = {"area_mm2": float(mask.sum()) * spacing_mm ** 2, "depth_mm": depth, "lateral_extent_mm": lateral,
            "csf_fraction": float(info["bright"][mask].mean()),
            "lf_thickness_mm": lf * spacing_mm if 0 <= r < x.shape[0] else NAN,
            "dark_fraction": float((x < info["threshold"]).mean())}
    # The recess opens into the canal, so reaching the crop border is expected here.
    return finish(mask, meas, spacing_mm, origin, min_area_mm2=1.0, border_is_weak=False)
