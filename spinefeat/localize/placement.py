"""Steps 4-6: the midline from the axial dural sac, the foramina moved to their fat keyhole on Sagittal T1, the
recesses placed from the dural sac searched for on their axial slice."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..dicom import Stack
from ..errors import GeometryError
from ..segment.common import Segmentation
from ..series import project_to_series

log = logging.getLogger(__name__)


RECESSES = ("left_subarticular_stenosis", "right_subarticular_stenosis")


#: A keyhole counts as the foramen seen on a slice when its area (mm2) is in this range.
KEYHOLE_AREA_MM2 = (5.0, 250.0)


#: The foramen is searched for within this distance (mm) of its seed (the point projected from the midline by
#: the learnt offset is often several mm off on real studies: the offsets are patient-space, spines are not).
KEYHOLE_SEARCH_MM = 10.0
#: On the slices beside the prior's the keyhole found there is looked for within this distance (mm): a
#: foramen is a tube running laterally and a little down, its keyhole moves little from slice to slice.
KEYHOLE_RUN_SEARCH_MM = 4.0
#: The run of slices showing the foramen is looked for this many slices either side of the prior's, and a
#: slice belongs to it while its keyhole's area is within this ratio of the prior slice's (a much larger one
#: is the fat of the canal, medially). A looser run (3 slices, 3 times the area) put more held-out phantom
#: foramina off their slice (56 % and 46 % on the label's slice against 76 % and 72 %) and helped no foramen of
#: kaggle_study.
KEYHOLE_RUN_REACH = 2
KEYHOLE_RUN_RATIO = 1.5
#: The prior on a keyhole candidate's distance to the seed: a Gaussian of this share of the search radius (sd).
KEYHOLE_NEAR_SD = 0.6
#: Keyhole areas (mm2) a lumbar foramen's fat has on a parasagittal T1 slice: a normal foramen is 15-20 mm tall
#: and 8-10 mm wide (an ellipse of about 100-150 mm2), a narrowed one keeps a few tens of mm2; far larger is
#: the fat behind the canal or marrow joined to it.
KEYHOLE_PLAUSIBLE_MM2 = (20.0, 160.0)
#: A keyhole this many times taller than wide counts as fully foramen-like (the ratio of a normal foramen).
KEYHOLE_TALL_RATIO = 2.0
#: A keyhole fit scoring this much (the product of its terms) is taken as sure (confidence 1); less scales down.
#: On the share's real T1 slices (first 60 series, seed 4 mm off), points from fits under half of it missed
#: by over 6 mm 3 times in 10, from fits over it 1 in 10.
KEYHOLE_SURE_SCORE = 0.08
#: A best candidate scoring less than this is no keyhole: the point stays where it was. On the share's real
#: T1 slices the worst moves from a seed at the label were severe foramina without fat, left for a pedicle's
#: marrow; on held-out phantoms, stenosed foramina left for the fat behind the canal (5 of 100 moved 8-10 mm
#: with a cut of 0.02; none with this one). First 100 series, seeds 0 / 4 / 8 mm off: within 6 mm 0.97 /
#: 0.93 / 0.47 with it, 0.95 / 0.89 / 0.55 with 0.02.
KEYHOLE_MIN_SCORE = 0.04
#: The keyhole segmented at the seed itself is kept when it scores at least this share of the best candidate.
KEYHOLE_KEEP_SHARE = 0.5
#: How many bright blobs besides the seed are weighed as keyhole candidates (the strongest first).
KEYHOLE_CANDIDATES = 6
#: Where the labels mark a foramen along the keyhole's cranio-caudal extent, as a share from its top: the root
#: leaves under the upper pedicle. Measured on the share's real Sagittal T1 slices (the first 100 series by
#: id, the keyhole segmented at the label: median 0.35, quartiles 0.25-0.47, the same at every level).
KEYHOLE_ROOT_SHARE = 0.35


@dataclass
class KeyholeFit:
    """The foraminal keyhole found on a sagittal T1 slice: where the labels mark it (``rc``: row, col, input
    pixels; see :data:`KEYHOLE_ROOT_SHARE`), its centre, area (mm2), ``confidence`` in 0..1 and the terms of
    its score."""

    rc: tuple[float, float]
    centre_rc: tuple[float, float]
    area_mm2: float
    confidence: float
    terms: dict


def _keyhole_seg(image: np.ndarray, rc, *, pixel_spacing_mm, iop):
    """The keyhole segmented at ``rc`` (no series fat level: a dim foramen on a slice whose brightest is
    subcutaneous fat is still the foramen), or None when none of a plausible size is there."""
    from ..segment import FOUND, segment_foramen

    seg = segment_foramen(image, rc, pixel_spacing_mm=pixel_spacing_mm, iop=iop, sizes=False)  # area and extent only
    area = seg.measurements["area_mm2"]
    if seg.quality != FOUND or not seg.mask.any() or not KEYHOLE_AREA_MM2[0] <= area <= KEYHOLE_AREA_MM2[1]:
        return None
    return seg


def label_share(image: np.ndarray, label_rc, *, pixel_spacing_mm, iop=None) -> float | None:
    """Where a labelled foramen ``label_rc`` sits along the cranio-caudal extent of the keyhole segmented at
    it, as a share from its top (None without a keyhole): what :func:`find_keyhole`'s ``root_share`` learns."""
    seg = _keyhole_seg(image, label_rc, pixel_spacing_mm=pixel_spacing_mm, iop=iop)
    if seg is None:
        return None
    down = np.asarray(_down_rc(iop))
    t = np.argwhere(seg.mask) @ down * seg.spacing_mm
    dr, dc = (float(v) for v in pixel_spacing_mm)
    at = ((label_rc[0] - seg.origin_rc[0]) * dr * down[0] + (label_rc[1] - seg.origin_rc[1]) * dc * down[1])
    return float((at - t.min()) / max(float(np.ptp(t)), seg.spacing_mm))


