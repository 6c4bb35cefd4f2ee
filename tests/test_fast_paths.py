"""The faster forms of hot functions give what their plain definitions give (on arrays with known answers or
against an independent route)."""
import numpy as np
from scipy import ndimage as ndi

from spinefeat.localize.canal import beside_periodicity, row_distance_mm


def test_row_distance_is_the_distance_transform_along_rows():
    """Against scipy's exact Euclidean distance transform with the rows made infinitely far apart (then only
    a pixel of the same row can be nearest); rows with nothing outside are infinitely deep."""
    rng = np.random.default_rng(0)
    inside = ndi.binary_opening(rng.random((60, 80)) > 0.3, iterations=1)
    inside[7] = True                                     # a row with no outside pixel
    got = row_distance_mm(inside, 0.7)
    want = ndi.distance_transform_edt(inside, sampling=(1e9, 0.7))
    same_row = want < 1e8
    np.testing.assert_allclose(got[same_row], want[same_row], rtol=1e-12)
    assert np.isinf(got[~same_row]).all() and (~same_row).sum() >= inside.shape[1]
    assert (got[~inside] == 0).all()


def test_periodicity_beside_a_column_is_high_for_alternating_bodies_and_low_for_noise():
    """Bands alternating every 30 mm beside a vertical column: the autocorrelation at a 30 mm lag is near 1
    (a cosine's normalised autocorrelation at its own period is (n - lag) / n); noise gives little."""
    dr = dc = 1.0
    rows = np.arange(200)
    img = np.tile(np.cos(2 * np.pi * rows / 30.0)[:, None], (1, 100))
    mask = np.zeros(img.shape, bool)
    mask[:, 48:52] = True
    n = 200
    assert beside_periodicity(img, mask, dr, dc) >= 0.8 * (n - 30) / n
    noise = np.random.default_rng(1).normal(size=img.shape)
    assert beside_periodicity(ndi.gaussian_filter(noise, 1.0), mask, dr, dc) < 0.5


def test_axis_lengths_are_regionprops_diameters():
    """The Feret diameter and ellipse axes of a mask, computed without regionprops, against regionprops itself on
    random masks (several pieces, convex hulls, single pixels): the Feret diameter exactly, the axes to float
    rounding."""
    from skimage.measure import regionprops
    from skimage.morphology import convex_hull_image

    from spinefeat.segment.common import axis_lengths_mm

    rng = np.random.default_rng(1)
    checked = 0
    for k in range(60):
        h, w = rng.integers(3, 70, 2)
        m = ndi.binary_opening(rng.random((h, w)) > rng.uniform(0.2, 0.8), iterations=int(rng.integers(0, 3)))
        if k % 3 == 0 and m.any():
            m = convex_hull_image(m)
        if k % 7 == 0:
            m = np.zeros((h, w), bool)
            m[rng.integers(h), rng.integers(w)] = True
        if not m.any():
            continue
        p = regionprops(m.astype(np.uint8))[0]
        feret, major, minor = axis_lengths_mm(m, 0.25)
        assert feret == p.feret_diameter_max * 0.25
        np.testing.assert_allclose([major, minor], [p.axis_major_length * 0.25, p.axis_minor_length * 0.25],
                                   rtol=1e-9, atol=1e-12)
        checked += 1
    assert checked >= 25
    assert all(np.isnan(axis_lengths_mm(np.zeros((4, 4), bool), 0.25)))


def test_dilate_and_erode_are_scipys():
    """OpenCV's morphology behind dilate/erode gives scipy's binary_dilation/erosion (outside the image False), on
    random masks touching the border, with disks, the default cross, and repeated cross dilations."""
    from spinefeat.segment.common import dilate, disk, erode

    rng = np.random.default_rng(2)
    for k in range(30):
        m = rng.random(tuple(rng.integers(5, 60, 2))) > rng.uniform(0.5, 0.97)
        fp = disk(int(rng.integers(1, 5))) if k % 3 else None
        assert np.array_equal(dilate(m, fp), ndi.binary_dilation(m, fp))
        assert np.array_equal(erode(m, fp), ndi.binary_erosion(m, fp))
        assert np.array_equal(erode(dilate(m, fp), fp), ndi.binary_closing(m, fp))
        it = int(rng.integers(1, 13))
        assert np.array_equal(dilate(m, iterations=it), ndi.binary_dilation(m, iterations=it))
        assert np.array_equal(erode(m, iterations=it), ndi.binary_erosion(m, iterations=it))
        assert np.array_equal(erode(dilate(m, iterations=3), iterations=3), ndi.binary_closing(m, iterations=3))


