"""Where and how each series of a study is acquired: stacks, spacing, obliquity, instance order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dataset import LEVELS
from ..geometry import StackGeometry
from .anatomy import LUMBAR_DISC0, VERTEBRAE, Phantom


@dataclass
class SeriesPlan:
    """Where and how a series is acquired."""

    description: str          # RSNA series type
    sequence: str             # T1, T2 or STIR
    stacks: list[StackGeometry]
    thickness_mm: float
    instance_order: list[list[int]]   # per stack, InstanceNumber of each slice (normal order)


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    ang = np.deg2rad(rng.uniform(0, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(ang) * k + (1 - np.cos(ang)) * (k @ k)


def _stack(centre, f_r, f_c, n_slices, spacing, size, pixel_mm, frame) -> StackGeometry:
    n = np.cross(f_r, f_c)
    offs = (np.arange(n_slices) - (n_slices - 1) / 2) * spacing
    corner = centre - (size - 1) / 2 * pixel_mm * (f_r + f_c)
    pos = corner[None, :] + offs[:, None] * n[None, :]
    return StackGeometry(pos, np.concatenate([f_r, f_c]), [pixel_mm, pixel_mm], (size, size), frame)


def plan_study(rng: np.random.Generator, ph: Phantom, frame: str) -> dict[str, SeriesPlan]:
    """Draw the three series' geometry in the real ranges (sizes, spacings, obliquity, order)."""
    l3 = VERTEBRAE.index("L3")
    s_mid = ph.body_top[l3] + ph.body_h[l3] * 0.7
    plans: dict[str, SeriesPlan] = {}
    # Sagittal: columns towards posterior, rows towards inferior; 15-21 slices of 3.3-6 mm.
    rot = _rotation(rng, 4.0)
    f_r, f_c = rot @ np.array([0.0, 1.0, 0.0]), rot @ np.array([0.0, 0.0, -1.0])
    n_sag = int(rng.choice([13, 15, 15, 15, 17, 17, 18, 19, 20, 21]))
    sp_sag = float(rng.choice([3.3, 3.6, 4.0, 4.4, 4.5, 4.5, 4.8, 5.0, 5.0, 6.0]))
    size_sag = int(rng.choice([384, 448, 512, 512, 640]))
    fov_sag = rng.uniform(260, 330)
    # Real fields of view are centred on the bodies as often as on the canal, and not always on L3.
    centre = ph.to_patient(rng.normal(0, 2.5), rng.normal(-12, 12), s_mid + rng.normal(0, 15))
    shared = rng.random() < 0.5
    for desc, seq in (("Sagittal T1", "T1"), ("Sagittal T2/STIR", "STIR" if rng.random() < 0.2 else "T2")):
        n, sp, size = n_sag, sp_sag, size_sag
        if not shared and desc == "Sagittal T2/STIR":
            n = int(np.clip(n + rng.integers(-2, 3), 11, 23))
            sp = float(np.clip(sp + rng.choice([-0.4, 0, 0.4]), 3.0, 6.0))
        geo = _stack(centre, f_r, f_c, n, sp, size, round(fov_sag / size, 4), frame)
        order = list(range(1, n + 1))
        # Normal points to patient right: positions in normal order run left->right.
        if rng.random() < 0.64:     # 64 % of real series number instances right -> left (increasing x)
            order = order[::-1]
        thick = sp - rng.uniform(0.3, 1.0)
        if shared and desc == "Sagittal T2/STIR":     # the same slices: the same slab (and one trace of them)
            thick = plans["Sagittal T1"].thickness_mm
        plans[desc] = SeriesPlan(desc, seq, [geo], thick, [order])
    # Axial T2: one stack through L1-S1, or one oblique stack per disc.
    size_ax = int(rng.choice([256, 320, 384, 448, 512]))
    fov_ax = rng.uniform(150, 210)
    px_ax = round(fov_ax / size_ax, 4)
    c_uv = (rng.normal(0, 6), rng.normal(-10, 12))
    top_first = rng.random() < 0.5
    stacks = []
    if rng.random() < 0.6:
        s0 = ph.body_top[LUMBAR_DISC0] + rng.uniform(0, 0.4) * ph.body_h[LUMBAR_DISC0]
        s1 = ph.sacrum_top + rng.uniform(5, 20)
        sp = float(rng.choice([3.5, 4.0, 4.4, 4.5, 5.0]))
        n = int(np.ceil((s1 - s0) / sp)) + 1
        s_c = (s0 + s1) / 2
        rot = _rotation(rng, 5.0)
        t = ph.tangent(s_c)
        f_r = rot @ np.array([1.0, 0.0, 0.0])
        f_c = rot @ np.array([0.0, t[2], -t[1]])
        stacks.append(_stack(ph.to_patient(*c_uv, s_c), f_r, f_c, n, sp, size_ax, px_ax, frame))
    else:
        sp = float(rng.choice([3.0, 3.5, 4.0, 4.5]))
        for li in range(len(LEVELS)):
            di = LUMBAR_DISC0 + li
            s_c = ph.disc_centre[di] + rng.normal(0, 1.0)
            t = ph.tangent(s_c)
            rot = _rotation(rng, 3.0)
            f_r = rot @ np.array([1.0, 0.0, 0.0])
            f_c = rot @ np.array([0.0, t[2], -t[1]])
            n = int(rng.integers(3, 7))
            stacks.append(_stack(ph.to_patient(*c_uv, s_c), f_r, f_c, n, sp, size_ax, px_ax, frame))
    # Instance numbers continue across stacks, superior first or inferior first.
    sup = [np.argsort(-(st.positions_mm[:, 2])) for st in stacks]
    stack_order = sorted(range(len(stacks)), key=lambda i: -stacks[i].positions_mm[:, 2].mean())
    if not top_first:
        stack_order = stack_order[::-1]
    numbers = [[0] * st.n_slices for st in stacks]
    nxt = 1
    for si in stack_order:
        seq = sup[si] if top_first else sup[si][::-1]
        for k in seq:
            numbers[si][k] = nxt
            nxt += 1
    plans["Axial T2"] = SeriesPlan("Axial T2", "T2", stacks, sp - rng.uniform(0.0, 0.8), numbers)
    return plans