def _keyhole_fit(image: np.ndarray, rc, seed_rc, *, pixel_spacing_mm, iop, search_mm: float,
                 root_share: float) -> KeyholeFit | None:
    """The keyhole segmented at ``rc``, scored as :func:`find_keyhole` says (its distance to ``seed_rc``
    weighed against ``search_mm``); None when there is none of a plausible size."""
    from ..segment.common import crop_mm, dilate

    seg = _keyhole_seg(image, rc, pixel_spacing_mm=pixel_spacing_mm, iop=iop)
    if seg is None:
        return None
    dr, dc = (float(v) for v in pixel_spacing_mm)
    m, g = seg.measurements, seg.spacing_mm
    pts = np.argwhere(seg.mask).astype(float)
    mr, mc = pts.mean(axis=0)
    # The point where the labels mark the foramen: root_share of the way down the keyhole.
    down = _down_rc(iop)
    t = pts @ down
    shift = (t.min() + root_share * (t.max() - t.min())) - (mr * down[0] + mc * down[1])
    centre = (seg.origin_rc[0] + mr * g / dr, seg.origin_rc[1] + mc * g / dc)
    point = (seg.origin_rc[0] + (mr + shift * down[0]) * g / dr, seg.origin_rc[1] + (mc + shift * down[1]) * g / dc)
    # Contrast: the keyhole's mean against a 3 mm ring around it (both on the segmenter's grid).
    ring = dilate(seg.mask, iterations=int(round(3.0 / g))) & ~seg.mask
    sub, _ = crop_mm(image, (seg.origin_rc[0] + (seg.mask.shape[0] - 1) / 2 * g / dr,
                             seg.origin_rc[1] + (seg.mask.shape[1] - 1) / 2 * g / dc),
                     pixel_spacing_mm=pixel_spacing_mm, size_mm=seg.mask.shape[0] * g, spacing_mm=g)
    inside, around = float(sub[seg.mask].mean()), float(sub[ring].mean()) if ring.any() else 0.0
    lo, hi = KEYHOLE_PLAUSIBLE_MM2
    area = m["area_mm2"]
    terms = {
        "area": float(min(1.0, area / lo, hi / max(area, 1e-6))),
        "tall": float(min(1.0, m["height_mm"] / max(m["width_mm"], 1e-6) / KEYHOLE_TALL_RATIO)),
        "contrast": float(np.clip((inside - around) / max(abs(inside), 1e-6), 0.0, 1.0) ** 2),
        "near": float(np.exp(-0.5 * (np.hypot((centre[0] - seed_rc[0]) * dr, (centre[1] - seed_rc[1]) * dc)
                                     / (KEYHOLE_NEAR_SD * search_mm)) ** 2)),
    }
    score = float(np.prod(list(terms.values())))
    return KeyholeFit(point, centre, float(area), min(1.0, score / KEYHOLE_SURE_SCORE), dict(terms, score=score))


def keyhole_candidates(image: np.ndarray, seed_rc, *, pixel_spacing_mm, iop=None,
                       search_mm: float = KEYHOLE_SEARCH_MM, root_share: float = KEYHOLE_ROOT_SHARE) -> list[KeyholeFit]:
    """Every keyhole candidate :func:`find_keyhole` weighs, scored; the one segmented at the seed itself (when
    there is one) first, marked ``terms["seeded"]``."""
    got = _blob_candidates(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, search_mm=search_mm, margin_mm=30.0,
                           sigmas_mm=(2.0, 6.0), most=KEYHOLE_CANDIDATES)
    out = []
    for i, rc in enumerate(got[2] if got is not None else []):
        fit = _keyhole_fit(image, rc, seed_rc, pixel_spacing_mm=pixel_spacing_mm, iop=iop, search_mm=search_mm,
                           root_share=root_share)
        if fit is not None:
            fit.terms["seeded"] = i == 0
            out.append(fit)
    return out


