"""The axial recess and sac: anatomical directions on tiny arrays, and their grade signal on real crops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spinefeat.geometry import axial_directions
from spinefeat.segment import measure_recess, segment_axial_sac
from spinefeat.segment.canal import RECESS_DISTANCE_MM, SAC_BEHIND_RECESS, SAC_SEED_OFFSETS_MM, axial_sac_seed
from spinefeat.segment.recess import WALL_REACH_MM, free_space, lateral_wall

#: A fixed subset of the share's axial crops: the studies with the smallest ids (about half the share: with
#: fewer, the spinal rows hold a handful of Severe grades and the CV is noise).
SUBSET_STUDIES = 100


def test_axial_directions_follow_the_orientation_tags():
    back, left = axial_directions((1, 0, 0, 0, 1, 0))          # standard: columns to the left, rows to the back
    assert back == pytest.approx((1, 0)) and left == pytest.approx((0, 1))
    back, left = axial_directions((0, 1, 0, -1, 0, 0))         # turned 90 deg: columns to the back, rows to the right
    assert back == pytest.approx((0, 1)) and left == pytest.approx((-1, 0))
    a = np.radians(20)                                          # oblique in-plane rotation
    back, _ = axial_directions((np.cos(a), np.sin(a), 0, -np.sin(a), np.cos(a), 0))
    assert back == pytest.approx((np.cos(a), np.sin(a)))


def test_sac_seed_lies_behind_the_recess_points():
    ps = (0.5, 0.5)
    seed = axial_sac_seed([(40, 30), (40, 70)], pixel_spacing_mm=ps)       # 20 mm apart
    assert seed == pytest.approx((40 + SAC_BEHIND_RECESS * 20.0 / 0.5, 50))
    # the patient's back towards increasing columns: the seed moves along the columns
    seed = axial_sac_seed([(30, 40), (70, 40)], pixel_spacing_mm=ps, posterior_rc=(0, 1))
    assert seed == pytest.approx((50, 40 + SAC_BEHIND_RECESS * 20.0 / 0.5))
    with pytest.raises(ValueError, match="two recess points"):
        axial_sac_seed([(40, 30)], pixel_spacing_mm=ps)
    # one point: the midline half the typical recess distance medial of it (a left point's is to its right)
    half_px = 0.5 * RECESS_DISTANCE_MM / 0.5
    back_px = SAC_BEHIND_RECESS * RECESS_DISTANCE_MM / 0.5
    assert axial_sac_seed([(40, 70)], pixel_spacing_mm=ps, sides=[1]) == pytest.approx((40 + back_px, 70 - half_px))
    assert axial_sac_seed([(40, 30)], pixel_spacing_mm=ps, sides=[-1]) == pytest.approx((40 + back_px, 30 + half_px))


def test_sac_seed_without_recess_points_is_the_sac_found_near_the_crops_centre():
    from spinefeat.realcheck import sac_seed_without_points

    sp, rows, cols = 0.5, 60, 100
    yy, xx = np.mgrid[:rows, :cols] * sp
    sac = (29.5 + 4 / sp, 49.5 - 2 / sp)                        # 4 mm behind, 2 mm right of the crop's centre
    img = np.where(np.hypot(yy - sac[0] * sp, xx - sac[1] * sp) <= 6.0, 0.9, 0.15)
    assert sac_seed_without_points(img, pixel_spacing_mm=(sp, sp)) == pytest.approx(sac, abs=1.0 / sp)
    # nothing to find: the crop's centre
    assert sac_seed_without_points(np.zeros((rows, cols)), pixel_spacing_mm=(sp, sp)) == ((rows - 1) / 2, (cols - 1) / 2)


def _ellipse(n, sp, a_mm, b_mm, angle_deg, value=1.0, bg=0.1):
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * sp
    t = np.radians(angle_deg)
    u = yy * np.cos(t) + xx * np.sin(t)         # along the rotated "back" axis
    v = -yy * np.sin(t) + xx * np.cos(t)
    img = np.full((n, n), bg)
    img[(u / a_mm) ** 2 + (v / b_mm) ** 2 <= 1] = value
    return img


def test_sac_diameters_follow_anatomy_whatever_the_image_orientation():
    sp, n = 0.25, 160
    ref = segment_axial_sac(_ellipse(n, sp, 5, 8, 0), ((n - 1) / 2,) * 2, pixel_spacing_mm=(sp, sp))
    t = np.radians(35)
    rot = segment_axial_sac(_ellipse(n, sp, 5, 8, 35), ((n - 1) / 2,) * 2, pixel_spacing_mm=(sp, sp),
                            posterior_rc=(np.cos(t), np.sin(t)))
    for seg in (ref, rot):
        m = seg.measurements
        assert m["ap_diameter_mm"] == pytest.approx(10, abs=0.8)        # AP along the patient's back: 2 a
        assert m["transverse_diameter_mm"] == pytest.approx(16, abs=0.8)
        assert m["equivalent_diameter_mm"] == pytest.approx(2 * np.sqrt(5 * 8), abs=0.3)
        assert m["minor_axis_mm"] == pytest.approx(10, abs=0.8)
    # read along the image rows instead, the rotated sac's AP extent is wrong: the direction matters
    wrong = segment_axial_sac(_ellipse(n, sp, 5, 8, 35), ((n - 1) / 2,) * 2, pixel_spacing_mm=(sp, sp))
    assert wrong.measurements["ap_diameter_mm"] > 11.5


def test_sac_without_csf_measures_none():
    """A grey sac (no CSF near the seed) with bright epidural fat 6 mm behind it: area 0, weak; not the fat."""
    sp, n = 0.25, 160
    img = _ellipse(n, sp, 4, 6, 0, value=0.35, bg=0.15)
    img[(n - 1) // 2 + 24:(n - 1) // 2 + 36, (n - 1) // 2 - 8:(n - 1) // 2 + 8] = 1.0
    seg = segment_axial_sac(img, ((n - 1) / 2,) * 2, pixel_spacing_mm=(sp, sp))
    assert seg.quality == "weak" and seg.measurements["area_mm2"] == 0.0
    # the same sac holding CSF is measured
    seg = segment_axial_sac(_ellipse(n, sp, 4, 6, 0, value=0.9, bg=0.15), ((n - 1) / 2,) * 2, pixel_spacing_mm=(sp, sp))
    assert seg.measurements["area_mm2"] == pytest.approx(np.pi * 4 * 6, rel=0.1)


def test_sac_from_several_seeds_is_the_consensus():
    """A seed on a bright speck inside a clump of dark rootlets: one seed measures the speck, the seeds along
    the AP line (most of them in the sac's CSF) the sac, holes filled."""
    sp, n = 0.25, 200
    c = (n - 1) / 2
    r = np.hypot(*((np.mgrid[:n, :n] - c) * sp))
    img = np.where(r <= 6.0, 0.9, 0.15)                       # the sac, 6 mm radius
    img[r <= 2.75] = 0.2                                       # rootlets clumped around the seed
    img[r <= 0.5] = 1.0                                        # a bright speck at the seed
    one = segment_axial_sac(img, (c, c), pixel_spacing_mm=(sp, sp))
    assert one.measurements["area_mm2"] < 5 and one.quality == "weak"
    seg = segment_axial_sac(img, (c, c), pixel_spacing_mm=(sp, sp), seed_offsets_mm=SAC_SEED_OFFSETS_MM)
    assert seg.quality == "found" and seg.measurements["area_mm2"] == pytest.approx(np.pi * 36, rel=0.05)
    # the mask's crop is centred on the given seed: its centroid is the sac's centre
    rows, cols = np.nonzero(seg.mask)
    centre = (seg.origin_rc[0] + rows.mean() * seg.spacing_mm / sp, seg.origin_rc[1] + cols.mean() * seg.spacing_mm / sp)
    assert centre == pytest.approx((c, c), abs=1.0)
    # a clean sac measures the same from one seed or from several
    clean = np.where(r <= 6.0, 0.9, 0.15)
    a1 = segment_axial_sac(clean, (c, c), pixel_spacing_mm=(sp, sp)).measurements["area_mm2"]
    a5 = segment_axial_sac(clean, (c, c), pixel_spacing_mm=(sp, sp), seed_offsets_mm=SAC_SEED_OFFSETS_MM)
    assert a5.measurements["area_mm2"] == pytest.approx(a1, rel=0.02)


def test_sac_seed_offsets_across_follow_the_patients_back_turned_by_90_degrees():
    """An offset (0, +d) moves the seed d mm across: ``posterior_rc`` turned by +90 deg, in mm whatever the
    pixel spacing; a seed moved away from the sac does not find it."""
    sp = (0.5, 0.25)                                         # rows 0.5 mm, columns 0.25 mm
    rr, cc = np.mgrid[:120, :240]
    centre = (60.0, 120.0)
    for back, across in (((1.0, 0.0), (0.0, 1.0)), ((0.0, 1.0), (-1.0, 0.0))):
        # a 4 mm sac 9 mm across from the seed (beyond the 4 mm search), a dim background
        sac = (centre[0] + 9 * across[0] / sp[0], centre[1] + 9 * across[1] / sp[1])
        img = np.where(np.hypot((rr - sac[0]) * sp[0], (cc - sac[1]) * sp[1]) <= 4.0, 1.0, 0.1)
        near = segment_axial_sac(img, centre, pixel_spacing_mm=sp, posterior_rc=back, seed_offsets_mm=((0.0, 9.0),))
        assert near.quality == "found"
        assert near.measurements["area_mm2"] == pytest.approx(np.pi * 16, rel=0.05)
        far = segment_axial_sac(img, centre, pixel_spacing_mm=sp, posterior_rc=back, seed_offsets_mm=((0.0, -9.0),))
        assert far.measurements["area_mm2"] == 0 or far.quality == "failed"


def test_sac_widths_tell_a_triangle_with_its_apex_at_the_back_from_an_oval_whatever_the_orientation():
    """A triangle pointing to the patient's back (the posterior fat's shape) is wide at its front and narrow at
    its back; an ellipse is widest in its middle and the same at both ends. Widths are read across the
    patient's AP axis from the tags: the same numbers with the image turned by 90 deg."""
    sp, n = 0.25, 200
    yy, xx = np.mgrid[:n, :n].astype(float)
    # apex 20 mm behind a 16 mm wide base: width (mm) at depth d from the front is 16 (1 - d / 20)
    tri = np.where((yy >= 60) & (yy <= 140) & (np.abs(xx - 100) * sp <= 8 * (140 - yy) / 80), 1.0, 0.1)
    oval = np.where(((yy - 100) * sp / 7) ** 2 + ((xx - 100) * sp / 9) ** 2 <= 1, 1.0, 0.1)
    for back, turn in (((1.0, 0.0), lambda a: a), ((0.0, 1.0), lambda a: a.T)):
        seed = (90.0, 100.0) if back == (1.0, 0.0) else (100.0, 90.0)
        t = segment_axial_sac(turn(tri), seed, pixel_spacing_mm=(sp, sp), posterior_rc=back).measurements
        o = segment_axial_sac(turn(oval), seed, pixel_spacing_mm=(sp, sp), posterior_rc=back).measurements
        assert t["width_front_mm"] == pytest.approx(16 * 0.8, abs=1.0)
        assert t["width_middle_mm"] == pytest.approx(16 * 0.5, abs=1.0)
        assert t["width_back_mm"] == pytest.approx(16 * 0.2, abs=1.0)
        assert t["back_to_front_width"] == pytest.approx(0.25, abs=0.1)
        # ellipse, semi-axes 7 mm (AP) and 9 mm: width 18 sqrt(1 - 0.6^2) = 14.4 mm at 0.2 and 0.8 of its depth
        assert o["width_middle_mm"] == pytest.approx(18, abs=1.0)
        assert o["width_front_mm"] == pytest.approx(14.4, abs=1.0) and o["width_back_mm"] == pytest.approx(14.4, abs=1.0)
        assert o["back_to_front_width"] == pytest.approx(1.0, abs=0.1)


def test_free_space_counts_the_space_lateral_of_the_root():
    sp, n = 0.25, 64
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * sp
    r = np.hypot(yy, xx)
    patent = np.where((r > 1.0) & (r < 4.0), 1.0, 0.1)        # CSF/fat 1-4 mm around a dark root
    m = free_space(patent, posterior_rc=(1, 0), lateral_rc=(0, 1), spacing_mm=sp)
    assert m["free_space_mm"] == pytest.approx(3.0, abs=0.5)
    # shut: bright only medial of the point (the sac's CSF): nothing lateral, front or back counts
    shut = np.where(xx < -0.5, 1.0, 0.1)
    m = free_space(shut, posterior_rc=(1, 0), lateral_rc=(0, 1), spacing_mm=sp)
    assert m["free_space_lateral_mm"] < 0.3 and m["free_space_mm"] < 0.8
    assert m["free_space_medial_mm"] > 4.5                     # the sac's side is read on its own


def test_lateral_wall_is_the_distance_to_the_dark_facet_and_ligament():
    """Bright space (0.8) up to a dark wall (0) at 4 mm lateral of the point, whatever the orientation: after
    the 0.5 mm Gaussian the first pixel under 0.2 lies 0.674 sigma (0.34 mm) beyond the edge."""
    sp, n = 0.25, 96
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * sp
    ring = np.where(np.hypot(yy, xx) < 4.0, 0.8, 0.0)           # the wall all round, 4 mm away
    m = lateral_wall(ring, posterior_rc=(1, 0), lateral_rc=(0, 1), spacing_mm=sp)
    for k in ("wall_mm", "wall_front_mm", "wall_lateral_mm", "wall_back_mm"):
        assert m[k] == pytest.approx(4.34, abs=0.3)
    # a wall 2 mm lateral only (a facet against the root), the patient's back along the columns: the lateral
    # rays meet it at 2 mm / cos(angle), the ray straight back (parallel to it) never does
    facet = np.where(yy < 2.0, 0.8, 0.0)                         # lateral = +rows, back = +columns
    m = lateral_wall(facet, posterior_rc=(0, 1), lateral_rc=(1, 0), spacing_mm=sp)
    assert m["wall_lateral_mm"] == pytest.approx((2.34 + 2.34 / np.cos(np.radians(30))) / 2, abs=0.3)
    assert m["wall_back_mm"] == pytest.approx((2.34 / np.cos(np.radians(60)) + WALL_REACH_MM) / 2, abs=0.3)
    # the same wall on the medial side: nothing lateral is dark, every ray reads the reach
    m = lateral_wall(facet, posterior_rc=(0, 1), lateral_rc=(-1, 0), spacing_mm=sp)
    assert m["wall_mm"] == pytest.approx(WALL_REACH_MM)


def test_recess_depth_along_the_patients_back():
    sp, n = 0.4, 100
    img = _ellipse(n, sp, 2.5, 4, 90, value=0.7, bg=0.15)      # 5 mm deep along image columns, 8 mm along rows
    img[31:37, 31:37] = 1.0
    seg = measure_recess(img, ((n - 1) / 2,) * 2, pixel_spacing_mm=(sp, sp), posterior_rc=(0, 1), lateral_rc=(1, 0))
    assert seg.measurements["depth_mm"] == pytest.approx(5.0, abs=0.8)
    assert seg.measurements["lateral_extent_mm"] == pytest.approx(8.0, abs=0.8)


def test_recess_measured_around_the_point():
    """A round recess space of radius 4 mm, the point at its centre: the AP chord is 8 mm through the point
    and the points 3 mm in front and behind, 2 sqrt(4^2 - 3^2) mm through the points 3 mm lateral and medial."""
    from spinefeat.segment.recess import RECESS_AROUND_MM

    sp, n = 0.25, 200
    r = np.hypot(*((np.mgrid[:n, :n] - (n - 1) / 2) * sp))
    img = np.where(r <= 4.0, 0.9, 0.1)
    at = measure_recess(img, ((n - 1) / 2,) * 2, pixel_spacing_mm=(sp, sp))
    assert at.measurements["depth_mm"] == pytest.approx(8.0, abs=0.3)
    seg = measure_recess(img, ((n - 1) / 2,) * 2, pixel_spacing_mm=(sp, sp), around_mm=RECESS_AROUND_MM)
    side = 2 * np.sqrt(16 - RECESS_AROUND_MM ** 2)
    assert seg.measurements["depth_mm"] == pytest.approx((3 * 8.0 + 2 * side) / 5, abs=0.3)
    assert seg.quality == at.quality and np.array_equal(seg.mask, at.mask)      # the point's own mask


# ---------------------------------------------------------------- real crops (the share)

@pytest.fixture(scope="module")
def axial_subset(shared, tmp_path_factory):
    """real_rsna/axial_t2_crops restricted to its first studies; the images are linked, not copied."""
    src = shared / "real_rsna" / "axial_t2_crops"
    if not (src / "crops.csv").is_file():
        pytest.skip(f"real axial crops not found at {src}")
    out = tmp_path_factory.mktemp("axial") / "axial_t2_crops"
    out.mkdir()
    crops = pd.read_csv(src / "crops.csv")
    keep = sorted(crops["study_id"].unique())[:SUBSET_STUDIES]
    for name in ("crops.csv", "points.csv", "spinal_grades.csv"):
        df = pd.read_csv(src / name)
        df[df["study_id"].isin(keep)].to_csv(out / name, index=False)
    (out / "images").symlink_to(src / "images")
    return out


@pytest.fixture(scope="module")
def axial_rows(axial_subset):
    from spinefeat.realcheck import axial_tables

    return axial_tables(axial_subset, jobs=2)


def test_real_recess_depth_and_sac_area_carry_the_grade(axial_rows):
    sub, spi = axial_rows
    sub, spi = sub[sub.severity >= 0], spi[spi.severity >= 0]
    # spinal rows where a crop holds one recess point too (the midline placed from it)
    assert len(sub) > 500 and len(spi) > 400 and (spi["diagnostics_seed_points"] == 1).sum() > 100
    # and where it holds none (the sac found from the crop's centre): 115 of 488 rows on this subset
    assert (spi["diagnostics_seed_points"] == 0).sum() > 80
    # On the whole share: recess depth -0.58, free space -0.64, sac area -0.47 (README); on this subset
    # -0.62, -0.64 and -0.46 (one point and one seed: -0.48, -0.58 and -0.42).
    # The recess's dark wall (facet, ligamentum flavum) closes in with the grade: -0.64 on the share, -0.65 on
    # this subset.
    rho = {c: sub[c].corr(sub["severity"], method="spearman")
           for c in ("recess_shape_depth_mm", "recess_shape_free_space_mm", "recess_shape_wall_mm")}
    assert rho["recess_shape_depth_mm"] < -0.5
    assert rho["recess_shape_free_space_mm"] < -0.5
    assert rho["recess_shape_wall_mm"] < -0.5
    assert spi["canal_ax_shape_area_mm2"].corr(spi["severity"], method="spearman") < -0.38
    # the sac's CSF area (rootlets and grey tissue inside it left out), the spinal term's main measurement:
    # -0.47 on this subset as the sac area; -0.473 on the share (-0.486 / -0.457 on its halves) against -0.463
    assert spi["canal_ax_shape_csf_area_mm2"].corr(spi["severity"], method="spearman") < -0.42
    # the sac's width in its middle narrows with the grade too (-0.44 on this subset, -0.47 on the share's
    # development half)
    assert spi["canal_ax_shape_width_middle_mm"].corr(spi["severity"], method="spearman") < -0.35


def test_real_axial_cv_beats_the_constant(axial_rows):
    from spinefeat.realcheck import evaluate_term

    sub, spi = axial_rows
    res_sub, _ = evaluate_term(sub, "subarticular", jobs=2)
    res_spi, _ = evaluate_term(spi, "spinal", jobs=2)
    # Margins: on this subset the gaps to the constant are 0.40 (subarticular), 0.33 (spinal) and 0.38
    # (subarticular, mm measurements alone).
    assert res_sub["cv"] < res_sub["constant"] - 0.3
    assert res_spi["cv"] < res_spi["constant"] - 0.2
    assert res_sub["measurements_only"] < res_sub["constant"] - 0.25


def test_development_half_is_a_fixed_rule_on_the_id():
    from spinefeat.realcheck import development_half

    ids = np.arange(1_000_000, 1_002_000) * 7919
    dev = development_half(ids)
    assert 0.45 < dev.mean() < 0.55                                   # about half
    assert np.array_equal(development_half(ids[::-1]), dev[::-1])     # per id, not by position
    assert np.array_equal(development_half(ids.astype(float)), dev)   # ids read as floats land the same
