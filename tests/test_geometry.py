import ast

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spinefeat import geometry as g
from spinefeat.errors import GeometryError

AXIAL = [1, 0, 0, 0, 1, 0]
SAGITTAL = [0, 1, 0, 0, 0, -1]


def test_pixel_to_patient_known_answer():
    p = g.pixel_to_patient(10, 20, [-5, 3, 7], SAGITTAL, [0.5, 0.8])
    # col runs along +y by 0.8 mm, row along -z by 0.5 mm
    assert np.allclose(p, [-5, 3 + 20 * 0.8, 7 - 10 * 0.5])
    assert np.allclose(g.slice_normal(SAGITTAL), [-1, 0, 0])
    assert np.allclose(g.slice_normal(AXIAL), [0, 0, 1])


def _rot(a, b, c):
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rz = np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
    return rz @ ry @ rx


angles = st.floats(-np.pi, np.pi, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(angles, angles, angles, st.floats(0.2, 1.2), st.floats(0.2, 1.2),
       st.floats(-300, 300), st.floats(0, 600), st.floats(0, 600))
def test_round_trip_pixel_patient_pixel(a, b, c, dr, dc, origin, row, col):
    r = _rot(a, b, c)
    iop = np.concatenate([r[:, 0], r[:, 1]])
    ipp = [origin, -origin / 2, 40.0]
    xyz = g.pixel_to_patient(row, col, ipp, iop, [dr, dc])
    r2, c2, d = g.patient_to_pixel(xyz, ipp, iop, [dr, dc])
    assert abs(r2 - row) * dr < 1e-6 and abs(c2 - col) * dc < 1e-6 and abs(d) < 1e-6


def test_sort_by_normal_ignores_instance_numbers():
    rng = np.random.default_rng(0)
    z = np.arange(10) * 4.0
    perm = rng.permutation(10)
    ipps = np.stack([np.zeros(10), np.zeros(10), z[perm]], axis=1)
    order = g.sort_by_normal(ipps, AXIAL)
    assert np.allclose(ipps[order, 2], z)


def test_split_stacks_by_orientation_and_gap():
    # Stack A: axial z=0,4,8 ; stack B: axial z=60,64,68 (gap) ; stack C: tilted 20 deg
    tilt = _rot(np.deg2rad(20), 0, 0)
    iop_c = np.concatenate([tilt[:, 0], tilt[:, 1]])
    ipps = [[0, 0, z] for z in (0, 4, 8, 60, 64, 68)] + [list(tilt[:, 2] * k + [0, 0, 30]) for k in (0, 4, 8)]
    iops = [AXIAL] * 6 + [iop_c] * 3
    order = [3, 7, 0, 8, 5, 1, 6, 4, 2]   # shuffled input order
    stacks = g.split_stacks(np.array(ipps)[order], np.array(iops)[order])
    members = sorted(sorted(np.array(order)[s].tolist()) for s in stacks)
    assert members == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_missing_slice_is_irregular_not_split():
    z = [0, 4, 8, 16, 20]   # z=12 missing
    geo = g.StackGeometry([[0, 0, v] for v in z], AXIAL, [0.5, 0.5], (64, 64))
    assert len(g.split_stacks([[0, 0, v] for v in z], [AXIAL] * 5)) == 1
    assert geo.slice_spacing_mm == pytest.approx(4.0)
    assert not geo.is_regular()


def test_project_onto_stack_known_slice_row_col():
    geo = g.StackGeometry([[-50, -40, z] for z in (0, 5, 10, 15)], AXIAL, [0.5, 0.25], (200, 400))
    p = geo.project([[-50 + 0.25 * 100, -40 + 0.5 * 30, 9.0]])
    assert p["slice"][0] == 2 and p["row"][0] == pytest.approx(30) and p["col"][0] == pytest.approx(100)
    assert p["distance_mm"][0] == pytest.approx(-1.0) and p["in_image"][0]
    far = geo.project([[0, 0, 40]])
    assert not far["in_image"][0]


def test_project_uses_the_chosen_slices_own_origin():
    """Slices of one stack can be shifted in plane (real scanners do it): row and col come from that slice."""
    ipps = [[-50, -40, 0], [-47, -38, 5], [-50, -40, 10]]     # slice 1 shifted 3 mm in x, 2 mm in y
    geo = g.StackGeometry(ipps, AXIAL, [0.5, 0.25], (200, 400))
    # the pixel (row 30, col 100) of slice 1, 1 mm above its plane
    xyz = np.array([-47 + 0.25 * 100, -38 + 0.5 * 30, 6.0])
    p = geo.project([xyz])
    assert p["slice"][0] == 1
    assert p["row"][0] == pytest.approx(30) and p["col"][0] == pytest.approx(100)
    assert p["distance_mm"][0] == pytest.approx(1.0)
    back = geo.to_patient(1, p["row"][0], p["col"][0])
    assert np.allclose(back, xyz - [0, 0, 1.0])


def test_project_refuses_other_frame_of_reference():
    geo = g.StackGeometry([[0, 0, 0]], AXIAL, [1, 1], (10, 10), "1.2.3")
    with pytest.raises(GeometryError):
        g.project_to_stacks([1, 1, 0], [geo], frame_of_reference="9.9.9")


def test_side_of_axial_column_uses_patient_x():
    # An image flipped left-right: columns run towards patient right (-x).
    xs = g.column_x_mm([100, 0, 0], [-1, 0, 0, 0, 1, 0], [1, 1], 200)
    sides = g.side_of(xs, 0.0)
    assert sides[0] == "left" and sides[-1] == "right"


def _vec(s):
    return np.array(ast.literal_eval(s), dtype=float)


def test_real_axial_headers_sort_spacing_orientation(shared):
    df = pd.read_csv(shared / "real_geometry" / "test_study_44036939_axial_headers.csv")
    ipps = np.stack(df.ImagePositionPatient.map(_vec))
    iops = np.stack(df.ImageOrientationPatient.map(_vec))
    shuffled = np.random.default_rng(1).permutation(len(df))
    stacks = g.split_stacks(ipps[shuffled], iops[shuffled])
    assert len(stacks) == 1
    idx = shuffled[stacks[0]]
    geo = g.StackGeometry(ipps[idx], iops[0], [0.625, 0.625], (256, 256))
    assert geo.slice_spacing_mm == pytest.approx(4.4, abs=0.01) and geo.is_regular()
    assert geo.n_slices == 47
    # Sorted along +normal (towards superior): InstanceNumber runs the other way in this series.
    inst = df.instance_number.to_numpy()[idx]
    assert inst[0] == 47 and inst[-1] == 1
    assert g.slice_normal(iops[0])[2] > 0.99 and abs(g.slice_normal(iops[0])[1]) > 0.05   # slightly oblique


def test_real_sagittal_positions_spacing(shared):
    df = pd.read_csv(shared / "real_geometry" / "train_sagittal_t2_instance_positions.csv")
    spacings, regular = [], []
    for _, grp in df.groupby("series_id"):
        shuffled = grp.sample(frac=1.0, random_state=0)
        geo_order = g.sort_by_normal(shuffled[["x_pos", "y_pos", "z_pos"]].to_numpy(), SAGITTAL)
        ipps = shuffled[["x_pos", "y_pos", "z_pos"]].to_numpy()[geo_order]
        geo = g.StackGeometry(ipps, SAGITTAL, [0.5, 0.5], (512, 512))
        spacings.append(geo.slice_spacing_mm)
        regular.append(geo.is_regular())
        # sorted by geometry, instance numbers come out monotonic (either direction)
        d = np.diff(shuffled.instance_number.to_numpy()[geo_order])
        assert np.all(d > 0) or np.all(d < 0)
    assert 3.0 < np.median(spacings) < 5.5
    assert np.mean(regular) > 0.95
