"""Lateral (subarticular) recess on an axial T2 slice."""

from __future__ import annotations

import functools

import numpy as np

from .common import FOUND, Segmentation, bright_region, crop_mm, finish, normalise, open_crop, run_along_mm

NAN = float("nan")
#: Below this share of the crop's bright reference (the sac's CSF), nothing near the point is recess space.
OBLITERATED_LEVEL = 0.45
#: Rays of the free space around the traversing root, from the point: front (-90 deg) through lateral (0) to
#: back (+90), each read over :data:`FREE_SPACE_REACH_MM`; bright is above half the crop's range.
FREE_SPACE_ANGLES_DEG = (-90, -60, -30, 0, 30, 60, 90)
FREE_SPACE_REACH_MM = 6.0
FREE_SPACE_GROUPS = {"free_space_front_mm": (-90, -60), "free_space_lateral_mm": (-30, 0, 30),
                     "free_space_back_mm": (60, 90), "free_space_medial_mm": (150, 180, 210)}
#: The recess's lateral wall: on rays from the point (front-lateral through lateral to back, 0 deg lateral, +90
#: back), the distance to the first pixel under :data:`WALL_LEVEL` of the range (1st to 99.5th percentile) of
#: a :data:`WALL_CROP_MM` crop (after the same 0.5 mm Gaussian as the free space): cortical bone of the facet
#: and the ligamentum flavum, darker than the root and the disc. The facet's medial edge and a thick ligament
#: close in on the root as the recess narrows. The crop is wider than the recess's own so that its range
#: holds the facets and the laminae. Level (0.2, 0.3), crop (16, 24, 32 mm) and reach (7.5, 10, 12 mm)
#: compared on the development half of the real axial crops, see the README.
WALL_LEVEL = 0.2
WALL_CROP_MM = 24.0
WALL_ANGLES_DEG = (-60, -30, 0, 30, 60, 90)
WALL_REACH_MM = 7.5
WALL_GROUPS = {"wall_front_mm": (-60, -30), "wall_lateral_mm": (0, 30), "wall_back_mm": (60, 90)}
#: How far around the labelled point the recess is also measured, mm (front, back, lateral and medial of it),
#: for :func:`measure_recess`'s ``around_mm``: a reader's point lies somewhere on the recess, and a
#: measurement from one pixel follows the click as much as the recess. Compared on the development half of
#: the real axial crops (0.5 .. 4 mm), see the README.
RECESS_AROUND_MM = 3.0
KEYS = ("area_mm2", "depth_mm", "lateral_extent_mm", "csf_fraction", "lf_thickness_mm", "dark_fraction",
        "free_space_mm", *FREE_SPACE_GROUPS, "wall_mm", *WALL_GROUPS)


@functools.lru_cache(maxsize=64)
def _ray_directions(angles_deg: tuple, posterior_rc: tuple, lateral_rc: tuple) -> np.ndarray:
    """The unit (row, col) direction of each ray, one row a ray (read-only: made once per series' directions,
    the same arithmetic per ray as before, so the same values)."""
    back, side = np.asarray(posterior_rc, float), np.asarray(lateral_rc, float)
    d = np.array([np.sin(t) * back + np.cos(t) * side for t in np.radians(list(angles_deg))])
    d.flags.writeable = False
    return d


def _rays(x: np.ndarray, angles_deg, *, posterior_rc, lateral_rc, spacing_mm: float, reach_mm: float) -> dict:
    """Values of ``x`` after a 0.5 mm Gaussian (noise and partial volume) along rays from the crop's centre
    (0 deg is ``lateral_rc``, +90 ``posterior_rc``), one per pixel step up to ``reach_mm``."""
    from scipy.ndimage import gaussian_filter

    xs = gaussian_filter(x, 0.5 / spacing_mm)
    c = (xs.shape[0] - 1) / 2
    k = np.arange(int(round(reach_mm / spacing_mm)))
    d = _ray_directions(tuple(angles_deg), tuple(float(v) for v in posterior_rc), tuple(float(v) for v in lateral_rc))
    # Every ray's pixels at once (the same arithmetic per ray), kept inside the crop.
    i = np.minimum(np.maximum(np.rint(c + k * d[:, :1]).astype(int), 0), xs.shape[0] - 1)
    j = np.minimum(np.maximum(np.rint(c + k * d[:, 1:]).astype(int), 0), xs.shape[1] - 1)
    return dict(zip(angles_deg, xs[i, j]))