def test_fill_holes_is_scipys():
    """The flood-fill hole filling against scipy's binary_fill_holes: random masks with holes, holes joined to
    the border only diagonally (not through 4-connected steps, so filled), masks touching the border."""
    from spinefeat.segment.common import fill_holes

    rng = np.random.default_rng(3)
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[2:5, 2:5] = False
    ring[0, 0] = False
    ring[1, 1] = False                      # a corner gap: diagonal to the outside only
    cases = [ring, np.zeros((4, 5), bool), np.ones((4, 5), bool)]
    cases += [rng.random(tuple(rng.integers(3, 80, 2))) > rng.uniform(0.2, 0.7) for _ in range(30)]
    filled_some = False
    for m in cases:
        want = ndi.binary_fill_holes(m)
        assert np.array_equal(fill_holes(m), want)
        filled_some |= bool((want & ~m).any())
    assert filled_some


def test_convex_hull_is_scikit_images():
    """The convex hull image computed on the bounding box from OpenCV's hull against scikit-image's
    convex_hull_image (qhull, then every pixel of the image tested): random sparse pixels, opened noise, single
    pixels, two or three scattered pixels (thin hulls, collinear points), holed ellipses like a keyhole's fat,
    masks touching the border; and an empty mask gives an empty hull."""
    from skimage.morphology import convex_hull_image

    from spinefeat.segment.common import convex_hull

    rng = np.random.default_rng(4)
    checked = 0
    for k in range(400):
        h, w = (int(v) for v in rng.integers(1, 90, 2))
        kind = k % 5
        if kind == 0:
            m = rng.random((h, w)) > rng.uniform(0.5, 0.999)
        elif kind == 1:
            m = ndi.binary_opening(rng.random((h, w)) > rng.uniform(0.2, 0.8), iterations=int(rng.integers(0, 3)))
        else:
            m = np.zeros((h, w), bool)
            for _ in range(1 if kind == 2 else int(rng.integers(2, 4))):
                m[rng.integers(h), rng.integers(w)] = True
            if kind == 4:
                yy, xx = np.indices((h, w))
                e = (((yy - rng.uniform(0, h)) / rng.uniform(2, 40)) ** 2
                     + ((xx - rng.uniform(0, w)) / rng.uniform(2, 40)) ** 2)
                m = (e <= 1) & (e > rng.uniform(0, 0.5)) & (rng.random((h, w)) > 0.1)
        if not m.any():
            continue
        want = convex_hull_image(m)
        assert np.array_equal(convex_hull(m), want), (k, m.shape)
        checked += int((want & ~m).any())            # the hull added pixels: not a trivial case
    assert checked >= 150
    assert not convex_hull(np.zeros((5, 6), bool)).any()


def test_one_percentile_pass_gives_the_blank_test_and_the_normalised_crop():
    """usable_normalised (one np.percentile call for the blank test and the scaling) against the two separate
    computations written out here: blank (flat) crops, saturated ones (most pixels at the top), crops on either
    side of the saturation limit, float32 crops as crop_mm makes them; the same verdict and bit-equal crops."""
    from spinefeat.segment.common import blank_reason, open_crop, usable_normalised

    def separate(crop, hi_pct):
        if np.ptp(crop) < 1e-6:
            return "blank crop", None
        lo, hi = np.percentile(crop, [1, 99])
        if hi - lo >= 1e-6 and (np.clip((crop - lo) / (hi - lo), 0, 1).astype(np.float32) > 0.95).mean() > 0.6:
            return "saturated crop", None
        lo, hi = np.percentile(crop, [1, hi_pct])
        return None, np.clip((crop - lo) / (hi - lo), 0, 1).astype(np.float32)

    rng = np.random.default_rng(5)
    crops = [np.full((20, 20), 3.0, np.float32)]
    for k in range(60):
        c = rng.normal(100, 20, (int(rng.integers(8, 70)),) * 2).astype(np.float32)
        if k % 3 == 0:                                  # a share of the pixels at the top, around the 60 % limit
            c.flat[rng.random(c.size) < rng.uniform(0.55, 0.65)] = c.max()
        crops.append(c)
    verdicts = set()
    for c in crops:
        for hi_pct in (99.0, 99.5):
            why, x = usable_normalised(c, hi_pct)
            want_why, want_x = separate(c, hi_pct)
            assert why == want_why == blank_reason(c)
            assert (x is None) == (want_x is None)
            if x is not None:
                assert x.dtype == want_x.dtype and np.array_equal(x, want_x)
            verdicts.add(why)
    assert verdicts == {None, "blank crop", "saturated crop"}
    img = rng.normal(100, 20, (80, 80))
    raw, origin, fail = open_crop(img, (40, 40), pixel_spacing_mm=(0.8, 0.8), size_mm=20, spacing_mm=0.5, keys=("a",))
    x, origin2, fail2 = open_crop(img, (40, 40), pixel_spacing_mm=(0.8, 0.8), size_mm=20, spacing_mm=0.5, keys=("a",),
                                  hi_pct=99.5)
    assert fail is fail2 is None and origin == origin2 and np.array_equal(x, separate(raw, 99.5)[1])


