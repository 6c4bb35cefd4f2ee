"""DICOM patient geometry: pure functions on ImagePositionPatient / ImageOrientationPatient / PixelSpacing.

Conventions (DICOM PS3.3 C.7.6.2.1.1), all in patient LPS millimetres:

* ``S`` = ImagePositionPatient, the centre of pixel (row 0, col 0);
* ``F_r`` = IOP[0:3], the direction of increasing column; ``F_c`` = IOP[3:6],
  the direction of increasing row;
* PixelSpacing = ``[dr, dc]`` (row spacing, column spacing);
* slice normal ``n = F_r x F_c``;
* ``P(col, row) = S + col*dc*F_r + row*dr*F_c``.

Index order is always ``(slice, row, col)``. +x is the patient's left.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from .errors import GeometryError


def orientation_axes(iop) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit ``(F_r, F_c, n)`` from an ImageOrientationPatient of 6 numbers."""
    # A study has a handful of orientations, asked for thousands of times: computed once each, keyed by the
    # values' bytes (-0.0 is not 0.0 there), fresh copies returned so a caller may change its arrays.
    return tuple(a.copy() for a in _orientation_axes(np.asarray(iop, dtype=float).reshape(6).tobytes()))


@functools.lru_cache(maxsize=256)
def _orientation_axes(iop_bytes: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    iop = np.frombuffer(iop_bytes, dtype=float)
    f_r, f_c = iop[:3], iop[3:]
    nr, nc = np.linalg.norm(f_r), np.linalg.norm(f_c)
    if nr < 1e-6 or nc < 1e-6:
        raise GeometryError(f"degenerate ImageOrientationPatient {iop.tolist()}")
    f_r, f_c = f_r / nr, f_c / nc
    n = np.cross(f_r, f_c)
    nn = np.linalg.norm(n)
    if nn < 1e-3:
        raise GeometryError(f"ImageOrientationPatient axes are parallel: {iop.tolist()}")
    return f_r, f_c, n / nn


def slice_normal(iop) -> np.ndarray:
    """Unit slice normal ``n = F_r x F_c``."""
    return orientation_axes(iop)[2]


def pixel_to_patient(row, col, ipp, iop, pixel_spacing) -> np.ndarray:
    """Patient LPS mm of pixel positions on one slice.

    Parameters
    ----------
    row, col : array_like
        Pixel coordinates (floats allowed); broadcast against each other.
    ipp : array_like, shape (3,)
        ImagePositionPatient of the slice.
    iop : array_like, shape (6,)
    pixel_spacing : array_like, shape (2,)
        ``[row spacing, column spacing]`` in mm.

    Returns
    -------
    ndarray, shape ``broadcast(row, col).shape + (3,)``

    Examples
    --------
    >>> pixel_to_patient(2, 3, [0, 0, 0], [1, 0, 0, 0, 1, 0], [0.5, 0.25]).tolist()
    [0.75, 1.0, 0.0]
    """
    f_r, f_c, _ = orientation_axes(iop)
    dr, dc = (float(v) for v in pixel_spacing)
    row = np.asarray(row, dtype=float)[..., None]
    col = np.asarray(col, dtype=float)[..., None]
    return np.asarray(ipp, dtype=float) + col * dc * f_r + row * dr * f_c


def patient_to_pixel(xyz, ipp, iop, pixel_spacing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project patient points onto one slice plane.

    Returns ``(row, col, distance_mm)`` where ``distance_mm`` is the signed
    distance of each point from the plane along the slice normal.
    """
    f_r, f_c, n = orientation_axes(iop)
    dr, dc = (float(v) for v in pixel_spacing)
    v = np.asarray(xyz, dtype=float) - np.asarray(ipp, dtype=float)
    return v @ f_c / dr, v @ f_r / dc, v @ n


def slice_offsets_mm(ipps, iop) -> np.ndarray:
    """Position of each slice along the normal, ``n . S`` (mm)."""
    return np.asarray(ipps, dtype=float).reshape(-1, 3) @ slice_normal(iop)


def sort_by_normal(ipps, iop) -> np.ndarray:
    """Indices that order slices by their position along the slice normal.

    Never InstanceNumber or SliceLocation: both are unreliable in the wild.
    """
    return np.argsort(slice_offsets_mm(ipps, iop), kind="stable")


def split_stacks(ipps, iops, *, angle_tol_deg: float = 2.0, gap_factor: float = 2.5) -> list[np.ndarray]:
    """Split the instances of a series into geometric stacks.

    Instances are grouped by orientation (normals within ``angle_tol_deg``),
    each group sorted along its mean normal, and a group is cut again where
    the gap between neighbouring slices exceeds ``gap_factor`` times the
    median gap (many axial series are one oblique stack per disc).

    Returns a list of index arrays into the inputs, each sorted along the
    normal, ordered by their mean position along the first stack's normal.
    """
    ipps = np.asarray(ipps, dtype=float).reshape(-1, 3)
    iops = np.asarray(iops, dtype=float).reshape(-1, 6)
    if len(ipps) != len(iops):
        raise GeometryError("ipps and iops differ in length")
    normals = np.array([slice_normal(o) for o in iops])
    cos_tol = np.cos(np.deg2rad(angle_tol_deg))
    groups: list[list[int]] = []
    for i, nrm in enumerate(normals):
        for g in groups:
            if abs(float(normals[g[0]] @ nrm)) >= cos_tol:
                g.append(i)
                break
        else:
            groups.append([i])
    stacks: list[np.ndarray] = []
    for g in groups:
        idx = np.asarray(g)
        nrm = normals[idx[0]]
        pos = ipps[idx] @ nrm
        order = np.argsort(pos, kind="stable")
        idx, pos = idx[order], pos[order]
        if len(idx) > 2:
            gaps = np.diff(pos)
            positive = gaps[gaps > 1e-3]
            med = float(np.median(positive)) if len(positive) else 0.0
            cuts = np.flatnonzero(gaps > gap_factor * med) + 1 if med > 0 else np.array([], int)
            stacks.extend(np.split(idx, cuts))
        else:
            stacks.append(idx)
    ref = normals[0]
    stacks.sort(key=lambda s: float(np.mean(ipps[s] @ ref)))
    return stacks


@dataclass(frozen=True)
class StackGeometry:
    """Geometry of one stack of parallel slices, sorted along the normal.

    Attributes
    ----------
    positions_mm : ndarray (k, 3)
        ImagePositionPatient of each slice, in normal order.
    iop : ndarray (6,)
    pixel_spacing_mm : ndarray (2,)
        ``[row, col]`` spacing.
    shape : tuple (rows, cols)
    frame_of_reference : str
    """

    positions_mm: np.ndarray
    iop: np.ndarray
    pixel_spacing_mm: np.ndarray
    shape: tuple[int, int]
    frame_of_reference: str = ""
    offsets_mm: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pos = np.asarray(self.positions_mm, dtype=float).reshape(-1, 3)
        object.__setattr__(self, "positions_mm", pos)
        object.__setattr__(self, "iop", np.asarray(self.iop, dtype=float).reshape(6))
        object.__setattr__(self, "pixel_spacing_mm", np.asarray(self.pixel_spacing_mm, dtype=float).reshape(2))
        offs = slice_offsets_mm(pos, self.iop)
        if len(offs) > 1 and np.any(np.diff(offs) < -1e-6):
            raise GeometryError("StackGeometry positions must be sorted along the slice normal")
        object.__setattr__(self, "offsets_mm", offs)

    @property
    def normal(self) -> np.ndarray:
        return slice_normal(self.iop)

    @property
    def n_slices(self) -> int:
        return len(self.positions_mm)

    @property
    def slice_spacing_mm(self) -> float:
        """Median distance between neighbouring slices (NaN for one slice)."""
        if self.n_slices < 2:
            return float("nan")
        return float(np.median(np.diff(self.offsets_mm)))

    def is_regular(self, *, tol: float = 0.1) -> bool:
        """True when every gap is within ``tol`` (relative) of the median gap."""
        if self.n_slices < 3:
            return True
        gaps = np.diff(self.offsets_mm)
        med = self.slice_spacing_mm
        return bool(np.all(np.abs(gaps - med) <= tol * med))

    def to_patient(self, slice_index, row, col) -> np.ndarray:
        """Patient mm of ``(slice, row, col)``; ``slice_index`` must be an integer."""
        ipp = self.positions_mm[np.asarray(slice_index, dtype=int)]
        f_r, f_c, _ = orientation_axes(self.iop)
        dr, dc = self.pixel_spacing_mm
        row = np.asarray(row, dtype=float)[..., None]
        col = np.asarray(col, dtype=float)[..., None]
        return ipp + col * dc * f_r + row * dr * f_c

    def project(self, xyz) -> dict[str, np.ndarray]:
        """Project patient points onto this stack.

        Returns a dict of arrays: ``slice`` (nearest slice index), ``row``,
        ``col``, ``distance_mm`` (out-of-plane distance to that slice, signed)
        and ``in_image`` (the point is within half a slice spacing of the
        slice and inside the pixel grid).
        """
        xyz = np.atleast_2d(np.asarray(xyz, dtype=float))
        d = xyz @ self.normal
        k = np.abs(d[:, None] - self.offsets_mm[None, :]).argmin(axis=1)
        # Each slice's own origin: slices of one stack can be shifted in plane (real scanners do it).
        f_r, f_c, _ = orientation_axes(self.iop)
        dr, dc = self.pixel_spacing_mm
        v = xyz - self.positions_mm[k]
        row, col = v @ f_c / dr, v @ f_r / dc
        dist = d - self.offsets_mm[k]
        half = self.slice_spacing_mm / 2 if self.n_slices > 1 else 2.5
        rows, cols = self.shape
        inside = (row >= -0.5) & (row <= rows - 0.5) & (col >= -0.5) & (col <= cols - 0.5)
        return {
            "slice": k,
            "row": row,
            "col": col,
            "distance_mm": dist,
            "in_image": inside & (np.abs(dist) <= half + 1e-6),
        }


def project_to_stacks(xyz, stacks: list[StackGeometry], *, frame_of_reference: str) -> dict:
    """Project one patient point onto the best of several stacks.

    The stack chosen is the one whose nearest slice is closest in the
    out-of-plane direction (among those where the point falls inside the
    image, when any). Returns the :meth:`StackGeometry.project` fields for the
    point as scalars plus ``stack`` (index into ``stacks``).

    ``frame_of_reference`` is the FrameOfReferenceUID the point was found in
    (required: every caller states it); ``""`` matches only stacks without one.

    Raises
    ------
    GeometryError
        When a stack has another frame of reference: points only transfer
        between series of the same frame.
    """
    if not stacks:
        raise GeometryError("no stacks to project onto")
    best = None
    for i, st in enumerate(stacks):
        if st.frame_of_reference != frame_of_reference:
            raise GeometryError("cannot project between different FrameOfReferenceUIDs")
        p = {k: v[0] for k, v in st.project(xyz).items()}
        key = (not bool(p["in_image"]), abs(float(p["distance_mm"])))
        if best is None or key < best[0]:
            best = (key, i, p)
    _, i, p = best
    out = {"stack": i}
    out.update({k: (bool(v) if k == "in_image" else (int(v) if k == "slice" else float(v))) for k, v in p.items()})
    return out


def sagittal_slice_x_mm(ipps) -> np.ndarray:
    """Patient x (mm, +left) of each sagittal slice."""
    return np.asarray(ipps, dtype=float).reshape(-1, 3)[:, 0]


def column_x_mm(ipp, iop, pixel_spacing, n_cols: int, *, row: float = 0.0) -> np.ndarray:
    """Patient x (mm, +left) of every column of an axial image, along ``row``."""
    cols = np.arange(int(n_cols), dtype=float)
    return pixel_to_patient(np.full_like(cols, row), cols, ipp, iop, pixel_spacing)[:, 0]


def side_of(x_mm, midline_x_mm) -> np.ndarray:
    """``'left'`` where a patient x is left of (greater than) the midline, else ``'right'``."""
    return np.where(np.asarray(x_mm, dtype=float) > float(midline_x_mm), "left", "right")


def axial_directions(iop) -> tuple[tuple[float, float], tuple[float, float]]:
    """Unit (row, col) image directions towards the patient's back (+y) and left (+x) on an axial slice.

    From ImageOrientationPatient only: moving one row goes along ``F_c``, one column along ``F_r``, so
    the in-plane direction of a patient axis ``a`` is ``(F_c[a], F_r[a])`` (normalised). A slice that
    holds no component of an axis gets the image default ((1, 0) back, (0, 1) left).
    """
    f_r, f_c, _ = orientation_axes(iop)
    out = []
    for axis, default in ((1, (1.0, 0.0)), (0, (0.0, 1.0))):
        v = np.array([f_c[axis], f_r[axis]])
        n = float(np.linalg.norm(v))
        out.append(tuple(float(a) for a in v / n) if n > 1e-3 else default)
    return out[0], out[1]
