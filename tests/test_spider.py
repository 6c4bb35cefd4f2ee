"""The sagittal steps on real anatomy (SPIDER) and on tiny images with known answers."""

import numpy as np
import pytest

from spinefeat.localize import csf_column, follow_column
from spinefeat.dataset import LEVELS
from spinefeat.spider import CANAL, DISC, canal_scores, disc_points, lumbar_disc_points

PX = 0.5


def _labels(disc_rows, *, tilt_deg=0.0, n=400):
    """A label image: canal band at cols 60..70 (centre 65), discs 40 px long anterior to it at the given rows."""
    lab = np.zeros((n, 120), np.uint8)
    lab[:, 60:71] = CANAL
    yy, xx = np.mgrid[:n, :120]
    t = np.tan(np.radians(tilt_deg))
    for r in disc_rows:
        # long axis along the columns, tilted: row = r + (col - 35) * t
        lab[(np.abs(yy - (r + (xx - 35) * t)) <= 4) & (xx >= 15) & (xx <= 55)] = DISC
    return lab


def test_disc_point_is_where_the_disc_axis_meets_the_canal_centre_line():
    pts = disc_points(_labels([60, 130, 200]), pixel_spacing_mm=PX)
    assert pts[:, 0] == pytest.approx([60, 130, 200], abs=1)
    assert pts[:, 1] == pytest.approx(65, abs=0.5)


def test_tilted_disc_meets_the_canal_along_its_axis_not_at_its_centroid_row():
    pts = disc_points(_labels([150], tilt_deg=20), pixel_spacing_mm=PX)
    want = 150 + (65 - 35) * np.tan(np.radians(20))            # 161 px: 11 px below the centroid's row
    assert pts[0, 0] == pytest.approx(want, abs=1.5)


def test_lumbar_discs_are_the_lowest_five_counted_from_the_sacrum():
    rows = [30, 80, 130, 180, 230, 280, 330]
    got = lumbar_disc_points(_labels(rows), pixel_spacing_mm=PX)
    assert got[:, 0] == pytest.approx(rows[2:], abs=1)
    assert lumbar_disc_points(_labels(rows[:4]), pixel_spacing_mm=PX) is None


def test_canal_scores_count_only_rows_where_the_column_is_inside_the_canal():
    canal = np.zeros((100, 50), bool)
    canal[:, 20:30] = True
    beside = np.zeros_like(canal)
    beside[:, 35:40] = True                                   # spans every row, but on another structure
    half = np.zeros_like(canal)
    half[:50, 22:28] = True
    assert canal_scores(beside, canal) == {"rows_covered": 0.0, "dice": 0.0}
    s = canal_scores(half, canal)
    assert s["rows_covered"] == pytest.approx(0.5)
    assert s["dice"] == pytest.approx(2 * 300 / (300 + 1000))


def _spine_image(n=500, px=0.6, fat=1.0, csf=0.55):
    """A sagittal slice: air on both sides, a body between; a vertebral column (bodies 0.35, discs 0.2 every
    35 mm) with a CSF column behind it, and a brighter band of fat under the skin of the back."""
    img = np.zeros((n, n), np.float32)
    img[:, 60:440] = 0.25                                     # body (muscle), air beyond
    rows = np.arange(n)
    for r in rows:
        img[r, 150:230] = 0.2 if (r * px) % 35 < 8 else 0.35  # discs and bodies alternate
    img[20:480, 240:258] = csf                                # CSF column (10.8 mm AP)
    img[:, 415:440] = fat                                     # fat under the skin, touching the air
    return img, px


def test_csf_column_is_the_canal_not_the_brighter_fat_under_the_skin():
    img, px = _spine_image()
    mask, extent = csf_column(img, (px, px))
    cols = np.nonzero(mask)[1]
    assert 238 <= np.median(cols) <= 260
    assert extent == pytest.approx((479 - 20) * px, abs=4)