def test_members_is_isin_on_label_images():
    """The lookup-table membership against np.isin on scipy label images: some, none, all labels, the
    background among the ids, ids above the largest label, an image without labels."""
    from spinefeat.segment.common import members

    rng = np.random.default_rng(6)
    for k in range(40):
        lab, n = ndi.label(rng.random(tuple(rng.integers(2, 60, 2))) > rng.uniform(0.3, 0.9))
        ids = rng.integers(0, n + 3, int(rng.integers(0, 6)))
        if k % 5 == 0:
            ids = np.arange(n + 1)
        want = np.isin(lab, ids)
        assert np.array_equal(members(lab, ids), want)
    empty = np.zeros((4, 4), np.int32)
    assert not members(empty, [1, 2]).any() and members(empty, [0]).all()


def test_row_opening_is_scipys_grey_opening():
    """The row opening on OpenCV against scipy's grey_opening with size (1, w): odd and even widths (scipy
    shifts an even window's maximum by one), widths wider than the image, float32 and float64 images, images
    with many equal values (plateaus, where a window off by one shows)."""
    from spinefeat.segment.common import row_opening

    rng = np.random.default_rng(7)
    widths = set()
    for k in range(200):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        width = int(rng.integers(3, 70))
        x = rng.random((h, w))
        if k % 2:
            x = np.round(x * 4)
        x = x.astype(np.float32 if k % 3 else np.float64)
        got = row_opening(x, width)
        assert got.dtype == x.dtype and np.array_equal(got, ndi.grey_opening(x, size=(1, width))), (k, width)
        widths.add((width % 2, width > w))
    assert widths == {(0, False), (0, True), (1, False), (1, True)}


def test_row_distance_at_pixels_is_the_row_distance_map_there():
    """row_distance_at_mm at chosen pixels against row_distance_mm's whole map read there: pixels inside and not
    inside, rows with nothing outside (infinitely deep), outside only on one side, the first and last column."""
    from spinefeat.localize.canal import row_distance_at_mm

    rng = np.random.default_rng(8)
    for k in range(40):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        inside = rng.random((h, w)) > rng.uniform(0.05, 0.9)
        inside[rng.integers(h)] = True                       # a row with no outside pixel
        if w > 2:
            inside[rng.integers(h), 1:] = True               # outside only at the first column
        r, c = rng.integers(0, h, 300), rng.integers(0, w, 300)
        np.testing.assert_array_equal(row_distance_at_mm(inside, r, c, 0.7), row_distance_mm(inside, 0.7)[r, c])
    full = np.ones((3, 4), bool)
    assert np.isinf(row_distance_at_mm(full, np.array([0, 2]), np.array([1, 3]), 0.7)).all()


def test_near_line_decides_as_polyfits_line():
    """_near_line (the closed-form line) against the test on np.polyfit's line written out here: random
    columns, straight and slanted, and pieces placed exactly at the limit on pixel columns (a median of
    exactly 8 mm, where only np.polyfit's own line can decide and the fallback runs)."""
    from spinefeat.localize.canal import _near_line

    rng = np.random.default_rng(9)
    at_limit = 0
    for k in range(3000):
        limit = k % 4 == 0              # a vertical pixel column, the piece 8 mm beside it on either side
        dc = float(rng.choice([0.5, 0.25, 1.0] if limit else [0.5, 0.53571427, 0.8]))
        r = rng.integers(0, 400, int(rng.integers(10, 600)))
        slope = 0.0 if limit else float(rng.normal(0, 0.4))
        c = np.round(slope * r + 200 + (0 if limit else rng.integers(-3, 4, len(r)))).astype(np.intp)
        r2 = rng.integers(0, 400, int(rng.integers(5, 300)))
        if limit:
            c2 = (200 + rng.choice([-1, 1], len(r2)) * 8.0 / dc).astype(np.intp)
        else:
            c2 = np.round(slope * r2 + 200 + rng.normal(0, 25) + rng.integers(-2, 3, len(r2))).astype(np.intp)
        off = np.median(np.abs(c2 - np.polyval(np.polyfit(r, c, 1), r2))) * dc
        at_limit += bool(abs(off - 8.0) < 1e-9)
        assert _near_line(r, c, r2, c2, dc, 8.0) == (off <= 8.0), k
    assert at_limit >= 100