def free_space(x: np.ndarray, *, posterior_rc, lateral_rc, spacing_mm: float) -> dict[str, float]:
    """How much of the space lateral of the point (front, lateral, back of it) is bright, in mm along rays.

    On each ray of :data:`FREE_SPACE_ANGLES_DEG` from the centre of the normalised crop ``x`` (after a
    0.5 mm Gaussian: noise and partial volume; 0 deg is ``lateral_rc``, +90 ``posterior_rc``), the length
    within :data:`FREE_SPACE_REACH_MM` brighter than 0.5. Bright pixels are counted wherever they lie on the
    ray, not only up to the first dark one: the point sits on the dark traversing root. A patent recess is
    CSF and fat around the root (about 6 mm on every ray); a shut one is disc, ligament and facet (0). No
    segmentation, so a recess mask that follows the sac's CSF medially does not count.
    ``free_space_mm`` is the mean over those rays; the groups of :data:`FREE_SPACE_GROUPS` over theirs
    (``free_space_medial_mm``: three rays towards the sac, not in the mean).
    """
    angles = sorted({*FREE_SPACE_ANGLES_DEG, *(a for g in FREE_SPACE_GROUPS.values() for a in g)})
    ray = {a: float((v >= 0.5).sum()) * spacing_mm
           for a, v in _rays(x, angles, posterior_rc=posterior_rc, lateral_rc=lateral_rc, spacing_mm=spacing_mm,
                             reach_mm=FREE_SPACE_REACH_MM).items()}
    out = {"free_space_mm": float(np.mean([ray[a] for a in FREE_SPACE_ANGLES_DEG]))}
    out.update({name: float(np.mean([ray[a] for a in angles])) for name, angles in FREE_SPACE_GROUPS.items()})
    return out


def lateral_wall(x: np.ndarray, *, posterior_rc, lateral_rc, spacing_mm: float) -> dict[str, float]:
    """How far the recess's dark wall (facet bone, ligamentum flavum) lies from the point, mm along rays.

    On each ray of :data:`WALL_ANGLES_DEG` from the centre of the normalised crop ``x`` (smoothed as in
    :func:`free_space`), the distance to the first pixel under :data:`WALL_LEVEL`, :data:`WALL_REACH_MM` when
    none is met. The free space counts what is bright around the root; this is how close the bone and the
    ligament have come, whatever fills the space between.
    ``wall_mm`` is the mean over the rays, the groups of :data:`WALL_GROUPS` over theirs.
    """
    ray = {}
    for a, v in _rays(x, WALL_ANGLES_DEG, posterior_rc=posterior_rc, lateral_rc=lateral_rc, spacing_mm=spacing_mm,
                      reach_mm=WALL_REACH_MM).items():
        dark = np.flatnonzero(v < WALL_LEVEL)
        ray[a] = float(dark[0]) * spacing_mm if dark.size else WALL_REACH_MM
    out = {"wall_mm": float(np.mean(list(ray.values())))}
    out.update({name: float(np.mean([ray[a] for a in angles])) for name, angles in WALL_GROUPS.items()})
    return out


