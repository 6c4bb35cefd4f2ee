import numpy as np
import pandas as pd
import pytest

from spinefeat import dataset as ds
from spinefeat.dicom import load_series
from spinefeat.geometry import project_to_stacks
from spinefeat.segment import FAILED, FOUND, segment_axial_sac
from spinefeat.segment.canal import SAC_SEED_OFFSETS_MM


def mm_grid(img, spacing):
    """Row and column positions (mm) of an image's pixels from its centre."""
    n = img.shape[0]
    return (np.mgrid[:n, :n] - (n - 1) / 2) * spacing


def disc_image(r_mm, spacing, *, size_mm=80, holes=False, noise=0.0, seed=0):
    n = int(size_mm / spacing)
    yy, xx = mm_grid(np.empty((n, n)), spacing)
    img = np.where(np.hypot(yy, xx) <= r_mm, 1.0, 0.2)
    if holes:   # dark rootlets inside the sac
        for dy, dx in [(-2, -3), (1, 2), (3, -1), (0, 0), (-3, 3)]:
            img[np.hypot(yy - dy, xx - dx) <= 0.7] = 0.3
    if noise:
        img = img + np.random.default_rng(seed).normal(0, noise, img.shape)
    return img, ((n - 1) / 2, (n - 1) / 2)


@pytest.mark.parametrize("spacing", [0.3, 0.55, 0.9])
@pytest.mark.parametrize("r_mm", [4.0, 7.0])
def test_disc_area_is_pi_r2_whatever_the_spacing(spacing, r_mm):
    img, seed = disc_image(r_mm, spacing)
    seg = segment_axial_sac(img, seed, pixel_spacing_mm=(spacing, spacing))
    assert seg.quality == FOUND
    # a quarter-pixel edge error on a pixel-quantised disc: relative area error ~ 0.5 * spacing / r
    assert seg.measurements["area_mm2"] == pytest.approx(np.pi * r_mm ** 2, rel=0.04 + 0.5 * spacing / r_mm)
    assert seg.measurements["ap_diameter_mm"] == pytest.approx(2 * r_mm, abs=max(1.5 * spacing, 0.5))
    assert seg.measurements["transverse_diameter_mm"] == pytest.approx(2 * r_mm, abs=max(1.5 * spacing, 0.5))


def test_anisotropic_pixels_measure_in_mm():
    n = 160
    yy, xx = np.mgrid[:n, :n]
    # ellipse that is a circle of r=8 mm in mm space with 0.4 mm rows and 0.8 mm cols
    img = np.where(((yy - 80) * 0.4) ** 2 + ((xx - 80) * 0.8) ** 2 <= 64, 1.0, 0.1)
    seg = segment_axial_sac(img, (80, 80), pixel_spacing_mm=(0.4, 0.8))
    assert seg.measurements["area_mm2"] == pytest.approx(np.pi * 64, rel=0.05)


def test_rootlet_holes_are_filled_and_counted_as_not_csf():
    img, seed = disc_image(7.0, 0.4, holes=True, noise=0.03)
    seg = segment_axial_sac(img, seed, pixel_spacing_mm=(0.4, 0.4))
    assert seg.measurements["area_mm2"] == pytest.approx(np.pi * 49, rel=0.06)
    assert 0.85 < seg.measurements["csf_fraction"] < 0.99


def test_csf_area_leaves_out_a_grey_clump_the_filled_sac_keeps():
    """A grey clump of rootlets (r 2.5 mm) inside a sac of r 7 mm: the sac's area is the whole disc (its holes
    filled), its CSF area is the disc less the clump, from the seeds around the seed too."""
    img, seed = disc_image(7.0, 0.4, noise=0.02)
    yy, xx = mm_grid(img, 0.4)
    img[np.hypot(yy - 2.0, xx) <= 2.5] = 0.4
    for offsets in ((0.0,), SAC_SEED_OFFSETS_MM):
        m = segment_axial_sac(img, seed, pixel_spacing_mm=(0.4, 0.4), seed_offsets_mm=offsets).measurements
        assert m["area_mm2"] == pytest.approx(np.pi * 49, rel=0.06)
        assert m["csf_area_mm2"] == pytest.approx(np.pi * (49 - 2.5 ** 2), rel=0.05)


def test_seed_chooses_the_component_not_the_brightest_blob():
    img, seed = disc_image(5.0, 0.5, size_mm=120)
    n = img.shape[0]
    yy, xx = np.mgrid[:n, :n]
    img[np.hypot(yy - 20, xx - 20) < 16] = 1.0     # a bigger bright blob far away (fat)
    seg = segment_axial_sac(img, seed, pixel_spacing_mm=(0.5, 0.5))
    assert seg.measurements["area_mm2"] == pytest.approx(np.pi * 25, rel=0.08)