def find_keyhole(image: np.ndarray, seed_rc, *, pixel_spacing_mm, iop=None, search_mm: float = KEYHOLE_SEARCH_MM,
                 root_share: float = KEYHOLE_ROOT_SHARE) -> KeyholeFit | None:
    """The foraminal keyhole on a parasagittal T1 slice near a seed that may be several mm off.

    Candidates are the seed and the bright blobs of a foramen's size (a difference of Gaussians at 2 and
    6 mm) within ``search_mm``; each is segmented (:func:`spinefeat.segment.segment_foramen`) and scored:
    a plausible area (:data:`KEYHOLE_PLAUSIBLE_MM2`), taller than wide (the foramen's fat runs cranio-caudally
    between the pedicles; a pedicle's marrow or the fat behind the canal is rounder or wider), the fat
    standing out from the tissue around it, and a Gaussian prior on the distance to the seed. The seed's own
    keyhole is kept unless another scores twice as much (:data:`KEYHOLE_KEEP_SHARE`); none is taken when the
    best scores under :data:`KEYHOLE_MIN_SCORE` (a collapsed foramen has no fat, and the marrow of a pedicle
    nearby is no keyhole to move to: None). Its point is where the labels mark the
    foramen, ``root_share`` of the way down the keyhole's cranio-caudal extent (learnt from training labels by
    :func:`label_share`; the default :data:`KEYHOLE_ROOT_SHARE` is the real labels' share: the root leaves
    under the upper pedicle).
    """
    cands = keyhole_candidates(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, iop=iop, search_mm=search_mm,
                               root_share=root_share)
    best = max(cands, key=lambda f: f.terms["score"]) if cands else None
    if best is None or best.terms["score"] < KEYHOLE_MIN_SCORE:
        return None
    # A right seed is not traded for a neighbour's look-alike (on phantoms, whose seeds are right, 5 in 100
    # foramina moved 8-9 mm otherwise).
    own = cands[0] if cands[0].terms["seeded"] else None
    if own is not None and own.terms["score"] >= KEYHOLE_KEEP_SHARE * best.terms["score"]:
        return own
    return best


def _down_rc(iop) -> tuple[float, float]:
    """The (row, col) unit direction towards the patient's feet on a slice of orientation ``iop`` (default the
    standard sagittal one: rows run to the feet)."""
    iop = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0) if iop is None else iop
    v = np.array([-float(iop[5]), -float(iop[2])])      # -z (feet) along the rows' and the columns' direction
    n = float(np.hypot(*v))
    return (1.0, 0.0) if n < 1e-6 else (float(v[0] / n), float(v[1] / n))


def _same_keyhole(area: float, area_k: float, max_ratio: float) -> bool:
    return bool(np.isfinite(area) and area_k / max_ratio <= area <= area_k * max_ratio)


def middle_of_run(area: np.ndarray, pos_mm: np.ndarray, k: int, prior_mm: float, *, max_ratio: float = 1.5) -> int:
    """The slice in the middle of the run of slices that show the foramen.

    ``area``: per slice, the keyhole area seen at the point (NaN where none);
    ``pos_mm``: slice positions along the normal; ``k``: the slice the prior
    position ``prior_mm`` falls on. A foramen is a tube running laterally and
    the label marks its middle; the run is the slices around ``k`` whose
    keyhole is within ``max_ratio`` of the one on ``k`` (a much larger one
    is the fat of the canal, medially). With an even run the two middle
    slices tie and the one nearer the prior wins. No keyhole on ``k`` keeps ``k``.
    """
    if not np.isfinite(area[k]):
        return k
    lo, hi = k, k
    while lo > 0 and _same_keyhole(area[lo - 1], area[k], max_ratio):
        lo -= 1
    while hi < len(area) - 1 and _same_keyhole(area[hi + 1], area[k], max_ratio):
        hi += 1
    run = np.arange(lo, hi + 1)
    mid = pos_mm[run].mean()
    quarter = 0.25 * float(np.median(np.abs(np.diff(pos_mm)))) if len(pos_mm) > 1 else 1.0
    return int(min(run, key=lambda j: (round(abs(pos_mm[j] - mid) / quarter), abs(pos_mm[j] - prior_mm))))