def measure_recess(image: np.ndarray, seed_rc, *, pixel_spacing_mm, posterior_rc=(1.0, 0.0), lateral_rc=(0.0, 1.0),
                   crop_size_mm: float = 16.0, spacing_mm: float = 0.25, around_mm: float = 0.0) -> Segmentation:
    """The bright space (CSF, fat) of a lateral recess around a seed on an axial T2 slice.

    Directions are anatomical: ``posterior_rc`` is the unit (row, col) image
    direction towards the patient's back and ``lateral_rc`` the one away from
    the midline on this side (both from the orientation tags,
    :func:`spinefeat.geometry.axial_directions`). ``depth_mm`` is the recess's
    antero-posterior extent through the point, ``lateral_extent_mm`` its
    extent across, ``area_mm2`` its area within the crop.
    ``lf_thickness_mm`` is the dark band (ligamentum flavum, facet) met going
    back from the recess; ``dark_fraction`` the share of the crop darker than
    the half-maximum (encroaching tissue); ``free_space_*`` the bright
    length on rays lateral of the point (:func:`free_space`); ``wall_*`` the distance from the point to
    the dark facet and ligament on rays lateral of it (:func:`lateral_wall`). What fills it is sampled by
    :func:`spinefeat.features.axial.recess_profile`.

    With ``around_mm`` > 0 (e.g. :data:`RECESS_AROUND_MM`), each measurement is the mean (NaN left out)
    over the point and the 4 points ``around_mm`` in front of, behind, lateral and medial of it; the mask,
    quality and notes stay the point's own.
    """
    if around_mm > 0:
        dr, dc = (float(v) for v in pixel_spacing_mm)
        kw = dict(pixel_spacing_mm=pixel_spacing_mm, posterior_rc=posterior_rc, lateral_rc=lateral_rc,
                  crop_size_mm=crop_size_mm, spacing_mm=spacing_mm)
        seg = measure_recess(image, seed_rc, **kw)
        steps = [(s * d[0], s * d[1]) for d in (posterior_rc, lateral_rc) for s in (around_mm, -around_mm)]
        around = [measure_recess(image, (seed_rc[0] + a / dr, seed_rc[1] + b / dc), **kw).measurements
                  for a, b in steps]
        with np.errstate(all="ignore"):
            seg.measurements = {k: float(np.nanmean([m[k] for m in [seg.measurements, *around]]))
                                if any(np.isfinite(m[k]) for m in [seg.measurements, *around]) else NAN
                                for k in seg.measurements}
        return seg
    x, origin, fail = open_crop(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, size_mm=crop_size_mm,
                                spacing_mm=spacing_mm, keys=KEYS, hi_pct=99.5)
    if fail is not None:
        return fail
    c = (x.shape[0] - 1) / 2
    back = tuple(float(v) for v in posterior_rc)
    out = tuple(float(v) for v in lateral_rc)
    # The recess is space (fat or CSF, both bright on T2) around the dark traversing root:
    # a low strict level keeps fat, hole filling takes the root in.
    mask, info = bright_region(x, spacing_mm=spacing_mm, input_px_mm=float(max(pixel_spacing_mm)),
                               search_mm=3.0, strict=0.5, close_mm=0.5, min_level=OBLITERATED_LEVEL)
    wide, _ = crop_mm(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, size_mm=WALL_CROP_MM, spacing_mm=spacing_mm)
    space = {**free_space(x, posterior_rc=back, lateral_rc=out, spacing_mm=spacing_mm),
             **lateral_wall(normalise(wide, hi_pct=99.5), posterior_rc=back, lateral_rc=out, spacing_mm=spacing_mm)}
    if not mask.any():
        # Nothing bright near the point: the recess is obliterated (Bartynski 3), a finding.
        meas = {k: 0.0 for k in KEYS}
        meas["lf_thickness_mm"] = NAN
        meas["dark_fraction"] = float((x < 0.5 * info["hi"]).mean()) if np.isfinite(info["hi"]) else NAN
        meas.update(space)
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
            "dark_fraction": float((x < info["threshold"]).mean()), **space}
    # The recess opens into the canal, so reaching the crop border is expected here.
    return finish(mask, meas, spacing_mm, origin, min_area_mm2=1.0, border_is_weak=False)