def test_sac_split_by_a_rootlet_clump_is_one_sac():
    """A dark band of clumped rootlets (1.5 mm) across the sac cuts its CSF in two: both halves are the sac."""
    img, seed = disc_image(7.0, 0.4, noise=0.02)
    yy, xx = mm_grid(img, 0.4)
    img[(np.abs(yy - 1.0) < 0.75) & (np.hypot(yy, xx) <= 7.0)] = 0.3
    seg = segment_axial_sac(img, seed, pixel_spacing_mm=(0.4, 0.4))
    assert seg.measurements["area_mm2"] == pytest.approx(np.pi * 49, rel=0.06)


def test_bright_structure_beyond_the_join_distance_stays_out():
    img, seed = disc_image(5.0, 0.5, size_mm=80)
    yy, xx = mm_grid(img, 0.5)
    img[(np.abs(yy) < 3) & (xx > 9) & (xx < 14)] = 1.0     # fat 4 mm lateral to the sac's edge
    seg = segment_axial_sac(img, seed, pixel_spacing_mm=(0.5, 0.5))
    assert seg.measurements["area_mm2"] == pytest.approx(np.pi * 25, rel=0.08)


@pytest.mark.parametrize("value", [0.0, 1.0, 4095.0])
def test_blank_crop_is_flagged_not_raised(value):
    seg = segment_axial_sac(np.full((100, 100), value), (50, 50), pixel_spacing_mm=(0.5, 0.5))
    assert seg.quality == FAILED and np.isnan(seg.measurements["area_mm2"])


def test_no_bright_structure_near_seed_fails():
    img, _ = disc_image(4.0, 0.5, size_mm=120)
    seg = segment_axial_sac(img, (5, 5), pixel_spacing_mm=(0.5, 0.5), crop_size_mm=20)
    assert seg.quality == FAILED


def test_phantom_canal_area_matches_truth(cohort):
    """End to end on the phantoms: spinal point -> axial slice -> sac area vs the truth sidecar."""
    coords = ds.read_coordinates(cohort / "train_label_coordinates.csv")
    truth = pd.read_csv(cohort / "truth" / "targets.csv").set_index(["study_id", "condition", "level"])
    ser = ds.read_series_descriptions(cohort / "train_series_descriptions.csv")
    errors, areas, grades = [], [], []
    for study_id, grp in coords[coords.condition == "spinal_canal_stenosis"].groupby("study_id"):
        (sag,) = load_series(cohort / "train_images" / str(study_id) / str(grp.series_id.iloc[0]))
        ax_id = ser[(ser.study_id == study_id) & (ser.series_description == "Axial T2")].series_id.iloc[0]
        stacks = load_series(cohort / "train_images" / str(study_id) / str(ax_id))
        for rec in grp.itertuples():
            p = sag.geometry.to_patient(sag.slice_of_instance(rec.instance_number), rec.y, rec.x)
            pr = project_to_stacks(p, [s.geometry for s in stacks], frame_of_reference=sag.geometry.frame_of_reference)
            st = stacks[pr["stack"]]
            seg = segment_axial_sac(st.pixels[pr["slice"]], (pr["row"], pr["col"]),
                                    pixel_spacing_mm=st.geometry.pixel_spacing_mm)
            t = truth.loc[(study_id, "spinal_canal_stenosis", rec.level)]
            errors.append(abs(seg.measurements["area_mm2"] / t.canal_area_mm2 - 1))
            areas.append(seg.measurements["area_mm2"])
            grades.append(t.true_grade)
    assert len(errors) >= 25
    assert np.median(errors) < 0.15


def test_sagittal_band_width_is_w():
    # a vertical CSF band 9 mm wide (columns run antero-posterior on a sagittal slice)
    sp = 0.5
    img = np.full((200, 200), 0.2)
    img[:, 100 - 9:100 + 9] = 1.0
    from spinefeat.segment import measure_sagittal_canal
    seg = measure_sagittal_canal(img, (100, 100), pixel_spacing_mm=(sp, sp))
    assert seg.measurements["ap_width_mm"] == pytest.approx(9.0, abs=0.5)
    assert seg.measurements["width_ratio"] == pytest.approx(1.0, abs=0.05)


def test_sagittal_narrowing_gives_width_ratio():
    sp = 0.5
    img = np.full((200, 200), 0.2)
    img[:, 91:109] = 1.0                    # 9 mm everywhere ...
    img[95:106, 91:109] = 0.2
    img[95:106, 96:104] = 1.0               # ... 4 mm at the disc
    from spinefeat.segment import measure_sagittal_canal
    seg = measure_sagittal_canal(img, (100, 100), pixel_spacing_mm=(sp, sp))
    assert seg.measurements["ap_width_mm"] == pytest.approx(4.0, abs=0.6)
    assert seg.measurements["width_ratio"] == pytest.approx(4 / 9, abs=0.08)


def keyhole(sp, h=8.0, w=3.5, root_r=2.0, fat=0.9, bg=0.3):
    n = int(40 / sp)
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * sp
    img = np.full((n, n), bg)
    img[(yy / h) ** 2 + (xx / w) ** 2 <= 1] = fat
    img[np.hypot(yy + 0.3 * h, xx) <= root_r] = 0.36       # the root in the upper part, splitting the fat
    return img, ((n - 1) / 2, (n - 1) / 2)