def place_foramen(st: Stack, xyz: np.ndarray, pr: dict, *, root_share: float = KEYHOLE_ROOT_SHARE,
                  reach: int = KEYHOLE_RUN_REACH, max_ratio: float = KEYHOLE_RUN_RATIO) -> tuple[int, float, float, float]:
    """Slice, row, col and confidence of a foraminal point.

    On the prior's slice the keyhole is searched for around the prior's position (:func:`find_keyhole`: the
    projection from the midline by a learnt patient-space offset is often several mm off on real spines);
    the slice is the middle of the run of slices within ``reach`` that show a keyhole near it (within
    :data:`KEYHOLE_RUN_SEARCH_MM`, its area within ``max_ratio`` of the prior slice's: a much larger one is
    the fat of the canal, medially; :func:`middle_of_run`), and the point is that slice's keyhole. Slices
    are searched outwards only while the run goes on. Without a keyhole on the prior's slice the prior
    stays, confidence 0.
    """
    g = st.geometry
    k, rc = pr["slice"], (pr["row"], pr["col"])
    fits = {k: find_keyhole(st.pixels[k], rc, pixel_spacing_mm=g.pixel_spacing_mm, iop=g.iop, root_share=root_share)}
    if fits[k] is None:
        return k, rc[0], rc[1], 0.0
    area = np.full(g.n_slices, np.nan)
    area[k] = fits[k].area_mm2
    for step in (-1, 1):
        for j in range(k + step, k + step * (reach + 1), step):
            if not 0 <= j < g.n_slices:
                break
            fits[j] = find_keyhole(st.pixels[j], fits[k].rc, pixel_spacing_mm=g.pixel_spacing_mm, iop=g.iop,
                                   search_mm=KEYHOLE_RUN_SEARCH_MM, root_share=root_share)
            if fits[j] is not None:
                area[j] = fits[j].area_mm2
            if not _same_keyhole(area[j], area[k], max_ratio):
                break
    j = middle_of_run(area, g.positions_mm @ g.normal, k, float(np.asarray(xyz) @ g.normal), max_ratio=max_ratio)
    return j, fits[j].rc[0], fits[j].rc[1], fits[k].confidence


#: The dural sac is searched for within this distance (mm) of its seed: the point projected from the sagittal
#: series may be a few mm off, and the seed (the spinal point moved back by :data:`SAC_BEHIND_DISC_MM`) more.
SAC_SEARCH_MM = 10.0
#: The spinal point marks the back of the disc, the front of the sac; the sac's centre is about half an adult
#: sac's AP diameter (12-16 mm) behind it.
SAC_BEHIND_DISC_MM = 6.0
#: Cross-section areas (mm2) a lumbar dural sac has on an axial slice: smaller is a rootlet or facet fluid,
#: larger is fat or a leak.
SAC_AREA_MM2 = (40.0, 350.0)
#: The prior on a candidate's distance to the seed: a Gaussian of this share of the search radius (sd, mm/mm).
SAC_NEAR_SD = 0.6
#: The lateral recess: the sac's boundary point furthest along a direction this many degrees in front of the
#: patient's left-right axis (the sac's antero-lateral corner, under the facet, beside the disc).
RECESS_ANGLE_DEG = 30.0
#: The sac's CSF against its own level: rootlets make the CSF among them darker than the pure CSF behind them,
#: so the placement's mask takes CSF down to this share of the sac's brightest (the measuring segmenter, which
#: must not leak into fat, keeps 0.85).
SAC_STRICT = 0.7
#: A sac fit scoring this much (the product of its terms) is taken as sure (confidence 1); less scales down.
#: On the share's axial crops, recesses from fits under half of it missed by over 6 mm about 3 times in 10,
#: from fits over it about 1 in 20 (so ``predict``'s low-confidence list, under 0.5, holds the first).
SAC_SURE_SCORE = 0.4
_BLOB_SPACING_MM = 0.5


@dataclass
class SacFit:
    """The dural sac found on an axial slice: its centre (row, col, input pixels), the segmentation, how
    sac-like it is (``confidence`` in 0..1: plausible area, convex, mirror-symmetric about its own
    antero-posterior axis as the canal is, near the seed; their product over :data:`SAC_SURE_SCORE`, at most
    1) and those terms with their product (``score``)."""

    rc: tuple[float, float]
    seg: Segmentation
    confidence: float
    terms: dict


