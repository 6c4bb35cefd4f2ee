"""Lateral (subarticular) recess on an axial T2 slice."""

from __future__ import annotations

import numpy as np

from .common import FOUND, Segmentation, bright_region, finish, normalise, open_crop, run_along_mm

NAN = float("nan")
#: Below this share of the crop's bright reference (the sac's CSF), nothing near the point is recess space.
OBLITERATED_LEVEL = 0.45
KEYS = ("area_mm2", "depth_mm", "lateral_extent_mm", "csf_fraction", "lf_thickness_mm", "dark_fraction")


def measure_recess(image: np.ndarray, seed_rc, *, pixel_spacing_mm, posterior_rc=(1.0, 0.0), lateral_rc=(0.0, 1.0),
                   crop_size_mm: float = 16.0, spacing_mm: float = 0.25) -> Segmentation:
    """The bright space (CSF, fat) of a lateral recess around a seed on an axial T2 slice.

    Directions are anatomical: ``posterior_rc`` is the unit (row, col) image
    direction towards the patient's back and ``lateral_rc`` the one away from
    the midline on this side (both from the orientation tags,
    :func:`spinefeat.geometry.axial_directions`). ``depth_mm`` is the recess's
    antero-posterior extent through the point, ``lateral_extent_mm`` its
    extent across, ``area_mm2`` its area within the crop.
    ``lf_thickness_mm`` is the dark band (ligamentum flavum, facet) met going
    back from the recess; ``dark_fraction`` the share of the crop darker than
    the half-maximum (encroaching tissue). What fills it is sampled by
    :func:`spinefeat.features.axial.recess_profile`.
    """
    crop, origin, fail = open_crop(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, size_mm=crop_size_mm,
                                   spacing_mm=spacing_mm, keys=KEYS)
    if fail is not None:
        return fail
    x = normalise(crop, hi_pct=99.5)
    c = (x.shape[0] - 1) / 2
    back = tuple(float(v) for v in posterior_rc)
    out = tuple(float(v) for v in lateral_rc)
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
    # Nearest mask pixel to the seed, then the runs through it.
    k = int(np.argmin((rr - c) ** 2 + (cc - c) ** 2))
    r0, c0 = int(rr[k]), int(cc[k])
    depth = run_along_mm(mask, r0, c0, back, spacing_mm)
    lateral = run_along_mm(mask, r0, c0, out, spacing_mm)
    # Going back from the recess's back edge: dark pixels until it brightens again.
    r, q = float(r0), float(c0)
    while 0 <= round(r) < x.shape[0] and 0 <= round(q) < x.shape[1] and mask[round(r), round(q)]:
        r, q = r + back[0], q + back[1]
    dark_thr = max(info["lo"] + 0.25 * (info["hi"] - info["lo"]) if np.isfinite(info["lo"]) else 0.3, 0.35)
    lf = 0
    while 0 <= round(r) < x.shape[0] and 0 <= round(q) < x.shape[1] and x[round(r), round(q)] <= dark_thr:
        lf += 1
        r, q = r + back[0], q + back[1]
    inside = 0 <= round(r) < x.shape[0] and 0 <= round(q) < x.shape[1]
    meas = {"area_mm2": float(mask.sum()) * spacing_mm ** 2, "depth_mm": depth, "lateral_extent_mm": lateral,
            "csf_fraction": float(info["bright"][mask].mean()),
            "lf_thickness_mm": lf * spacing_mm if inside else NAN,
            "dark_fraction": float((x < info["threshold"]).mean())}
    # The recess opens into the canal, so reaching the crop border is expected here.
    return finish(mask, meas, spacing_mm, origin, min_area_mm2=1.0, border_is_weak=False)