def test_chain_score_from_its_pieces_is_the_score_of_its_mask():
    """_chain_score (from the pieces' pixel lists) against the score written out from the chain's mask: its
    top-hat mean, the square root of its row extent and its periodicity beside it (beside_periodicity, from the
    mask's rows), bit for bit, on label images of random pieces taken in a random order."""
    from spinefeat.localize.canal import _chain_score

    rng = np.random.default_rng(10)
    for k in range(40):
        x = ndi.gaussian_filter(rng.random((150, 90)), 2).astype(np.float32)
        th = rng.random(x.shape).astype(np.float32)
        lab, n = ndi.label(rng.random(x.shape) > 0.6)
        ids = rng.permutation(np.arange(1, n + 1))[: int(rng.integers(1, min(n, 40) + 1))]
        pieces = [tuple(np.nonzero(lab == i)) for i in ids]
        mask = np.isin(lab, ids)
        rows = np.flatnonzero(mask.any(axis=1))
        want = th[mask].mean() * np.sqrt(np.ptp(rows) + 1) * (0.5 + beside_periodicity(x, mask, 0.5, 0.6))
        assert _chain_score(x, th, pieces, 0.5, 0.6) == want


def _same(got, want) -> bool:
    """The same value (bit for bit, NaN included) and the same type and dtype."""
    got_a, want_a = np.asarray(got), np.asarray(want)
    return (type(got) is type(want) and got_a.dtype == want_a.dtype and got_a.shape == want_a.shape
            and got_a.tobytes() == want_a.tobytes())


def test_percentile_and_median_are_numpys_bit_for_bit():
    """spinefeat.fastnp's percentile and median against np.percentile and np.median themselves: random arrays of
    every dtype the code passes (float32, float64, integers) and size (1 .. 3000, 1-D and 2-D, with ties and
    constant runs), scalar (int and float: NumPy's weak promotion) and list quantiles at and between order
    statistics, the ends, and NaN in the data (handed to NumPy): the same value, type and dtype."""
    from spinefeat.fastnp import median, percentile

    rng = np.random.default_rng(5)
    qs = [0, 1, 1.0, 5, 10, 25, 50, 75, 90, 95, 99, 99.5, 100, 100.0, 33.3333,
          [1, 99], [1.0, 99.0], [1.0, 99.0, 99.5], [1, 99.5], [25, 50, 75], [10, 50, 90], [0, 100]]
    checked = 0
    for k in range(400):
        n = int(rng.choice([1, 2, 3, 4, 7, 10, 64, 101, 400, 1000, 3000]))
        kind = k % 6
        if kind == 0:
            x = rng.random(n).astype(np.float32)
        elif kind == 1:
            x = rng.normal(size=n) * 1e3
        elif kind == 2:
            x = rng.integers(0, 1800, n).astype(np.float32)          # integer-valued pixels, many ties
        elif kind == 3:
            x = rng.integers(-500, 500, n).astype(np.int16)
        elif kind == 4:
            x = np.round(rng.random(n) * 4).astype(np.float64) / 3    # few distinct values
        else:
            x = rng.integers(0, 4000, n).astype(np.uint16)
        if k % 5 == 0 and n % 2 == 0 and n >= 4:
            x = x.reshape(2, -1)
        for q in qs:
            assert _same(percentile(x, q), np.percentile(x, q)), (x.dtype, n, q)
            checked += 1
        assert _same(median(x), np.median(x)), (x.dtype, n)
    assert checked == 400 * len(qs)
    x = rng.random(50)
    x[7] = np.nan
    assert _same(percentile(x, [1, 99]), np.percentile(x, [1, 99])) and np.isnan(percentile(x, 50))
    assert np.isnan(median(x)) and _same(median(x), np.median(x))


def test_row_medians_are_numpys_median_per_row():
    """The median column of each row's pixels, at once, against np.median of each row's columns (odd and even
    counts, single pixels, rows full)."""
    from spinefeat.localize.canal import row_medians

    rng = np.random.default_rng(2)
    for k in range(30):
        m = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 60)))) > rng.uniform(0.05, 0.95)
        m[np.arange(m.shape[0]), rng.integers(0, m.shape[1], m.shape[0])] = True      # every row has a pixel
        if k == 0:
            m[:] = True
        want = np.array([np.median(np.flatnonzero(r)) for r in m])
        got = row_medians(m)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