def _blob_candidates(image: np.ndarray, seed_rc, *, pixel_spacing_mm, search_mm: float, margin_mm: float,
                     sigmas_mm: tuple[float, float], most: int):
    """Where a search segments: the seed and the ``most`` strongest bright blobs within ``search_mm`` of it (local
    maxima 4 mm apart of a difference of Gaussians at ``sigmas_mm``), as input-pixel (row, col), the seed first;
    with the normalised crop they were found on (:data:`_BLOB_SPACING_MM` pixels, ``2 search_mm + margin_mm``
    wide) and its origin. None when the crop is blank."""
    from scipy import ndimage as ndi

    from ..segment.common import centre_distance_mm, crop_mm, normalise

    dr, dc = (float(v) for v in pixel_spacing_mm)
    sp = _BLOB_SPACING_MM
    crop, (r0, c0) = crop_mm(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, size_mm=2 * search_mm + margin_mm,
                             spacing_mm=sp)
    if np.ptp(crop) < 1e-6:
        return None
    x = normalise(crop, hi_pct=99.5)
    dog = ndi.gaussian_filter(x, sigmas_mm[0] / sp) - ndi.gaussian_filter(x, sigmas_mm[1] / sp)
    c = (crop.shape[0] - 1) / 2
    near = centre_distance_mm(crop.shape, sp) <= search_mm
    peak = (dog == ndi.maximum_filter(dog, size=int(round(4.0 / sp)))) & near & (dog > 0)
    order = np.argsort(dog[peak])[::-1][:most]
    cands = [(c, c)] + [tuple(p) for p in np.argwhere(peak)[order]]
    return x, (r0, c0), [(r0 + pr * sp / dr, c0 + pc * sp / dc) for pr, pc in cands]


def _mirror_symmetry(x: np.ndarray, centre, left_rc, back_rc, *, half_mm=(18.0, 14.0), spacing_mm: float) -> float:
    """Correlation of a window of ``x`` (a resampled crop) about the antero-posterior line through ``centre``
    with its mirror image across that line: the canal sits on the body's mirror plane, fat pads beside it do not."""
    from scipy import ndimage as ndi

    u = np.arange(-half_mm[0], half_mm[0] + 1e-6, 1.0) / spacing_mm
    v = np.arange(-half_mm[1], half_mm[1] + 1e-6, 1.0) / spacing_mm
    uu, vv = np.meshgrid(u, v)
    rows = centre[0] + uu * left_rc[0] + vv * back_rc[0]
    cols = centre[1] + uu * left_rc[1] + vv * back_rc[1]
    w = ndi.map_coordinates(x, [rows, cols], order=1, mode="nearest")
    a, b = w - w.mean(), w[:, ::-1] - w.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-9 else 0.0


def find_sac(image: np.ndarray, seed_rc, *, pixel_spacing_mm, iop, search_mm: float = SAC_SEARCH_MM) -> SacFit | None:
    """The dural sac on an axial T2 slice near a seed that may be several mm off.

    Candidates are the bright blobs of a sac's size (a difference of Gaussians at 2.5 and 7 mm) within
    ``search_mm`` of the seed, and the seed itself; each is segmented
    (:func:`spinefeat.segment.segment_axial_sac`) and scored: a plausible area (:data:`SAC_AREA_MM2`), the
    CSF filling its convex hull, the image mirror-symmetric about the candidate's antero-posterior axis
    (the canal is on the midline; epidural and paraspinal fat, facet fluid and muscle are beside it), and
    a Gaussian prior on the distance to the seed. The best-scoring one is returned (None when nothing
    bright is segmented; its segmentation measures the area, csf_fraction and solidity only). Directions come
    from ``iop`` (:func:`spinefeat.geometry.axial_directions`).
    """
    from ..geometry import axial_directions
    from ..segment import FAILED, WEAK, segment_axial_sac

    back, left = axial_directions(iop)
    dr, dc = (float(v) for v in pixel_spacing_mm)
    sp = _BLOB_SPACING_MM
    got = _blob_candidates(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, search_mm=search_mm, margin_mm=50.0,
                           sigmas_mm=(2.5, 7.0), most=6)
    if got is None:
        return None
    x, (r0, c0), cands = got
    best = None
    for rc in cands:
        seg = segment_axial_sac(image, rc, pixel_spacing_mm=pixel_spacing_mm, posterior_rc=back, strict=SAC_STRICT,
                                sizes=False)      # the score needs the area and solidity, not the diameters
        if seg.quality == FAILED or not seg.mask.any():     # no mask: no CSF near this candidate
            continue
        m = seg.measurements
        cr, cc = np.argwhere(seg.mask).mean(axis=0)
        centre = (seg.origin_rc[0] + cr * seg.spacing_mm / dr, seg.origin_rc[1] + cc * seg.spacing_mm / dc)
        on_crop = ((centre[0] - r0) * dr / sp, (centre[1] - c0) * dc / sp)
        lo, hi = SAC_AREA_MM2
        area = m["area_mm2"]
        terms = {
            "area": float(min(1.0, area / lo, hi / max(area, 1e-6))),
            "filled": float(np.clip(m["solidity"], 0, 1)),
            "symmetry": float(max(0.0, _mirror_symmetry(x, on_crop, left, back, spacing_mm=sp))),
            "near": float(np.exp(-0.5 * (np.hypot((centre[0] - seed_rc[0]) * dr, (centre[1] - seed_rc[1]) * dc)
                                         / (SAC_NEAR_SD * search_mm)) ** 2)),
            "closed": 0.5 if seg.quality == WEAK else 1.0,
        }
        score = float(np.prod(list(terms.values())))
        if best is None or score > best.terms["score"]:
            best = SacFit(centre, seg, min(1.0, score / SAC_SURE_SCORE), dict(terms, score=score))
    return best


