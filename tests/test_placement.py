"""Axial placement: the dural sac found from a seed a few mm off, the recesses at its antero-lateral corners, the
slice chosen per level by patient geometry whatever the stack layout, and the same code on real axial crops."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from spinefeat.dicom import Stack
from spinefeat.extract import STANDARD_IOP
from spinefeat.geometry import StackGeometry
from spinefeat.localize.placement import RECESS_FROM_LEVELS_CONFIDENCE, apply_recess_rule, find_sac, fit_recess_rule, \
    place_level_recesses, place_recesses, place_study_recesses

AXIAL = STANDARD_IOP["recess"]          # columns to the patient's left, rows to the back
SP = 0.5                                 # mm per pixel


def _slice(n=160, sac_rc=(80, 80), fat_rc=None, sac_r_mm=7.0):
    """A tiny axial slice: grey tissue, a dark disc in front, a bright round sac with dark rootlets behind it,
    and optionally a brighter, irregular blob of fat off the midline (one side only)."""
    yy, xx = np.mgrid[:n, :n].astype(float)
    img = np.full((n, n), 0.3)
    img[np.hypot((yy - sac_rc[0] + 40) / 1.0, (xx - sac_rc[1]) / 1.6) < 28] = 0.15        # the disc, in front
    r = np.hypot(yy - sac_rc[0], xx - sac_rc[1]) * SP
    img[r < sac_r_mm] = 0.9
    for dr, dc in ((3, -4), (4, 3), (6, 0)):                                               # rootlets, at the back
        img[np.hypot(yy - sac_rc[0] - dr / SP, xx - sac_rc[1] - dc / SP) * SP < 0.8] = 0.4
    if fat_rc is not None:
        f = (np.hypot(yy - fat_rc[0], (xx - fat_rc[1]) * 0.7) * SP < 5.0) & ((yy + xx) % 7 > 1)
        img[f] = 1.0
    return img


def test_sac_is_found_from_a_seed_several_mm_off_and_not_the_fat_beside_it():
    sac, fat = (80, 80), (78, 80 + 18 / SP)                      # fat 18 mm to the left (4 mm gap to the sac)
    img = _slice(sac_rc=sac, fat_rc=fat)
    # (row, col) mm; (0, 9) is nearer the fat than the sac: segmenting at the seed takes the fat there
    for seed_mm in ((0, 6), (0, 9), (4, 4), (-5, -2), (0, 0)):
        seed = (sac[0] + seed_mm[0] / SP, sac[1] + seed_mm[1] / SP)
        fit = find_sac(img, seed, pixel_spacing_mm=(SP, SP), iop=AXIAL)
        assert fit is not None
        assert np.hypot(fit.rc[0] - sac[0], fit.rc[1] - sac[1]) * SP < 1.5, seed_mm
        assert 0 < fit.confidence <= 1


def test_recesses_are_the_sacs_antero_lateral_corners_on_the_patients_sides():
    sac = (80, 80)
    img = _slice(sac_rc=sac, sac_r_mm=7.0)
    fit, rec = place_recesses(img, (sac[0] + 3 / SP, sac[1] - 3 / SP), pixel_spacing_mm=(SP, SP), iop=AXIAL)
    a = np.radians(30.0)
    for side in (1.0, -1.0):            # a circle's support point along 30 deg in front of the side
        want = (sac[0] - 7.0 * np.sin(a) / SP, sac[1] + side * 7.0 * np.cos(a) / SP)
        assert np.hypot(rec[side][0] - want[0], rec[side][1] - want[1]) * SP < 1.5
    # the image flipped left-right with the orientation tags saying so: the sides follow the tags, not the image
    flipped_iop = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    _, rec_f = place_recesses(img[:, ::-1], (sac[0], img.shape[1] - 1 - sac[1]), pixel_spacing_mm=(SP, SP),
                              iop=flipped_iop)
    assert rec_f[1.0][1] < img.shape[1] / 2 < rec_f[-1.0][1]


def test_recess_rule_learns_where_labels_lie_between_the_sacs_centre_and_corner():
    rng = np.random.default_rng(0)
    corner = {lv: rng.normal([2.0, 7.0], 1.5, size=(40, 2)) for lv in ("l1_l2", "l4_l5")}
    off = {"l1_l2": np.array([-1.0, 2.0]), "l4_l5": np.array([-2.0, 1.0])}
    for w in (0.0, 0.4, 1.0):
        samples = {lv: [(w * c + off[lv], c) for c in cs] for lv, cs in corner.items()}
        rule = fit_recess_rule(samples)
        assert rule["corner_weight"] == pytest.approx(w, abs=1e-6)
        np.testing.assert_allclose(rule["offsets_mm"]["l4_l5"], off["l4_l5"], atol=1e-6)
        c = np.array([3.0, 9.0])
        np.testing.assert_allclose(apply_recess_rule(rule, np.zeros(2), c, "l1_l2"), w * c + off["l1_l2"], atol=1e-6)
    # labels further out than the corner: the weight stays in 0..1
    assert fit_recess_rule({"l1_l2": [(2 * c, c) for c in corner["l1_l2"]]})["corner_weight"] == 1.0
    assert fit_recess_rule({}) == {}
    np.testing.assert_allclose(apply_recess_rule({}, np.zeros(2), [1.0, 2.0], "l1_l2"), [1.0, 2.0])


class _Images:
    """One Axial T2 series of the given stacks (StudyImages' look-ups)."""

    def __init__(self, stacks):
        self._stacks = stacks

    def series_of(self, description):
        return [5] if description == "Axial T2" else []

    def stacks(self, series_id):
        return self._stacks


def _stack(z_mm, *, tilt_deg=0.0, x0=-40.0, y0=-40.0):
    """A stack of axial slices at heights ``z_mm`` (tilted about the left-right axis), each with a sac at x=0,
    y=0 (patient mm); 160 x 160 pixels at 0.5 mm from (x0, y0)."""
    t = np.radians(tilt_deg)
    iop = [1, 0, 0, 0, np.cos(t), np.sin(t)]
    normal = np.cross(iop[:3], iop[3:])
    pos = np.array([[x0, y0 * np.cos(t), y0 * np.sin(t)] + z * normal for z in z_mm])
    order = np.argsort(pos @ normal)
    pos = pos[order]
    geo = StackGeometry(pos, iop, [SP, SP], (160, 160), "f")
    img = _slice(sac_rc=(80, 80))
    return Stack(1, 5, "Axial T2", np.stack([img] * len(pos)).astype(np.float32), geo,
                 np.arange(1, len(pos) + 1)[order], np.array([f"u{i}" for i in order], dtype=object))


def test_slice_per_level_is_the_nearest_plane_across_angled_stacks_and_gaps():
    # Three angled stacks of three slices (one per disc, 4 mm apart), 40 mm between discs, nothing in between.
    stacks = [_stack([c - 4, c, c + 4], tilt_deg=t) for c, t in ((-40, -10), (0, 0), (40, 12))]
    images = _Images(stacks[::-1])                          # listing order must not matter
    for c, st in zip((-40, 0, 40), stacks):
        disc = np.array([0.0, -6.0, c + 1.0])               # the spinal point: 6 mm in front of the sac centre
        got, why = place_level_recesses(images, disc, "l3_l4", frame="f")
        assert why == "" and set(got) == {"left_subarticular_stenosis", "right_subarticular_stenosis"}
        sid, stack, k, r, c_col, conf = got["left_subarticular_stenosis"]
        assert stack is st
        d = np.abs(stack.geometry.offsets_mm - disc @ stack.geometry.normal)
        assert k == int(np.argmin(d))                        # the slice whose plane passes nearest the point
        assert c_col > 80 and r < 80                         # left is +x: to the patient's left, in front
    got, why = place_level_recesses(images, np.array([0.0, -6.0, 20.0]), "l3_l4", frame="f")     # in the gap
    assert got == {} and "not on an Axial T2 slice" in why


def test_a_level_without_a_sac_takes_its_recesses_from_the_other_levels_sacs():
    # One stack per level, 40 mm apart; the disc points 3 mm to the right of the sacs and 6 mm in front. On
    # the l4_l5 slice no sac is drawn (a severe stenosis: no CSF left).
    z = {"l2_l3": -40.0, "l3_l4": 0.0, "l4_l5": 40.0, "l5_s1": 80.0}
    stacks = {lv: _stack([c - 4, c, c + 4]) for lv, c in z.items()}
    no_csf = stacks["l4_l5"].pixels.copy()
    no_csf[no_csf > 0.3] = 0.3
    stacks["l4_l5"] = dataclasses.replace(stacks["l4_l5"], pixels=no_csf)
    discs = {lv: np.array([-3.0, -6.0, c]) for lv, c in z.items()}
    alone, why = place_level_recesses(_Images([stacks["l4_l5"]]), discs["l4_l5"], "l4_l5", frame="f")
    assert alone == {} and "no dural sac found" in why
    got, why = place_study_recesses(_Images(list(stacks.values())), discs, frame="f")
    assert why == {} and set(got) == set(z)
    for cond in ("left_subarticular_stenosis", "right_subarticular_stenosis"):
        _, st, k, r, c, conf = got["l4_l5"][cond]
        assert st is stacks["l4_l5"] and conf == RECESS_FROM_LEVELS_CONFIDENCE
        # Where the sac's corner is on the levels that show it (the same sac, the same place in patient space),
        # not where the 3 mm-off disc point alone would put it.
        ref = got["l3_l4"][cond]
        assert ref[5] > RECESS_FROM_LEVELS_CONFIDENCE
        xyz, ref_xyz = st.geometry.to_patient(k, r, c), ref[1].geometry.to_patient(ref[2], ref[3], ref[4])
        np.testing.assert_allclose(xyz[:2], ref_xyz[:2], atol=0.5)
    # With one other level only, nothing to place it from: no points, and why.
    got, why = place_study_recesses(_Images([stacks["l3_l4"], stacks["l4_l5"]]),
                                    {lv: discs[lv] for lv in ("l3_l4", "l4_l5")}, frame="f")
    assert set(got) == {"l3_l4"} and "nor on 2 other levels" in why["l4_l5"]


@pytest.fixture(scope="module")
def crops(shared):
    folder = shared / "real_rsna" / "axial_t2_crops"
    if not (folder / "crops.csv").is_file():
        pytest.skip(f"the share's axial crops are not at {folder}")
    return folder


def test_recesses_on_real_crops_from_an_off_seed(crops):
    """A fixed subset (the 12 axial series with the smallest ids); the seed 4 mm off in a random direction."""
    from spinefeat.realcheck import axial_placement_rows, read_axial

    cr, pts, _ = read_axial(crops)
    rows = []
    for sid in sorted(cr["series_id"].unique())[:12]:
        rows += axial_placement_rows(crops, cr[cr["series_id"] == sid], pts[pts["series_id"] == sid], shift_mm=4.0)
    df = pd.DataFrame(rows)
    assert len(df) >= 30
    e = np.hypot(df["label_row_mm_seed_off"] - df["corner_row_mm_seed_off"],
                 df["label_col_mm_seed_off"] - df["corner_col_mm_seed_off"])      # the corners themselves
    assert (e <= 6.0).mean() >= 0.8 and e.median() < 3.5       # this subset: 0.89, 2.6 mm; whole share 0.83, 2.7 mm


# ---------------------------------------------------------------- foramina on sagittal T1

SAG = STANDARD_IOP["foramen"]           # rows to the feet, columns to the back
FP = 0.25                               # mm per pixel of the tiny T1 slices


def _t1_slice(n=200, hole_rc=(100, 100), half_h_mm=8.0, half_w_mm=4.0, marrow_rc=None, fat=0.9, marrow=0.8):
    """A tiny parasagittal T1 slice: grey tissue, an upright ellipse of fat (the keyhole, ``half_h_mm`` tall
    and ``half_w_mm`` wide about ``hole_rc``) and optionally a round blob of marrow (a pedicle)."""
    yy, xx = np.mgrid[:n, :n].astype(float)
    img = np.full((n, n), 0.35)
    img[((yy - hole_rc[0]) * FP / half_h_mm) ** 2 + ((xx - hole_rc[1]) * FP / half_w_mm) ** 2 <= 1] = fat
    if marrow_rc is not None:
        img[np.hypot(yy - marrow_rc[0], xx - marrow_rc[1]) * FP <= 5.0] = marrow
    return img


def test_keyhole_is_found_from_a_seed_several_mm_off_and_marked_down_its_height():
    from spinefeat.localize.placement import find_keyhole

    hole, h = (100, 100), 8.0
    img = _t1_slice(hole_rc=hole, half_h_mm=h)
    for seed_mm in ((0, 0), (5, 0), (-4, 4), (0, -7), (6, 6)):
        seed = (hole[0] + seed_mm[0] / FP, hole[1] + seed_mm[1] / FP)
        for share in (0.35, 0.5):
            fit = find_keyhole(img, seed, pixel_spacing_mm=(FP, FP), iop=SAG, root_share=share)
            assert fit is not None, seed_mm
            # the drawn ellipse runs from hole - h to hole + h (rows to the feet): share of the way down. The
            # segmenter's window about a seed off the middle cuts the keyhole's far end: 1.5 mm off from a seed
            # inside the keyhole, 3.5 mm from one outside it that still catches its edge (kept as the seed's own)
            want = (hole[0] + (-h + share * 2 * h) / FP, hole[1])
            inside = (seed_mm[0] / h) ** 2 + (seed_mm[1] / 4.0) ** 2 <= 1
            assert np.hypot(fit.rc[0] - want[0], fit.rc[1] - want[1]) * FP < (1.5 if inside else 3.5), (seed_mm, share)
            assert 0 < fit.confidence <= 1


def test_keyhole_down_follows_the_orientation_tags():
    from spinefeat.localize.placement import find_keyhole

    hole = (100, 100)
    img = _t1_slice(hole_rc=hole)[::-1]                       # rows now run to the head, and the tags say so
    fit = find_keyhole(img, (99.0, 100.0), pixel_spacing_mm=(FP, FP), iop=(0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    assert fit.rc[0] > 99.0 + 1.0 / FP                          # the upper part of the keyhole: larger rows here


def test_no_keyhole_near_a_collapsed_foramen_keeps_the_seed_not_the_marrow_beside_it():
    from spinefeat.localize.placement import find_keyhole

    # no fat at the seed (a collapsed foramen), a pedicle's round marrow 9 mm above it, less bright than fat
    img = _t1_slice(fat=0.35, marrow_rc=(100 - 9 / FP, 100), marrow=0.6)
    assert find_keyhole(img, (100.0, 100.0), pixel_spacing_mm=(FP, FP), iop=SAG) is None
    # as bright as fat and as near, it is taken (round, but the search has nothing better): the confidence says so
    img = _t1_slice(fat=0.35, marrow_rc=(100 - 9 / FP, 100), marrow=0.9)
    assert find_keyhole(img, (100.0, 100.0), pixel_spacing_mm=(FP, FP), iop=SAG).confidence < 0.9
    # the keyhole itself beside the same marrow is preferred to it
    img = _t1_slice(marrow_rc=(100 - 16 / FP, 100))           # 3 mm of tissue between them
    fit = find_keyhole(img, (100 - 6 / FP, 100.0), pixel_spacing_mm=(FP, FP), iop=SAG)
    assert np.hypot(fit.centre_rc[0] - 100, fit.centre_rc[1] - 100) * FP < 2.0      # the marrow is 16 mm off


def test_label_share_is_where_the_label_sits_down_the_keyhole():
    from spinefeat.localize.placement import label_share

    img = _t1_slice(hole_rc=(100, 100), half_h_mm=8.0)
    for share in (0.3, 0.5, 0.7):
        row = 100 + (-8.0 + share * 16.0) / FP
        assert label_share(img, (row, 100.0), pixel_spacing_mm=(FP, FP), iop=SAG) == pytest.approx(share, abs=0.04)
    assert label_share(_t1_slice(fat=0.35), (100.0, 100.0), pixel_spacing_mm=(FP, FP), iop=SAG) is None