@pytest.mark.parametrize("sp", [0.4, 0.7])
def test_foramen_keyhole_area_and_root(sp):
    from spinefeat.segment import segment_foramen
    img, seed = keyhole(sp)
    seg = segment_foramen(img, seed, pixel_spacing_mm=(sp, sp), series_high=0.9)
    assert seg.quality == FOUND
    assert seg.measurements["area_mm2"] == pytest.approx(np.pi * 8 * 3.5, rel=0.08)
    assert seg.measurements["height_mm"] == pytest.approx(16, abs=1.5)
    assert seg.measurements["root_area_mm2"] == pytest.approx(np.pi * 4, rel=0.35)
    assert seg.measurements["n_directions_lost"] <= 2


def test_foramen_without_fat_is_a_finding():
    from spinefeat.segment import segment_foramen
    img, seed = keyhole(0.5, fat=0.3, bg=0.3)
    img[0, 0] = 1.0     # the series' fat is elsewhere
    seg = segment_foramen(img, seed, pixel_spacing_mm=(0.5, 0.5), series_high=1.0)
    assert seg.measurements["area_mm2"] == 0 and seg.measurements["n_directions_lost"] == 4


def test_recess_depth_and_obliteration():
    from spinefeat.segment import measure_recess
    sp = 0.4
    n = 100
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * sp
    img = np.full((n, n), 0.15)
    img[(np.abs(yy) <= 2.5) & (np.abs(xx) <= 4)] = 0.7       # recess fat 5 mm deep
    img[np.hypot(yy, xx) <= 1.0] = 0.3                        # the root at the point
    img[31:37, 31:37] = 1.0                                   # sac CSF 6 mm away, the crop's bright reference
    seg = measure_recess(img, ((n - 1) / 2, (n - 1) / 2), pixel_spacing_mm=(sp, sp))
    assert seg.measurements["depth_mm"] == pytest.approx(5.0, abs=0.8)
    closed = np.where(img == 0.7, 0.15, img)
    seg = measure_recess(closed, ((n - 1) / 2, (n - 1) / 2), pixel_spacing_mm=(sp, sp))
    assert seg.measurements["depth_mm"] == 0 and "obliterated" in seg.notes[0]


def test_foramen_with_fat_only_away_from_the_root_is_a_finding():
    """Fat in the keyhole's ellipse but none within 4 mm of the point: the fat around the root is lost
    (area 0, four directions lost), not a failed measurement."""
    from spinefeat.segment import segment_foramen
    sp = 0.5
    n = 80
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * sp
    img = np.full((n, n), 0.3)
    img[np.hypot(yy, xx) <= 4.0] = 0.5              # grey tissue around the point: not fat, not empty
    img[np.hypot(yy - 8.0, xx) <= 2.5] = 1.0        # a fat piece 5.5-10.5 mm below the point
    seg = segment_foramen(img, ((n - 1) / 2, (n - 1) / 2), pixel_spacing_mm=(sp, sp), series_high=1.0)
    assert seg.quality == FOUND and seg.notes == ["no fat near the seed"]
    assert seg.measurements["fat_area_mm2"] == 0 and seg.measurements["n_directions_lost"] == 4
    assert seg.measurements["fat_within_mm2"] == pytest.approx(np.pi * 2.5 ** 2, rel=0.15)


def test_foramen_without_sizes_measures_the_same_keyhole():
    """``sizes=False`` (the keyhole search) gives the full call's mask, quality, notes, area, extent and fat level,
    and leaves the rest NaN: on keyholes of several sizes, seeds off the centre, a transposed slice with its
    orientation tags, with and without a series fat level."""
    from spinefeat.segment import segment_foramen

    kept = ("area_mm2", "height_mm", "width_mm", "fat_level")
    checked = 0
    for sp, h, w, off in ((0.4, 8.0, 3.5, (0, 0)), (0.7, 6.0, 4.0, (3, -2)), (0.5, 9.0, 3.0, (-4, 1))):
        img, seed = keyhole(sp, h=h, w=w)
        seed = (seed[0] + off[0], seed[1] + off[1])
        # the transposed slice's columns run to the feet and its rows to the back: the same keyhole
        for image, s, iop in ((img, seed, None), (img.T, seed[::-1], (0.0, 0.0, -1.0, 0.0, 1.0, 0.0))):
            for high in (None, 0.9):
                full = segment_foramen(image, s, pixel_spacing_mm=(sp, sp), series_high=high, iop=iop)
                part = segment_foramen(image, s, pixel_spacing_mm=(sp, sp), series_high=high, iop=iop, sizes=False)
                assert part.quality == full.quality == FOUND and part.notes == full.notes
                assert np.array_equal(part.mask, full.mask) and part.origin_rc == full.origin_rc
                for k in full.measurements:
                    if k in kept:
                        assert part.measurements[k] == full.measurements[k] or (
                            np.isnan(part.measurements[k]) and np.isnan(full.measurements[k])), k
                    else:
                        assert np.isnan(part.measurements[k]), k
                checked += int(np.isfinite(full.measurements["root_area_mm2"]))
    assert checked >= 6