def recess_rc(fit: SacFit, side: float, *, pixel_spacing_mm, iop) -> tuple[float, float]:
    """(row, col) of the lateral recess on one side (``side`` +1 the patient's left, -1 the right) of a found
    sac: its boundary point furthest along the direction :data:`RECESS_ANGLE_DEG` in front of that side
    (the antero-lateral corner of the CSF, under the facet, beside the disc; the recesses' own labels mark
    it there)."""
    from ..geometry import axial_directions

    back, left = axial_directions(iop)
    a = np.radians(RECESS_ANGLE_DEG)
    d = side * np.cos(a) * np.asarray(left) - np.sin(a) * np.asarray(back)       # (row, col) on the mask grid
    pts = np.argwhere(fit.seg.mask).astype(float)
    s = pts @ d
    corner = pts[s >= s.max() - 0.5 / fit.seg.spacing_mm].mean(axis=0)   # the top half-mm, not one pixel
    dr, dc = (float(v) for v in pixel_spacing_mm)
    return (float(fit.seg.origin_rc[0] + corner[0] * fit.seg.spacing_mm / dr),
            float(fit.seg.origin_rc[1] + corner[1] * fit.seg.spacing_mm / dc))


def place_recesses(image: np.ndarray, seed_rc, *, pixel_spacing_mm, iop,
                   search_mm: float = SAC_SEARCH_MM) -> tuple[SacFit | None, dict[float, tuple[float, float]]]:
    """Both lateral recesses of an axial T2 slice from a sac seed: the sac found near it (:func:`find_sac`) and
    its antero-lateral corners (:func:`recess_rc`), keyed by side (+1 left, -1 right). ``(None, {})`` when no sac is
    found. The one code path of ``localize`` and ``real-check``."""
    fit = find_sac(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, iop=iop, search_mm=search_mm)
    if fit is None:
        return None, {}
    return fit, {side: recess_rc(fit, side, pixel_spacing_mm=pixel_spacing_mm, iop=iop) for side in (1.0, -1.0)}


def sac_seed_rc(geometry, xyz) -> tuple[float, float]:
    """Where the sac is searched for on an axial slice of ``geometry``: the in-plane projection of a spinal
    (disc) point ``xyz`` moved :data:`SAC_BEHIND_DISC_MM` towards the patient's back."""
    from ..geometry import axial_directions

    back, _ = axial_directions(geometry.iop)
    pr = geometry.project(xyz)
    dr, dc = geometry.pixel_spacing_mm
    return (float(pr["row"][0]) + SAC_BEHIND_DISC_MM * back[0] / dr,
            float(pr["col"][0]) + SAC_BEHIND_DISC_MM * back[1] / dc)


def sac_centre(ax: Stack, k: int, xyz) -> np.ndarray | None:
    """Patient position of the dural sac's centre on slice ``k`` of an axial T2 stack, segmented around the
    in-plane projection of the spinal point ``xyz`` (the midline's estimate at that level); None when no sac
    is found there."""
    from ..geometry import axial_directions
    from ..segment import FAILED, segment_axial_sac

    g = ax.geometry
    pr = g.project(xyz)
    seg = segment_axial_sac(ax.pixels[k], (float(pr["row"][0]), float(pr["col"][0])),
                            pixel_spacing_mm=g.pixel_spacing_mm, posterior_rc=axial_directions(g.iop)[0])
    if seg.quality == FAILED or not seg.mask.any():         # no mask: no CSF at the projected point
        return None
    cr, cc = np.argwhere(seg.mask).mean(axis=0)
    dr, dc = g.pixel_spacing_mm
    return g.to_patient(k, seg.origin_rc[0] + cr * seg.spacing_mm / dr, seg.origin_rc[1] + cc * seg.spacing_mm / dc)


