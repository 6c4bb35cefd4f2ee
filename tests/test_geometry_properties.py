"""Property tests (hypothesis) of the patient <-> pixel geometry under random oblique orientations.

Kept in its own file: the in-plane-shift property is the behaviour `StackGeometry.project` must have
(each slice's own origin), fixed on another branch.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spinefeat.geometry import StackGeometry, patient_to_pixel, pixel_to_patient, slice_normal, sort_by_normal, \
    split_stacks

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def orientations(draw):
    """A random ImageOrientationPatient: two orthonormal unit vectors of any direction."""
    q = np.array(draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4)))
    if np.linalg.norm(q) < 1e-3:
        q = np.array([1.0, 0, 0, 0])
    w, x, y, z = q / np.linalg.norm(q)
    rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    return np.concatenate([rot[:, 0], rot[:, 1]])


coords = st.floats(-300, 300, allow_nan=False)
spacings = st.tuples(st.floats(0.2, 2.0), st.floats(0.2, 2.0))


@SETTINGS
@given(iop=orientations(), ipp=st.tuples(coords, coords, coords), ps=spacings,
       row=st.floats(-50, 700), col=st.floats(-50, 700))
def test_pixel_patient_round_trip(iop, ipp, ps, row, col):
    xyz = pixel_to_patient(row, col, ipp, iop, ps)
    r, c, d = patient_to_pixel(xyz, ipp, iop, ps)
    assert r == pytest.approx(row, abs=1e-6) and c == pytest.approx(col, abs=1e-6)
    assert d == pytest.approx(0, abs=1e-6)


@st.composite
def stacks(draw, *, shifted: bool):
    """A stack of parallel slices at random gaps along a random oblique normal; with ``shifted`` each slice's
    origin also moves in its own plane (as in real series whose field of view follows the anatomy)."""
    iop = draw(orientations())
    n = slice_normal(iop)
    k = draw(st.integers(2, 8))
    gaps = np.array(draw(st.lists(st.floats(2.0, 6.0), min_size=k - 1, max_size=k - 1)))
    base = np.array(draw(st.tuples(coords, coords, coords)))
    offs = np.concatenate([[0.0], np.cumsum(gaps)])
    pos = base + offs[:, None] * n
    if shifted:
        sh = np.array(draw(st.lists(st.tuples(st.floats(-20, 20), st.floats(-20, 20)), min_size=k, max_size=k)))
        pos = pos + sh[:, :1] * iop[:3] + sh[:, 1:] * iop[3:]
    ps = draw(spacings)
    return StackGeometry(pos, iop, ps, (256, 256))


def check_projection_round_trip(geo, data):
    """A point placed at (slice, row, col) of a stack projects back onto that slice, row and col."""
    k = data.draw(st.integers(0, geo.n_slices - 1))
    row, col = data.draw(st.floats(0, 255)), data.draw(st.floats(0, 255))
    p = geo.project(geo.to_patient(k, row, col))
    assert int(p["slice"][0]) == k
    assert p["row"][0] == pytest.approx(row, abs=1e-6) and p["col"][0] == pytest.approx(col, abs=1e-6)
    assert p["distance_mm"][0] == pytest.approx(0, abs=1e-6) and bool(p["in_image"][0])


@SETTINGS
@given(geo=stacks(shifted=False), data=st.data())
def test_projection_finds_the_slice_and_pixel_a_point_came_from(geo, data):
    check_projection_round_trip(geo, data)


def _project_uses_each_slice_origin() -> bool:
    iop = np.array([1.0, 0, 0, 0, 1, 0])
    geo = StackGeometry(np.array([[0, 0, 0], [5.0, 0, 4]]), iop, (1, 1), (64, 64))
    return float(geo.project(geo.to_patient(1, 10, 10))["col"][0]) == pytest.approx(10)


@pytest.mark.xfail(not _project_uses_each_slice_origin(), strict=True,
                   reason="StackGeometry.project measures in-plane coordinates from the first slice's origin; "
                          "fixed on iss13")
@SETTINGS
@given(geo=stacks(shifted=True), data=st.data())
def test_projection_with_in_plane_shifted_slices(geo, data):
    check_projection_round_trip(geo, data)


@SETTINGS
@given(geo=stacks(shifted=True), perm_seed=st.integers(0, 2**32 - 1))
def test_sorting_and_splitting_ignore_input_order(geo, perm_seed):
    perm = np.random.default_rng(perm_seed).permutation(geo.n_slices)
    shuffled = geo.positions_mm[perm]
    order = sort_by_normal(shuffled, geo.iop)
    assert np.allclose(shuffled[order], geo.positions_mm)
    parts = split_stacks(shuffled, np.tile(geo.iop, (geo.n_slices, 1)))
    assert sorted(np.concatenate(parts).tolist()) == list(range(geo.n_slices))