def test_csf_column_does_not_need_the_field_of_view_centred_on_it():
    img, px = _spine_image()
    shifted = np.zeros_like(img)
    shifted[:, :380] = img[:, 120:]                           # canal now at cols 120..138, far from the centre
    mask, _ = csf_column(shifted, (px, px))
    assert 118 <= np.median(np.nonzero(mask)[1]) <= 140


def test_follow_column_crosses_a_short_gap_follows_a_bend_and_stops_at_a_long_one():
    n, px = 400, 0.5
    ridge = np.zeros((n, 200), np.float32)
    cols = (100 + np.clip(np.arange(n) - 150, 0, None) * 0.6).astype(int)   # bends 0.6 px/px below row 150
    for r in range(n):
        ridge[r, cols[r] - 3:cols[r] + 4] = 1.0
    ridge[200:220] = 0                                        # a tight level: 10 mm dark
    ridge[300:] = 0                                           # the end: nothing below row 300
    ridge[370:, 150:160] = 1.0                                # something else 35 mm below the end
    seed = np.zeros(ridge.shape, bool)
    seed[50:150, 97:104] = True
    out = follow_column(ridge, seed, (px, px), low=0.5)
    rows = np.flatnonzero(out.any(axis=1))
    assert rows.min() == 0 and rows.max() == 299
    assert abs(np.flatnonzero(out[290]).mean() - cols[290]) <= 1     # on the bent ridge, past the gap
    assert not out[370:].any()


# ---------------------------------------------------------------------------
# Real anatomy: SPIDER (a fixed subset of two patients)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spider_patients(shared):
    from spinefeat.spider import read_spider

    folder = shared / "real_spider"
    if not (folder / "images").is_dir():
        pytest.skip(f"SPIDER share not found at {folder}")
    return [p for p in read_spider(folder) if p.patient in ("7", "81")]


@pytest.mark.parametrize("spacing_mm", [0.46875, 0.8])
def test_csf_column_covers_the_real_canal_even_with_the_spacing_mis_set(spider_patients, spacing_mm):
    for p in spider_patients:
        k = p.stack.geometry.n_slices // 2
        col, _ = csf_column(p.stack.pixels[k], (spacing_mm, spacing_mm))
        s = canal_scores(col, p.masks[k] == CANAL)
        assert s["rows_covered"] >= 0.9 and s["dice"] >= 0.5, (p.patient, s)


def test_spider_training_samples_carry_the_five_levels_counted_from_the_sacrum(spider_patients):
    from spinefeat.spider import spider_samples

    xs, ys, gaps = spider_samples(spider_patients[0])
    assert xs and len(xs) == len(ys)
    for x, y in zip(xs, ys):
        assert len(x) == len(y)
        first = [np.flatnonzero(y == lv).mean() for lv in range(1, 6)]
        assert np.all(np.diff(first) > 0)                      # L1/L2 above L2/L3 ... above L5/S1
        assert np.all(y[np.flatnonzero(y == 5).max() + 1:] == 0)   # the sacrum below L5/S1: no disc
    assert len(gaps) == 1 and np.all((gaps[0] > 20) & (gaps[0] < 60))