def recess_corners_xyz(ax: Stack, k: int, disc_xyz) -> tuple[SacFit | None, np.ndarray | None, dict[str, np.ndarray]]:
    """The sac found on slice ``k`` of an axial stack from a level's spinal point, its centre's patient
    position, and the patient position of its antero-lateral corner on each side (recess condition -> xyz;
    ``(None, None, {})`` when no sac is found). Training measures the labelled recesses against these
    (:func:`fit_recess_rule`), localisation places from them."""
    g = ax.geometry
    fit, rec = place_recesses(ax.pixels[k], sac_seed_rc(g, disc_xyz), pixel_spacing_mm=g.pixel_spacing_mm, iop=g.iop)
    if fit is None:
        return None, None, {}
    return fit, g.to_patient(k, *fit.rc), {cond: g.to_patient(k, *rec[side]) for cond, side in zip(RECESSES, (1.0, -1.0))}


def fit_recess_rule(samples: dict) -> dict:
    """Where labelled recesses lie between a sac's centre and its corner, learnt from training labels.

    ``samples``: level -> list of (label - centre, corner - centre) vector pairs (mm, any dimension). The
    rule is ``label = centre + w (corner - centre) + offset``: one ``corner_weight`` w in 0..1 for all
    levels (least squares, clipped; the share's real crops learn about 0.2, the phantoms, whose labels sit at
    a fixed distance from a round sac's centre, 0), an ``offsets_mm`` per level (the mean remainder). Empty
    without samples; w = 1 when the corners do not vary.
    """
    d = [np.asarray(a, float) for v in samples.values() for a, _ in v]
    c = [np.asarray(b, float) for v in samples.values() for _, b in v]
    if not d:
        return {}
    lv_of = [lv for lv, v in samples.items() for _ in v]
    d, c = np.array(d), np.array(c)
    # Per level centred, so the weight is not confused with the levels' different offsets.
    dm = np.array([d[[i for i, x in enumerate(lv_of) if x == lv]].mean(axis=0) for lv in lv_of])
    cm = np.array([c[[i for i, x in enumerate(lv_of) if x == lv]].mean(axis=0) for lv in lv_of])
    den = float(((c - cm) ** 2).sum())
    w = float(np.clip(((d - dm) * (c - cm)).sum() / den, 0.0, 1.0)) if den > 1e-9 else 1.0
    return {"corner_weight": w, "offsets_mm": {lv: (np.array([a for a, _ in v], float).mean(axis=0)
                                                     - w * np.array([b for _, b in v], float).mean(axis=0)).tolist()
                                               for lv, v in samples.items() if v}}


def apply_recess_rule(rule: dict | None, centre, corner, level: str) -> np.ndarray:
    """A recess from a sac's centre and corner by a :func:`fit_recess_rule` rule (without one, or without an
    offset for ``level``: the corner)."""
    corner = np.asarray(corner, float)
    if not rule:
        return corner
    centre = np.asarray(centre, float)
    off = rule["offsets_mm"].get(level)
    if off is None:
        return corner
    return centre + rule["corner_weight"] * (corner - centre) + np.asarray(off, float)


#: A level whose dural sac is not found (a severe stenosis leaves little CSF to segment) has its recesses placed
#: from the study's other levels, where the sac was found: its centre is the level's own sac seed moved as the
#: others' sacs lie from theirs (median), its corners as theirs lie from their centres; with this confidence
#: (times the level's: under ``predict``'s 0.5, so listed). At least this many other levels are needed.
RECESS_FROM_LEVELS_CONFIDENCE = 0.1
RECESS_FROM_LEVELS_MIN = 2


def _disc_axial_slice(images, disc_xyz, *, frame: str):
    """(series id, stack, slice) of the Axial T2 slice whose plane passes nearest a disc point, or why there is
    none (a str)."""
    try:
        sid, st, pr = project_to_series(disc_xyz, images, images.series_of("Axial T2"), frame_of_reference=frame)
    except GeometryError as exc:
        return str(exc)
    rows, cols = st.geometry.shape
    spacing = st.geometry.slice_spacing_mm if st.geometry.n_slices > 1 else 5.0
    # Within one slice spacing of the nearest slice, not half: a disc just past the end slice of its own
    # (per-level) stack is read on that slice.
    if not (abs(pr["distance_mm"]) <= spacing and -0.5 <= pr["row"] <= rows - 0.5 and -0.5 <= pr["col"] <= cols - 0.5):
        return (f"the level's disc is not on an Axial T2 slice (nearest {abs(pr['distance_mm']):.1f} mm away "
                "or outside the image)")
    return sid, st, pr["slice"]


