"""One patient's anatomy in spine-local coordinates: the frame, the narrowing geometry, the draw.

The tissue at a point is :func:`.tissue.tissue`; the phantom here holds the
shape parameters and the geometry that is also the truth of the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dataset import LEVELS

VERTEBRAE = ("T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")
LUMBAR_DISC0 = VERTEBRAE.index("L1")  # disc index of L1/L2 (disc i lies below vertebra i)


@dataclass
class Phantom:
    """The anatomy of one study in spine-local coordinates (``u``, ``v``, ``s``: see :mod:`spinefeat.synth`)."""

    x0: float               # patient x of the midline (mm)
    centre_y: float         # lordosis circle centre, patient y (mm)
    centre_z: float         # lordosis circle centre, patient z (mm)
    radius: float           # lordosis radius (mm)
    s_apex: float           # s of the arc point nearest the circle's anterior pole
    body_top: np.ndarray    # s of each vertebral body's upper endplate (len 10)
    body_h: np.ndarray      # body heights (mm)
    disc_h: np.ndarray      # disc heights (mm), disc i below body i (len 10, last = L5/S1)
    body_a: np.ndarray      # body half widths (mm)
    body_d: np.ndarray      # body half AP depths (mm)
    canal_w: float          # bony canal half width (mm)
    canal_d: float          # bony canal half AP depth (mm)
    sac_a: float            # dural sac lateral semi-axis (mm)
    sac_b: float            # dural sac AP semi-axis (mm)
    f_canal: np.ndarray     # (10,) latent canal narrowing per disc
    f_foramen: np.ndarray   # (10, 2) per disc, [left, right]
    f_recess: np.ndarray    # (10, 2)
    hydration: np.ndarray   # (10,) nucleus T2 brightness factor
    foramen_h: float        # foraminal fat semi-height (mm)
    foramen_w: float        # foraminal fat semi-width (mm)
    foramen_dir: np.ndarray  # (10, 2) 0: loses height first, 1: loses width first
    rootlets: np.ndarray    # (n, 2) normalised sac positions (rho cos, rho sin)
    waves: np.ndarray       # (k, 4) texture waves: kx, ky, kz, phase
    skin_a: float
    skin_b: float
    skin_vc: float
    fat_mm: float

    # -- frames ------------------------------------------------------------
    @property
    def disc_centre(self) -> np.ndarray:
        return self.body_top + self.body_h + self.disc_h / 2

    @property
    def sacrum_top(self) -> float:
        return float(self.body_top[-1] + self.body_h[-1] + self.disc_h[-1])

    def to_local(self, xyz) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Spine-local ``(u, v, s)`` of patient points: an array (..., 3) or a tuple of x, y, z arrays."""
        x, y, z = xyz if isinstance(xyz, tuple) else (np.asarray(xyz, np.float64)[..., i] for i in range(3))
        dy = self.centre_y - y
        dz = z - self.centre_z
        return x - self.x0, self.radius - np.hypot(dy, dz), self.s_apex - self.radius * np.arctan2(dz, dy)

    def to_patient(self, u, v, s) -> np.ndarray:
        """Patient LPS mm (..., 3) of spine-local points (inverse of :meth:`to_local`)."""
        u, v, s = np.broadcast_arrays(*(np.asarray(a, float) for a in (u, v, s)))
        theta = (self.s_apex - s) / self.radius
        r = self.radius - v
        return np.stack([self.x0 + u, self.centre_y - r * np.cos(theta), self.centre_z + r * np.sin(theta)], axis=-1)

    def tangent(self, s: float) -> np.ndarray:
        """Unit vector along the spine at ``s``, pointing superior (patient +z side)."""
        theta = (self.s_apex - s) / self.radius
        return np.array([0.0, np.sin(theta), np.cos(theta)])

    # -- narrowing geometry (also the truth of the measurements) ------------
    def sac_axes(self, f: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Sac semi-axes when its area is reduced by fraction ``f``."""
        keep = 1.0 - np.asarray(f, float)
        return self.sac_a * keep ** 0.35, self.sac_b * keep ** 0.65

    def sac_centre_v(self, sb):
        """AP position of the sac centre: it drifts back a little as the disc pushes on it."""
        return 1.0 + self.sac_b + (self.sac_b - sb) * 0.15

    def foramen_axes(self, f: np.ndarray | float, direction) -> tuple[np.ndarray, np.ndarray]:
        """Foraminal fat semi-height and semi-width for narrowing ``f``.

        Fat is lost first in one pair of opposing directions (up-down when
        ``direction == 0``, front-back otherwise), then in all four.
        """
        f = np.asarray(f, float)
        direction = np.asarray(direction)
        first = np.clip(f / 0.5, 0, 1)
        second = np.clip((f - 0.33) / 0.55, 0, 1)
        h_min, w_min = 1.6, 1.2
        lose_h = np.where(direction == 0, first, second)
        lose_w = np.where(direction == 0, second, first)
        return (self.foramen_h - (self.foramen_h - h_min) * lose_h,
                self.foramen_w - (self.foramen_w - w_min) * lose_w)

    def recess_axes(self, f: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Lateral recess lobe semi-axes (lateral, AP) for narrowing ``f``.

        A normal recess is about 5 mm deep (first drawn 6.7 mm; the segmenter read a median depth of 5.8 mm
        on phantoms against 3.3 mm on the real Axial T2 crops, areas 105 against 65 mm2). Smaller recesses
        with the root moved medially did not bring the depth it reads down (6.5 mm): it overshoots the
        phantoms' true depth by 2.5 mm, a gap of the segmenter left open.
        """
        f = np.asarray(f, float)
        return 4.0 * (1 - 0.85 * f) + 0.4, 2.45 * (1 - 0.95 * f) + 0.15

    @property
    def foramen_u(self) -> float:
        """|u| of the middle of the foramen (mm)."""
        return self.canal_w + 6.0

    @property
    def recess_u(self) -> float:
        return self.canal_w - 2.5

    #: AP position (v, mm) of the foraminal keyhole centre.
    FORAMEN_V = 5.0

    def foramen_centre_s(self, disc):
        """``s`` of the foraminal keyhole centre at a disc index (or an array of them)."""
        return self.disc_centre[disc] - 0.2 * self.body_h[disc]


def make_phantom(rng: np.random.Generator, latents: dict[str, dict]) -> Phantom:
    """Draw a patient: size, lordosis, position in the scanner, and its narrowing."""
    nb = len(VERTEBRAE)
    scale = rng.normal(1.0, 0.05)
    body_h = (np.linspace(21, 28, nb) + rng.normal(0, 0.8, nb)) * scale
    disc_h = (np.linspace(5.5, 11, nb) + rng.normal(0, 0.6, nb)) * scale
    disc_h[-1] = rng.uniform(8, 11) * scale
    body_a = np.linspace(19, 26, nb) * scale * rng.normal(1, 0.04)
    body_d = np.linspace(14.5, 18, nb) * scale * rng.normal(1, 0.04)
    body_top = np.concatenate([[0.0], np.cumsum(body_h + disc_h)[:-1]])
    f_canal = rng.uniform(0, 0.08, nb)
    f_for = rng.uniform(0, 0.1, (nb, 2))
    f_rec = rng.uniform(0, 0.1, (nb, 2))
    # Disc water (nucleus T2/STIR signal): RSNA patients are mostly past middle age, and on their real
    # Sagittal T2/STIR series (and SPIDER's) many discs are grey or dark, not the bright bands of young discs.
    hydration = rng.uniform(0.35, 1.0, nb)
    for li, lv in enumerate(LEVELS):
        di = LUMBAR_DISC0 + li
        f_canal[di] = latents[f"spinal_canal_stenosis_{lv}"]["f"]
        f_for[di] = [latents[f"left_neural_foraminal_narrowing_{lv}"]["f"],
                     latents[f"right_neural_foraminal_narrowing_{lv}"]["f"]]
        f_rec[di] = [latents[f"left_subarticular_stenosis_{lv}"]["f"],
                     latents[f"right_subarticular_stenosis_{lv}"]["f"]]
        worst = max(f_canal[di], *f_for[di], *f_rec[di])
        # Degenerated discs lose T2 signal and height.
        hydration[di] = float(np.clip(hydration[di] * (1.0 - 0.8 * worst) + rng.normal(0, 0.08), 0.15, 1.0))
        disc_h[di] *= 1.0 - 0.3 * worst
    body_top = np.concatenate([[0.0], np.cumsum(body_h + disc_h)[:-1]])
    l3 = VERTEBRAE.index("L3")
    s_apex = body_top[l3] + body_h[l3] + rng.normal(0, 12)
    radius = rng.uniform(300, 560)
    # Where the patient lies in scanner space (real IPPs vary by hundreds of mm).
    apex_y = rng.uniform(-40, 25)
    apex_z = rng.uniform(-220, 160)
    n_root = int(rng.integers(16, 24))
    rho = np.sqrt(rng.uniform(0.02, 0.62, n_root))
    phi = np.pi / 2 + rng.normal(0, 0.95, n_root)       # dependent (posterior) clustering
    rootlets = np.stack([rho * np.cos(phi), rho * np.sin(phi)], axis=1)
    k = rng.uniform(0.04, 0.25, (7, 3)) * rng.choice([-1, 1], (7, 3))
    waves = np.concatenate([k, rng.uniform(0, 2 * np.pi, (7, 1))], axis=1)
    fat = rng.uniform(10, 30)
    post = rng.uniform(72, 88) + fat      # skin behind the spinous processes
    ant = -rng.uniform(130, 175)          # anterior abdominal wall
    return Phantom(
        x0=rng.normal(0, 10), centre_y=apex_y + radius, centre_z=apex_z, radius=radius, s_apex=s_apex,
        body_top=body_top, body_h=body_h, disc_h=disc_h, body_a=body_a, body_d=body_d,
        canal_w=rng.uniform(10.5, 12.5) * scale, canal_d=rng.uniform(8.0, 9.2) * scale,
        sac_a=rng.uniform(8.0, 9.6) * scale, sac_b=rng.uniform(6.0, 7.2) * scale,
        f_canal=f_canal, f_foramen=f_for, f_recess=f_rec, hydration=hydration,
        foramen_h=rng.uniform(8.0, 9.5), foramen_w=rng.uniform(3.4, 4.0),
        foramen_dir=rng.integers(0, 2, (nb, 2)), rootlets=rootlets, waves=waves,
        skin_a=rng.uniform(140, 185), skin_b=(post - ant) / 2, skin_vc=(post + ant) / 2, fat_mm=fat,
    )
