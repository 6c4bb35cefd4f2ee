import numpy as np
import pytest

from spinefeat import synth
from spinefeat.dataset import LEVELS
from spinefeat.geometry import project_to_stacks
from spinefeat.localize import chain, csf_column, disc_centre_mm, fit_canal, middle_of_run, midline_offsets_mm

GAPS = np.array([[35.0, 3.0]] * 4)


def _logp(s, peaks, *, width=2.0, floor=-12.0):
    """(n, 5) log-probabilities with a peak per level at the given positions (None = no candidate)."""
    out = np.full((len(s), 5), floor)
    for lv, pos in enumerate(peaks):
        for p in ([] if pos is None else np.atleast_1d(pos)):
            out[:, lv] = np.maximum(out[:, lv], -0.5 * ((s - p) / width) ** 2)
    return out


S = np.arange(0.0, 220.0, 1.0)


def test_chain_finds_the_five_peaks():
    idx, _ = chain(_logp(S, [20, 55, 90, 125, 160]), S, GAPS)
    assert S[idx].tolist() == [20, 55, 90, 125, 160]


def test_missing_candidate_is_bridged_not_skipped():
    idx, _ = chain(_logp(S, [20, 55, None, 125, 160]), S, GAPS)
    assert np.all(np.diff(S[idx]) > 0) and len(set(idx)) == 5
    assert abs(S[idx][2] - 90) <= 6        # placed by the spacing prior


def test_extra_candidate_never_doubles_a_level():
    # a second, equally strong L2/L3 candidate 15 mm below the true one, and a spurious L1/L2 far below
    idx, _ = chain(_logp(S, [[20, 180], [55, 70], 90, 125, 160]), S, GAPS)
    assert S[idx].tolist() == [20, 55, 90, 125, 160]


def test_levels_are_always_ordered_and_apart_even_on_noise():
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx, _ = chain(rng.normal(-3, 2, (len(S), 5)), S, GAPS)
        assert np.all(np.diff(S[idx]) >= 0.5 * GAPS[:, 0].min())


@pytest.mark.parametrize("want_per_disc", [False, True])
def test_spinal_point_projects_to_its_disc_on_both_axial_layouts(want_per_disc):
    """Draw studies until the axial layout wanted appears; every spinal point lands within half a spacing."""
    for index in range(40):
        rng, latents, ph = synth.draw_study(5, index)
        plans = synth.plan_study(rng, ph, "1.2.3")
        stacks = plans["Axial T2"].stacks
        if (len(stacks) > 1) == want_per_disc:
            break
    else:
        pytest.fail("layout not drawn")
    for (cond, lv), xyz in synth.label_points(ph).items():
        if cond != "spinal_canal_stenosis":
            continue
        pr = project_to_stacks(xyz, stacks, frame_of_reference=stacks[0].frame_of_reference)
        geo = stacks[pr["stack"]]
        assert pr["in_image"] and abs(pr["distance_mm"]) <= geo.slice_spacing_mm / 2 + 1e-6
        if want_per_disc:
            assert pr["stack"] == LEVELS.index(lv)      # per-disc stacks are written in level order