def place_study_recesses(images, discs: dict, *, frame: str, rules: dict | None = None) -> tuple[dict, dict]:
    """Both lateral recesses of every level from its spinal (disc) point (``discs``: level -> xyz).

    The slice is the Axial T2 slice whose plane passes nearest the disc point, over every stack of every
    Axial T2 series (one continuous stack, one angled stack per level, stacks with gaps: patient geometry,
    never instance order), when within one slice spacing of it; the sac is searched for from the point
    (:func:`recess_corners_xyz`) and each recess placed from its centre and corner by the condition's rule
    in ``rules`` (:func:`fit_recess_rule`, learnt from labelled recesses; none: the corner), with the sac fit's
    confidence. A level without a sac is placed from the others' (:data:`RECESS_FROM_LEVELS_CONFIDENCE`).
    Returns ``{level: {condition: (series_id, stack, slice, row, col, confidence)}}`` and, per level not placed,
    why.
    """
    seen, why = {}, {}
    for lv, xyz in discs.items():
        got = _disc_axial_slice(images, xyz, frame=frame)
        if isinstance(got, str):
            why[lv] = got
            continue
        sid, st, k = got
        seed = st.geometry.to_patient(k, *sac_seed_rc(st.geometry, xyz))
        seen[lv] = (sid, st, k, seed, *recess_corners_xyz(st, k, xyz))
    found = [v for v in seen.values() if v[4] is not None]
    out = {}
    for lv, (sid, st, k, seed, fit, centre, corners) in seen.items():
        conf = fit.confidence if fit is not None else RECESS_FROM_LEVELS_CONFIDENCE
        if fit is None:
            if len(found) < RECESS_FROM_LEVELS_MIN:
                why[lv] = (f"no dural sac found near the level's disc point on Axial T2 series {sid} (nor on "
                           f"{RECESS_FROM_LEVELS_MIN} other levels to place it from)")
                continue
            centre = seed + np.median([c - s for _, _, _, s, _, c, _ in found], axis=0)
            corners = {cond: centre + np.median([cs[cond] - c for *_, c, cs in found], axis=0) for cond in RECESSES}
            log.info("%s: no dural sac found on Axial T2 series %s; recesses placed from %d other levels' sacs",
                     lv, sid, len(found))
        out[lv] = {}
        for cond, xyz in corners.items():
            q = st.geometry.project(apply_recess_rule((rules or {}).get(cond), centre, xyz, lv))
            out[lv][cond] = (sid, st, k, float(q["row"][0]), float(q["col"][0]), conf)
    return out, why


def place_level_recesses(images, disc_xyz, level: str, *, frame: str, rules: dict | None = None) -> tuple[dict, str]:
    """Both lateral recesses of one level alone (:func:`place_study_recesses`, no other level to fall back on):
    ``{condition: (series_id, stack, slice, row, col, confidence)}`` and why nothing was placed ("" when
    placed)."""
    got, why = place_study_recesses(images, {level: disc_xyz}, frame=frame, rules=rules)
    return got.get(level, {}), why.get(level, "")


def axial_midline_mm(images, stack: Stack, k: int, rc: np.ndarray) -> dict[int, float]:
    """Per level: the signed distance (mm, along the sagittal normal) from slice ``k`` to the dural sac
    centre found on the axial T2 slice the level's disc point projects to. Levels whose sac is not found
    are left out."""
    n = stack.geometry.normal
    dists: dict[int, list[float]] = {}
    for sid in images.series_of("Axial T2"):
        for li, (r, c) in enumerate(rc):
            xyz = stack.geometry.to_patient(k, r, c)
            try:
                _, ax, pr = project_to_series(xyz, images, [sid], frame_of_reference=stack.geometry.frame_of_reference)
            except GeometryError:       # another frame: this series tells nothing about the midline
                break
            if not pr["in_image"]:
                continue
            centre = sac_centre(ax, pr["slice"], xyz)
            if centre is not None:
                dists.setdefault(li, []).append(float((centre - stack.geometry.positions_mm[k]) @ n))
    return {li: float(np.median(v)) for li, v in dists.items()}


def midline_offsets_mm(per_level: dict[int, float], t_mm: np.ndarray, fallback_mm: float) -> np.ndarray:
    """Offset of the midline from the mid-sagittal slice at each level (mm along the slice normal).

    A tilted sagittal plane crosses the midline at a slant, so the offset is a
    line along the spine (``t_mm``: the levels' positions along it), fitted
    through the levels' axial estimates by Theil-Sen, which ignores a level
    whose sac was mis-segmented. With fewer than three estimates their median
    is used, with none ``fallback_mm``.
    """
    t_mm = np.asarray(t_mm, float)
    if not per_level:
        return np.full(len(t_mm), float(fallback_mm))
    li = np.array(sorted(per_level))
    d = np.array([per_level[i] for i in li])
    if len(li) < 3:
        return np.full(len(t_mm), float(np.median(d)))
    # Theil-Sen by hand: five points, and importing scipy.stats costs a second per worker process.
    t = t_mm[li]
    i, j = np.triu_indices(len(li), 1)
    slope = float(np.median((d[j] - d[i]) / (t[j] - t[i])))
    intercept = float(np.median(d - slope * t))
    return intercept + slope * t_mm
