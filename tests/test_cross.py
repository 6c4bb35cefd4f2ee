"""Profiles across the foraminal root (spinefeat.features.cross) on phantoms whose truth is known."""

import numpy as np
import pytest

from spinefeat.features import REGISTRY
from spinefeat.features.cross import NAMES, foramen_cross, line_measure
from spinefeat.segment.common import View

SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)     # columns to the back, rows to the feet


def ringed_root(sp, *, root_r=2.5, fat_mm=2.0, fat=0.9, root=0.35, bg=0.3, front_fat_mm=None, size_mm=60):
    """A dark root of radius ``root_r`` (mm) at the centre in a ring of fat ``fat_mm`` wide (``front_fat_mm`` in
    front of it, towards column 0, when given), in tissue ``bg``."""
    n = int(size_mm / sp) | 1
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * sp
    rr = np.hypot(yy, xx)
    img = np.full((n, n), bg)
    img[rr <= root_r + fat_mm] = fat
    if front_fat_mm is not None:
        img[(xx < 0) & (rr > root_r + front_fat_mm)] = bg
    img[rr <= root_r] = root
    img[0, 0] = 1.0
    return img, ((n - 1) / 2, (n - 1) / 2)


def test_line_measure_reads_widths_and_contrast():
    sp = 0.5
    # 3 mm of fat (0.8), a 4 mm root (0.2), 1 mm of fat, then tissue (0.3); the point at the root's middle.
    p = np.r_[np.full(10, 0.3), np.full(6, 0.8), np.full(9, 0.2), np.full(2, 0.8), np.full(10, 0.3)]
    m = line_measure(p[: 37], sp)
    assert len(p[:37]) == 37 and p[18] == 0.2
    assert m["fat_lo_mm"] == pytest.approx(3.0)
    assert m["fat_hi_mm"] == pytest.approx(1.0)
    assert m["root_width_mm"] == pytest.approx(4.5)
    assert m["contrast"] == pytest.approx((0.8 - 0.2) / 0.8)


@pytest.mark.parametrize("sp", [0.6, 1.3])
def test_fat_ring_around_the_root_is_measured_in_mm(sp):
    img, seed = ringed_root(sp)
    f = foramen_cross(img, seed, pixel_spacing_mm=(sp, sp), series_high=1.0, view=View.from_iop(SAGITTAL_IOP))
    assert set(f) == set(NAMES) and all(n in REGISTRY for n in f)
    tol = max(0.75, sp)
    assert f["foramen_cross_fat_front_mm"] == pytest.approx(2.0, abs=tol)
    assert f["foramen_cross_fat_back_mm"] == pytest.approx(2.0, abs=tol)
    assert f["foramen_cross_fat_up_mm"] == pytest.approx(2.0, abs=tol)
    assert f["foramen_cross_root_width_mm"] == pytest.approx(5.0, abs=tol + 0.5)
    assert f["foramen_cross_contrast_centre"] > 0.4


def test_lost_fat_in_front_of_the_root_reads_as_lost():
    sp = 0.6
    view = View.from_iop(SAGITTAL_IOP)
    kw = dict(pixel_spacing_mm=(sp, sp), series_high=1.0, view=view)
    full = foramen_cross(*ringed_root(sp), **kw)
    img, seed = ringed_root(sp, front_fat_mm=0.0)
    lost = foramen_cross(img, seed, **kw)
    assert lost["foramen_cross_fat_front_mm"] < 0.75 <= full["foramen_cross_fat_front_mm"]
    assert lost["foramen_cross_fat_back_mm"] == pytest.approx(full["foramen_cross_fat_back_mm"], abs=0.6)
    assert lost["foramen_cross_sides_lost"] > full["foramen_cross_sides_lost"]
    assert lost["foramen_cross_fat_mean_mm"] < full["foramen_cross_fat_mean_mm"]


def test_directions_come_from_the_orientation_not_the_image_axes():
    sp = 0.6
    img, seed = ringed_root(sp, front_fat_mm=0.5)
    a = foramen_cross(img, seed, pixel_spacing_mm=(sp, sp), series_high=1.0, view=View.from_iop(SAGITTAL_IOP))
    # The same slice stored transposed: its rows run to the back and its columns to the feet.
    b = foramen_cross(img.T.copy(), seed[::-1], pixel_spacing_mm=(sp, sp), series_high=1.0,
                      view=View.from_iop((0.0, 0.0, -1.0, 0.0, 1.0, 0.0)))
    for n in NAMES:
        assert b[n] == pytest.approx(a[n], abs=1e-5), n
    assert a["foramen_cross_fat_front_mm"] < a["foramen_cross_fat_back_mm"]


def test_turned_spine_axis_turns_the_lines():
    sp = 0.6
    n = int(60 / sp) | 1
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * sp
    # A bright band 3 mm wide along a spine tilted 50 deg: across it (perpendicular to the axis) the band is
    # 3 mm wide; along the image rows it would read 3 / cos(50 deg) = 4.7 mm.
    t = np.radians(50)
    axis = (np.cos(t), np.sin(t))                     # to the feet, in (row, col)
    across = -yy * axis[1] + xx * axis[0]             # distance perpendicular to the axis
    img = np.where(np.abs(across - 2.5) <= 1.5, 0.9, 0.3)
    img[np.abs(across) <= 1.0] = 0.2                  # the dark root line at the point
    img[0, 0] = 1.0
    f = foramen_cross(img, ((n - 1) / 2, (n - 1) / 2), pixel_spacing_mm=(sp, sp), series_high=1.0,
                      view=View.from_iop(SAGITTAL_IOP), axis_rc=axis)
    assert f["foramen_cross_fat_back_mm"] == pytest.approx(3.0, abs=0.75)
    assert f["foramen_cross_fat_front_mm"] == 0