def test_localize_cli_finds_points_near_the_truth(trained, cohort, tmp_path):
    """Trained on 6 phantoms only, so the bar is low; the 300-study numbers are in the closing note."""
    from typer.testing import CliRunner

    from spinefeat.cli import app

    out = tmp_path / "coords.csv"
    res = CliRunner().invoke(app, ["localize", str(cohort), "--models", str(trained), "--out", str(out)])
    assert res.exit_code == 0, res.output
    import pandas as pd

    pts = pd.read_csv(out)
    assert set(pts.columns) >= {"study_id", "series_id", "instance_number", "condition", "level", "x", "y", "confidence"}
    # every study gets its five spinal points, ordered top to bottom, on the same or neighbouring slices
    for _, g in pts[pts.condition == "spinal_canal_stenosis"].groupby("study_id"):
        assert len(g) == 5 and np.abs(np.diff(g.sort_values("level").instance_number)).max() <= 1
        assert g.sort_values("level").y.is_monotonic_increasing or g.sort_values("level").y.is_monotonic_decreasing
    # near the truth, in patient mm: each predicted pixel through its file's own header, against the
    # phantom's true 3-D point (independent of check-localize's arithmetic)
    import pydicom

    from spinefeat.geometry import pixel_to_patient

    true = pd.read_csv(cohort / "truth" / "coordinates_mm.csv").set_index(["study_id", "condition", "level"]).sort_index()
    err = {}
    for r in pts.itertuples():
        h = pydicom.dcmread(cohort / "test_images" / str(r.study_id) / str(r.series_id) / f"{r.instance_number}.dcm",
                            stop_before_pixels=True)
        p = pixel_to_patient(r.y, r.x, [float(v) for v in h.ImagePositionPatient],
                             [float(v) for v in h.ImageOrientationPatient], [float(v) for v in h.PixelSpacing])
        t = true.loc[(r.study_id, r.condition, r.level), ["x_mm", "y_mm", "z_mm"]].to_numpy(float)
        err.setdefault(r.condition.split("_")[-2], []).append(float(np.linalg.norm(p - t)))
        if r.condition == "spinal_canal_stenosis":     # nearer its own level's true point than any other's
            others = true.loc[(r.study_id, r.condition)].drop(index=r.level)[["x_mm", "y_mm", "z_mm"]].to_numpy(float)
            assert np.linalg.norm(others - p, axis=1).min() > err["canal"][-1], (r.study_id, r.level)
    assert len(err["canal"]) == 10 and np.median(err["canal"]) < 5.0
    assert len(err["foraminal"]) >= 15 and np.median(err["foraminal"]) < 8.0
    res = CliRunner().invoke(app, ["check-localize", str(out), str(cohort / "truth" / "test_label_coordinates.csv"),
                                   str(cohort), "--overlays", str(tmp_path / "ov"), "--studies", "1"])
    assert res.exit_code == 0, res.output
    assert "spinal_canal_stenosis" in res.output
    (png,) = list((tmp_path / "ov").glob("*_points.png"))
    import cv2

    sheet = cv2.imread(str(png))
    assert sheet.shape == (640, 1280, 3)                 # 2 x 4 tiles: sagittal T2, T1 left/right, 5 axial
    b, g, r = (sheet[..., i].astype(int) for i in range(3))
    assert ((r > 200) & (g < 80) & (b < 80)).sum() > 50   # predicted points drawn (red)
    assert ((g > 180) & (r < 100) & (b < 100)).sum() > 50  # true points drawn (green)


def test_midline_follows_a_tilted_plane_and_ignores_a_missegmented_level():
    t = np.array([0.0, 35.0, 70.0, 105.0, 140.0])
    truth = 1.0 + 0.05 * t                          # a 3 degree tilt: 7 mm across the lumbar spine
    per_level = {i: float(truth[i]) for i in range(5)}
    per_level[2] += 6.0                             # one sac segmented on the wrong blob
    np.testing.assert_allclose(midline_offsets_mm(per_level, t, 0.0), truth, atol=1e-6)


def test_midline_with_few_or_no_axial_estimates():
    t = np.array([0.0, 35.0, 70.0, 105.0, 140.0])
    np.testing.assert_allclose(midline_offsets_mm({1: 2.0, 3: 4.0}, t, 9.0), 3.0)     # median of two
    np.testing.assert_allclose(midline_offsets_mm({}, t, 9.0), 9.0)                   # the sagittal estimate


def test_disc_centre_is_the_middle_of_the_plateau_not_its_argmax():
    s = np.arange(0.0, 40.0)
    p = np.where(np.abs(s - 20.4) <= 2.5, 0.8, 0.01)
    p[18] = 0.9                                     # argmax off-centre
    assert abs(disc_centre_mm(p, s, 18) - 20.4) < 0.6


POS = np.arange(9) * 4.5                            # nine slices 4.5 mm apart


def _areas(found: dict) -> np.ndarray:
    a = np.full(9, np.nan)
    for j, v in found.items():
        a[j] = v
    return a


def test_foramen_slice_is_the_middle_of_an_odd_run():
    # the prior falls on slice 4, the keyhole is seen on 4, 5, 6: its middle is 5
    assert middle_of_run(_areas({4: 80, 5: 85, 6: 82}), POS, 4, POS[4]) == 5


def test_foramen_slice_even_run_ties_go_to_the_prior():
    assert middle_of_run(_areas({3: 80, 4: 82}), POS, 4, POS[4] - 1.0) == 4
    assert middle_of_run(_areas({3: 80, 4: 82}), POS, 3, POS[3] + 1.0) == 3