def test_check_spider_scores_the_discs_from_the_masks_and_picks_each_mid_slice_once(shared, tmp_path, monkeypatch):
    """check_spider on two patients (their files linked) with a stand-in localiser that returns the masks' own
    lumbar discs (all within 5 mm, no swap) or those one disc higher (every patient swapped); the mid-sagittal
    slice is picked once per patient (the canal row and the disc row share it)."""
    import spinefeat.localize as loc_mod
    from spinefeat import spider

    src = shared / "real_spider"
    if not (src / "images").is_dir():
        pytest.skip(f"SPIDER share not found at {src}")
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
        for f in (src / sub).glob("*.png"):
            if f.name.split("_")[0] in ("7", "81"):
                (tmp_path / sub / f.name).symlink_to(f)
    picks = []
    real_mid = loc_mod.mid_sagittal
    monkeypatch.setattr(loc_mod, "mid_sagittal", lambda stack: picks.append(stack.study_id) or real_mid(stack))

    class MaskLocaliser:
        trained_on: dict = {}

        def __init__(self, up):
            self.up = up

        def find_discs(self, stack, *, mid=None):
            k = mid[0] if mid is not None else loc_mod.mid_sagittal(stack)[0]
            p = next(p for p in patients if p.stack is stack)
            discs = spider.disc_points(p.masks[k])
            rc = discs[len(discs) - 5 - self.up:len(discs) - self.up]
            return k, 0.0, rc, np.ones(5), []

    patients = spider.read_spider(tmp_path)
    monkeypatch.setattr(spider, "read_spider", lambda folder: patients)
    right = spider.check_spider(tmp_path, localizer=MaskLocaliser(0))
    assert sorted(picks) == [0, 1]                       # one pick per patient
    assert right["discs"]["patients"] == 2 and right["discs"]["within_5mm"] == 1.0
    assert right["discs"]["level_swaps"] == 0
    assert set(right["sagittal_canal"]) >= {"rows_covered_median", "rows_covered_min", "dice_median", "patients"}
    up = spider.check_spider(tmp_path, localizer=MaskLocaliser(1))
    assert up["discs"]["level_swaps"] == 2 and up["discs"]["within_5mm"] == 0.0
    # The curve distances are the truth's from the canal curve, whatever the detector found: the same for both
    # stand-ins, and on these two patients' curves every true disc lies within 6 mm (measured: 3.4 mm at most).
    curve = [[r[f"{lv}_curve_mm"] for lv in LEVELS] for r in right["patients"]]
    assert curve == [[r[f"{lv}_curve_mm"] for lv in LEVELS] for r in up["patients"]]
    assert max(max(c) for c in curve) < 6.0 and right["discs"]["curve_max_mm"] == max(max(c) for c in curve)
    assert right["discs"]["curve_within_3mm"] == np.mean([v <= 3 for c in curve for v in c])


def test_curve_distance_is_the_true_point_s_distance_from_the_canal_curve():
    from spinefeat.spider import curve_distances_mm, spider_stack

    n, px = 400, 0.7
    img = np.full((n, n), 0.2)
    rows = np.arange(40, 360)
    cols = 200 + 60 * ((rows - 200) / 160.0) ** 2              # a curved CSF column, 11 px wide
    for r, c in zip(rows, cols):
        img[r, int(c) - 5:int(c) + 6] = 1.0
    stack = spider_stack(np.stack([img] * 3) * 1000, [0, 1, 2], pixel_spacing_mm=px)
    on = np.array([[r, 200 + 60 * ((r - 200) / 160.0) ** 2] for r in (100, 200, 300)])
    beside = on + [0.0, 10.0 / px]                              # 10 mm behind the column at the middle row
    got = curve_distances_mm(stack, 1, np.concatenate([on, beside]))
    assert max(got[:3]) < 1.5
    assert got[4] == pytest.approx(10.0, abs=1.5)               # the column runs along the rows there


def test_real_check_markdown_of_a_spider_only_run_reports_the_check_not_an_empty_table():
    from spinefeat.realcheck import markdown_table

    loc = {"sagittal_canal": {"rows_covered_median": 0.931, "rows_covered_min": 0.702, "dice_median": 0.55,
                              "patients": 3},
           "discs": {"within_5mm": 0.6, "median_mm": 4.26, "level_swaps": 1, "patients": 3,
                     "detector": "leave-patients-out, 3 folds"}}
    text = markdown_table({"spider": {"localisation": loc}, "run": {}})
    assert "| term |" not in text                       # no grading table without a graded term
    assert "median 0.93 of the canal mask's rows (lowest 0.70)" in text and "Dice 0.55" in text
    assert "0.60 within 5 mm, median 4.3 mm, 1 of 3 patients counted off by a level." in text
    loc["discs"].update(curve_within_3mm=0.8, curve_max_mm=17.26)
    text = markdown_table({"spider": {"localisation": loc}, "run": {}})
    assert "level; the true disc points lie within 3 mm of the canal curve the detector reads for 0.80 of them " \
           "(furthest 17.3 mm)." in text
    assert markdown_table({"run": {}}) == ""