def test_foramen_run_stops_at_the_canal_fat_and_needs_a_keyhole_on_the_prior():
    # slice 3 shows a much larger bright region (the canal's fat, medially): not part of the run
    assert middle_of_run(_areas({3: 300, 4: 80, 5: 82, 6: 79}), POS, 4, POS[4]) == 5
    # nothing on the prior's slice: stay there rather than jump to a neighbour's fat
    assert middle_of_run(_areas({3: 90, 5: 85}), POS, 4, POS[4]) == 4


def _column_image(break_rows=(), n=400, px=0.7):
    """A sagittal image with a curved bright CSF column (lordosis), broken where asked."""
    img = np.full((n, n), 0.2)
    rows = np.arange(40, 360)
    cols = 200 + 60 * ((rows - 200) / 160.0) ** 2          # bends 60 px (42 mm) at the ends
    for r, c in zip(rows, cols):
        img[r, int(c) - 5:int(c) + 6] = 1.0
    for a, b in break_rows:
        img[a:b] = 0.2
    return img, rows, cols, px


def test_csf_column_joins_pieces_broken_by_a_tight_canal_along_the_curve():
    img, rows, _, px = _column_image(break_rows=[(250, 262), (300, 310)])
    mask, extent = csf_column(img, (px, px))
    got = np.flatnonzero(mask.any(axis=1))
    assert got.min() <= 42 and got.max() >= 357            # all three pieces, to the curved end
    assert extent == pytest.approx((359 - 40) * px, abs=3)     # the drawn column spans rows 40..359


def test_canal_curve_goes_on_past_the_csf_and_keeps_its_end():
    img, rows, cols, px = _column_image()
    img[300:] = 0.2                                        # the CSF stops at row 300
    canal = fit_canal(img, (px, px), [0, 1, 0, 0, 0, -1])
    assert canal.rows.max() > 300 + 30 / px                 # sampled 40 mm below the CSF (within the image)
    assert canal.width_mm[canal.rows > 305].max() == 0
    # end_mm is the arc position of the lowest CSF
    assert np.interp(canal.end_mm, canal.s_mm, canal.rows) == pytest.approx(299, abs=1.5)


def test_tracked_centre_keeps_to_the_edge_that_stays_where_the_column_widens_on_one_side():
    from spinefeat.localize.canal import tracked_centres

    mask = np.zeros((120, 80), bool)
    mask[:, 30:40] = True                                  # a 10 px column, centre 34.5
    mask[50:70, 40:60] = True                              # widened by 20 px on its right (fat, cauda equina)
    mask[80:90, 14:30] = True                              # and by 16 px on its left further down
    mask[100:105, 60:66] = True                            # a blob apart from the column on some rows
    rows = np.arange(120)
    got = tracked_centres(mask, rows)
    assert got == pytest.approx(np.full(120, 34.5))
    median = np.array([np.median(np.flatnonzero(mask[r])) for r in rows])
    assert median[60] == pytest.approx(44.5) and median[85] == pytest.approx(26.5)   # what the median did
    # A column that moves sideways (a curve) is followed, its width unchanged.
    curve = np.zeros((120, 80), bool)
    for r in range(120):
        curve[r, 20 + r // 4: 30 + r // 4] = True
    assert tracked_centres(curve, rows) == pytest.approx(24.5 + rows // 4)


def test_canal_centre_line_is_not_pulled_by_a_widening_of_the_csf_on_one_side():
    img, rows, cols, px = _column_image()
    flat = fit_canal(img, (px, px), [0, 1, 0, 0, 0, -1], tracked=True)
    wide = img.copy()
    r0, r1 = 200, 240
    for r in range(r0, r1):                                # the CSF run widened by 12 mm behind the column
        c = int(round(np.interp(r, rows, cols)))
        wide[r, c + 6: c + 6 + int(12 / px)] = img[r, c]
    canal = fit_canal(wide, (px, px), [0, 1, 0, 0, 0, -1], tracked=True)
    at = (flat.rows > r0) & (flat.rows < r1)
    shift_mm = np.abs(np.interp(flat.rows[at], canal.rows, canal.cols) - flat.cols[at]).max() * px
    assert shift_mm < 1.0
    median = fit_canal(wide, (px, px), [0, 1, 0, 0, 0, -1], tracked=False)      # each row's median column
    assert np.abs(np.interp(flat.rows[at], median.rows, median.cols) - flat.cols[at]).max() * px > 2.0


def _sagittal_stack(csf, slice_mm, *, skin_fat=False, extra=None, px=0.7, n=400):
    """A sagittal stack, slice i at i * ``slice_mm`` along the normal: :func:`_column_image`'s CSF column
    at brightness ``csf[i]`` (0.2: none) over a 0.2 background with air in front of the body (the first 20
    columns); with ``skin_fat`` a 21 mm band of fat (1.0) just under the skin of the back (air behind it);
    ``extra(img, i)`` draws more."""
    from spinefeat.dicom import Stack
    from spinefeat.geometry import StackGeometry

    base, _, _, _ = _column_image(n=n, px=px)
    imgs = []
    for i, v in enumerate(csf):
        img = 0.2 + (base - 0.2) * (v - 0.2) / 0.8
        if extra is not None:
            extra(img, i)
        img[:, :20] = 0.0
        if skin_fat:
            img[:, 330:360], img[:, 360:] = 1.0, 0.0
        imgs.append(img)
    k = len(csf)
    pos = np.stack([-np.arange(k) * slice_mm, np.zeros(k), np.zeros(k)], axis=1)
    geo = StackGeometry(pos, np.array([0.0, 1, 0, 0, 0, -1]), np.array([px, px]), (n, n))
    return Stack(1, 2, "Sagittal T2/STIR", (1000 * np.stack(imgs)).astype(np.float32), geo, np.arange(1, k + 1))


def _sac(mid, slice_mm, k, half_mm=12.0):
    """CSF brightness on each of ``k`` slices through a sac centred on slice ``mid``: partial volume dims it
    towards the sac's edges."""
    return [0.2 + 0.8 * max(0.0, 1.0 - abs(i - mid) * slice_mm / half_mm) for i in range(k)]


def test_mid_sagittal_is_the_middle_of_the_sac_not_the_edge_slice_with_the_most_csf_area():
    from spinefeat.localize import mid_sagittal

    _, rows, cols, _ = _column_image()
    csf = _sac(6, 4.0, 11)                    # the slab's centre is slice 5; the sac's middle is slice 6

    def foramen_fat(img, i):                  # off the middle: fat as dim as its CSF beside the column
        if i == 5:
            for r in rows[10::40]:
                c = int(cols[r - rows[0]])
                img[r:r + 12, c + 5:c + 17] = csf[5]

    stack = _sagittal_stack(csf, 4.0, skin_fat=True, extra=foramen_fat)
    area = {i: csf_column(stack.pixels[i], stack.geometry.pixel_spacing_mm, follow=False)[0].sum() for i in (5, 6)}
    assert area[5] > area[6]                 # the trap: more CSF-column area off the middle
    k, shift_mm = mid_sagittal(stack)
    assert k == 6 and abs(shift_mm) < 2.0    # within half a slice of the sac's middle


def test_mid_sagittal_on_thin_slices_finds_a_sac_off_the_slab_centre():
    from spinefeat.localize import mid_sagittal

    k, shift_mm = mid_sagittal(_sagittal_stack(_sac(28, 1.0, 41), 1.0))    # slab centre: slice 20 (8 mm off)
    assert abs(k + shift_mm - 28) <= 1.0


def test_mid_sagittal_ignores_the_fat_under_the_skin_beside_the_spine():
    from spinefeat.localize import mid_sagittal

    stack = _sagittal_stack(_sac(5, 4.0, 11), 4.0, skin_fat=True)
    lateral = csf_column(stack.pixels[1], stack.geometry.pixel_spacing_mm, follow=False)[0]
    assert lateral.any() and np.nonzero(lateral)[1].min() >= 325     # the column on a lateral slice: the fat
    k, shift_mm = mid_sagittal(stack)
    assert k == 5 and abs(shift_mm) < 2.0


def _axial_stack(centre_rc, r_mm=6.0, px=0.5, n=200):
    """One axial slice (rows posterior, cols patient left) with a round sac at ``centre_rc``."""
    from spinefeat.dicom import Stack
    from spinefeat.geometry import StackGeometry

    yy, xx = np.mgrid[:n, :n]
    img = np.where(np.hypot((yy - centre_rc[0]) * px, (xx - centre_rc[1]) * px) <= r_mm, 1000.0, 200.0)
    geo = StackGeometry(np.array([[-50.0, -50.0, 0.0]]), np.array([1.0, 0, 0, 0, 1.0, 0]), np.array([px, px]),
                        (n, n), "1.2.3")
    return Stack(1, 2, "Axial T2", img[None].astype(np.float32), geo, np.array([1]))


def test_sac_centre_finds_the_sac_from_the_spinal_point_in_front_of_it():
    from spinefeat.localize import sac_centre

    st = _axial_stack((110, 96))                       # sac centre at x = -50 + 96 * 0.5 = -2, y = 5
    seed = st.geometry.to_patient(0, 104, 100)          # 3 mm in front of and 2 mm beside it
    np.testing.assert_allclose(sac_centre(st, 0, seed), [-2.0, 5.0, 0.0], atol=0.15)
    blank = _axial_stack((110, 96))
    blank.pixels[:] = 0.0
    assert sac_centre(blank, 0, seed) is None


def test_predict_path_decodes_each_series_once_and_matches_localise_then_extract(trained, cohort, monkeypatch):
    import pandas as pd

    from spinefeat import dicom, extract as ex, images as im
    from spinefeat.dataset import DataFolder
    from spinefeat.localize import COORD_COLUMNS, Localizer, localize_study
    from spinefeat.pipeline import LocalisedPoints

    loc = Localizer.load(trained)
    series = DataFolder(cohort).series("test")
    sid = int(series.study_id.iloc[0])
    rows, _ = localize_study(loc, cohort, "test", sid, series)
    apart = ex.extract_study(cohort, "test", sid, series, pd.DataFrame(rows, columns=COORD_COLUMNS))
    calls = []
    real = dicom.load_series
    monkeypatch.setattr(im, "load_series", lambda path, **kw: calls.append(str(path)) or real(path, **kw))
    shared = ex.extract_study(cohort, "test", sid, series, LocalisedPoints(loc))
    assert sorted(calls) == sorted(set(calls)) and len(calls) == (series.study_id == sid).sum()
    cols = [c for c in apart.columns if not c.startswith("diagnostics_")]
    pd.testing.assert_frame_equal(shared[cols], apart[cols])


def test_confidence_auc_ranks_large_errors_by_low_confidence():
    import pandas as pd

    from spinefeat.localize import confidence_auc

    err = pd.DataFrame({"error_mm": [1, 2, 3, 10, 20], "confidence": [0.9, 0.8, 0.3, 0.2, 0.1]})
    assert confidence_auc(err) == pytest.approx(1.0)            # both large errors least confident
    err["confidence"] = [0.1, 0.2, 0.3, 0.8, 0.9]
    assert confidence_auc(err) == pytest.approx(0.0)
    err["confidence"] = [0.5, 0.9, 0.5, 0.5, 0.9]
    # (large, small) pairs, less confident wins: 10 (0.5) vs 0.5, 0.9, 0.5 -> tie, win, tie;
    # 20 (0.9) vs 0.5, 0.9, 0.5 -> lose, tie, lose
    assert confidence_auc(err) == pytest.approx((0.5 + 1 + 0.5 + 0 + 0.5 + 0) / 6)
    assert np.isnan(confidence_auc(err.assign(error_mm=1.0)))


def test_fold_localisers_learn_only_from_the_other_folds(cohort):
    """Cross-fitting: the localiser of fold k is the one learnt on the other folds' studies alone."""
    from spinefeat.dataset import DataFolder
    from spinefeat.extract import points_from_labels
    from spinefeat.localize import train_localizer, train_localizers

    pts = points_from_labels(DataFolder(cohort))
    folds = {int(s): i % 2 for i, s in enumerate(sorted(pts.study_id.unique()))}
    everyone, by_fold = train_localizers(cohort, pts, folds=folds)
    alone = train_localizer(cohort, pts[pts.study_id.map(folds) == 1])
    assert set(by_fold) == {0, 1}
    assert by_fold[0].fingerprint == alone.fingerprint            # same detector, spacing and offsets
    assert len({everyone.fingerprint, by_fold[0].fingerprint, by_fold[1].fingerprint}) == 3


def test_phantom_localiser_learns_where_its_foramen_labels_sit_down_the_keyhole(trained, tmp_path):
    """The phantoms put each foramen label at the middle of its fat keyhole (synth.truth: the keyhole's centre),
    so the localiser learns a share near 0.5 (real labels sit higher: 0.35); it survives a save and a load."""
    from spinefeat.localize import Localizer

    loc = Localizer.load(trained)
    assert loc.keyhole_share == pytest.approx(0.5, abs=0.1)
    json_text = (trained / "localizer.json").read_text()
    assert '"keyhole_share"' in json_text


def test_a_field_of_view_cut_above_the_sacrum_is_flagged_not_silently_counted(trained, cohort):
    """The same phantom T2 whole and cut 10 mm below L4/L5: whole, the count from the sacrum is clean; cut,
    the lowest disc left is L4/L5, and the study is flagged with every level at low confidence. The phantom is
    the first test study whose whole stack the fixture's six-study detector counts cleanly (on the true
    mid-sagittal slice of one of the two, it is unsure of L1/L2: confidence 0.001)."""
    import dataclasses

    import pandas as pd

    from spinefeat.dataset import DataFolder
    from spinefeat.dicom import Stack
    from spinefeat.images import StudyImages
    from spinefeat.localize import Localizer
    from spinefeat.localize.detector import DOUBTFUL_CONFIDENCE

    loc = Localizer.load(trained)
    truth = pd.read_csv(cohort / "truth" / "test_label_coordinates.csv")
    spinal = truth[truth.condition == "Spinal Canal Stenosis"].sort_values(["study_id", "level"])
    folder = DataFolder(cohort)
    clean = []
    for sid, sp in spinal.groupby("study_id"):
        (stack,) = StudyImages(folder, "test", int(sid), folder.series("test")).stacks(int(sp.series_id.iloc[0]))[:1]
        _, _, rc, conf, flags = loc.find_discs(stack)
        if flags == [] and conf.min() > DOUBTFUL_CONFIDENCE:
            clean.append((sp, stack))
    assert clean, "no test study's whole stack is counted cleanly"
    sp, stack = clean[0]
    cut = int(sp.y.iloc[3] + 10.0 / stack.geometry.pixel_spacing_mm[0])
    g = stack.geometry
    short = Stack(stack.study_id, stack.series_id, stack.description, stack.pixels[:, :cut].copy(),
                  dataclasses.replace(g, shape=(cut, g.shape[1])), stack.instance_numbers)
    _, _, rc_cut, conf_cut, flags_cut = loc.find_discs(short)
    assert flags_cut and all(f.startswith("levels: ") for f in flags_cut)
    assert np.all(conf_cut <= DOUBTFUL_CONFIDENCE)


def _level_probabilities(s_mm, centres_mm, extra_mm=()):
    """Detector output by hand: level k peaks (0.9) at centres_mm[k], any-level discs (0.8, spread over the
    five levels) at extra_mm, background elsewhere."""
    p = np.zeros((len(s_mm), 6))
    p[:, 0] = 1.0
    for lv, c in enumerate(centres_mm):
        near = np.abs(s_mm - c) <= 2.0
        p[near, lv + 1], p[near, 0] = 0.9, 0.1
    for c in extra_mm:
        near = np.abs(s_mm - c) <= 2.0
        p[near, 1:], p[near, 0] = 0.16, 0.2
    return p


def test_count_discs_places_the_five_levels_and_flags_a_doubtful_count():
    from spinefeat.localize import count_discs
    from spinefeat.localize.detector import DOUBTFUL_CONFIDENCE

    s_mm = np.arange(0.0, 260.0, 1.0)
    gaps = np.array([[35.0, 3.0]] * 4)
    centres = [40.0, 75.0, 110.0, 145.0, 180.0]
    disc_s, conf, flags = count_discs(_level_probabilities(s_mm, centres), s_mm, gaps)
    assert np.allclose(disc_s, centres, atol=0.5) and flags == [] and np.allclose(conf, 0.9)
    # a sixth disc 35 mm below L5/S1 (transitional anatomy): same levels, flagged, confidences capped
    disc_s, conf, flags = count_discs(_level_probabilities(s_mm, centres, [215.0]), s_mm, gaps)
    assert np.allclose(disc_s, centres, atol=0.5)
    assert any("below L5/S1" in f for f in flags) and np.all(conf <= DOUBTFUL_CONFIDENCE)
    # the image ends 10 mm below L5/S1: the sacrum is not in view
    short = s_mm[s_mm <= 190.0]
    _, conf, flags = count_discs(_level_probabilities(short, centres), short, gaps)
    assert any("field of view" in f for f in flags) and np.all(conf <= DOUBTFUL_CONFIDENCE)
