"""Synthetic lumbar spine studies written as real DICOM files in the exact RSNA layout.

A study is an analytic 3-D phantom defined in spine-local coordinates and
rendered through real DICOM geometry, so every series of a study agrees in
patient space exactly as a real study does:

* ``u`` (mm): lateral, ``+`` towards the patient's left (LPS +x);
* ``v`` (mm): antero-posterior, ``0`` on the posterior wall of the vertebral
  bodies, ``+`` posterior;
* ``s`` (mm): along the spine, ``+`` inferior, following a circular lordotic
  arc so that discs tilt progressively as in real spines.

Severity is rendered, not only written: each (condition, level) has a latent
narrowing fraction ``f`` in [0, 1) drawn from a Gaussian copula whose margins
are the real class frequencies of train.csv (``data/label_stats.json``); the
dural sac area at the disc is ``(1 - f)`` of the patient's own normal (Lurie
thirds), the foraminal fat keyhole shrinks around the root and finally
deforms it (Lee), and the lateral recess closes (Bartynski). A small fraction
of labels disagrees with the rendered grade near grade boundaries, to mimic
reader disagreement.

The truth sidecar (``truth/``) keeps the latent values, the true grades and
the true measurements in mm, plus the labels and coordinates of the test
split.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from . import __version__
from .dataset import CONDITION_SERIES, CONDITIONS, LEVEL_NAMES, LEVELS, SEVERITIES, TARGETS, TRAIN_COLUMNS
from .geometry import StackGeometry, orientation_axes, project_to_stacks

log = logging.getLogger(__name__)

# Tissue codes ---------------------------------------------------------------
AIR, FAT, MUSCLE, MARROW, CORTEX, ANNULUS, NUCLEUS, CSF, NERVE, EPIFAT, LIGAMENT, POST_BONE, VISCERA, VESSEL, \
    JOINT = range(15)
TISSUES = ("air", "fat", "muscle", "marrow", "cortex", "annulus", "nucleus", "csf", "nerve", "epidural_fat",
           "ligament", "posterior_bone", "viscera", "vessel", "joint_fluid")
#: Relative signal per tissue for T1, T2 and STIR (CSF on T2 = 1).
CONTRAST = {
    # T1 soft tissue and marrow about 1.3 x brighter against fat than first drawn: on real Sagittal T1 slices
    # the foramen's fat peak is about twice the tissue around it (median 1.98 over 4,935 foramina, phantoms
    # 2.66) and the root about 0.6 of the fat (phantoms 0.76); reports/real_check/real_vs_phantom.png.
    "T1": np.array([0.0, 0.95, 0.39, 0.78, 0.04, 0.36, 0.43, 0.10, 0.47, 0.90, 0.29, 0.68, 0.24, 0.04, 0.12]),
    "T2": np.array([0.0, 0.82, 0.19, 0.42, 0.04, 0.15, 0.78, 1.00, 0.26, 0.70, 0.11, 0.36, 0.24, 0.04, 0.80]),
    "STIR": np.array([0.0, 0.07, 0.24, 0.20, 0.04, 0.18, 0.82, 1.00, 0.30, 0.07, 0.13, 0.18, 0.45, 0.04, 0.85]),
}
#: The lateral recesses' fat on T2 brighter than the epidural fat around the sac: on the real Axial T2 crops
#: the brightest tissue within 3 mm of a recess point is 0.80 of the series' 99.5th percentile (median of
#: 1,251 recesses) and the point itself 0.47; phantoms drawn with the epidural fat's 0.70 gave 0.63 and
#: 0.32, at 0.80 they give 0.68 and 0.35 (real-check --phantom). Not further: at 0.88 the recess fat joins
#: the sac's CSF in the segmentation (phantom sac area error 8.7 % -> 14.4 %), and the fat around the sac
#: at 0.80-0.92 does the same (16-52 %), as on the real crops, where posterior fat is often the brightest.
RECESS_FAT = len(TISSUES)
TISSUES = TISSUES + ("recess_fat",)
for _seq, _v in (("T1", CONTRAST["T1"][EPIFAT]), ("T2", 0.80), ("STIR", CONTRAST["STIR"][EPIFAT])):
    CONTRAST[_seq] = np.append(CONTRAST[_seq], _v)
# Region codes (what a label point marks) -------------------------------------
SAC, FORAMEN_L, FORAMEN_R, RECESS_L, RECESS_R = 1, 2, 3, 4, 5
REGIONS = {"sac": SAC, "left_foramen": FORAMEN_L, "right_foramen": FORAMEN_R,
           "left_recess": RECESS_L, "right_recess": RECESS_R}

VERTEBRAE = ("T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")
LUMBAR_DISC0 = VERTEBRAE.index("L1")  # disc index of L1/L2 (disc i lies below vertebra i)
#: Latent narrowing fraction band of each grade (Lurie thirds for the canal).
GRADE_BANDS = ((0.0, 0.33), (0.33, 0.66), (0.66, 0.88))
#: Noise between the latent a reader sees and the one rendered (see :func:`draw_latents`).
READER_NOISE = 0.25
_ND = NormalDist()


def label_stats() -> dict:
    """Per-target class frequencies and empty-cell rates of the real train.csv (packaged aggregates)."""
    with resources.files("spinefeat").joinpath("data/label_stats.json").open() as fh:
        return json.load(fh)


# ---------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------

def _grade_and_f(z: float, p) -> tuple[int, float]:
    """Grade of latent ``z`` under class frequencies ``p``, and ``f`` placed monotonically in its band."""
    q = _ND.cdf(z)
    cum = np.cumsum([0.0] + list(p))
    cum[-1] = 1.0
    grade = int(min(np.searchsorted(cum, q, side="right") - 1, 2))
    lo_q, hi_q = cum[grade], cum[grade + 1]
    frac = 0.5 if hi_q <= lo_q else (q - lo_q) / (hi_q - lo_q)
    lo_f, hi_f = GRADE_BANDS[grade]
    return grade, lo_f + (hi_f - lo_f) * float(np.clip(frac, 0.0, 1.0))


def draw_latents(rng: np.random.Generator, stats: dict | None = None) -> dict[str, dict]:
    """Latent narrowing, rendered grade and written label for the 25 targets of one study.

    A Gaussian copula: ``z = 0.45 z_study + 0.6 z_level + 0.66 e`` reproduces
    the real correlation between conditions at one level (~0.6) and between
    levels (~0.2); per-target thresholds reproduce the real class balance.
    The label is read from ``z``; the image is rendered from
    ``z_img = sqrt(1 - t^2) z + t e'`` (``t`` = :data:`READER_NOISE`), so labels
    and images disagree near grade boundaries, as readers do, while both keep
    the real class balance.
    """
    stats = stats or label_stats()
    z_study = rng.standard_normal()
    z_level = rng.standard_normal(len(LEVELS))
    out = {}
    for cond in CONDITIONS:
        for li, lv in enumerate(LEVELS):
            tgt = f"{cond}_{lv}"
            st = stats["targets"][tgt]
            z = 0.45 * z_study + 0.6 * z_level[li] + 0.66 * rng.standard_normal()
            z_img = np.sqrt(1 - READER_NOISE ** 2) * z + READER_NOISE * rng.standard_normal()
            label, _ = _grade_and_f(z, st["p"])
            grade, f = _grade_and_f(z_img, st["p"])
            empty = rng.random() < st["empty"]
            out[tgt] = {"f": f, "grade": grade, "label": None if empty else label}
    return out


# ---------------------------------------------------------------------------
# Phantom anatomy
# ---------------------------------------------------------------------------

@dataclass
class Phantom:
    """The anatomy of one study in spine-local coordinates (see module docstring)."""

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
        """Lateral recess lobe semi-axes (lateral, AP) for narrowing ``f``."""
        f = np.asarray(f, float)
        return 4.5 * (1 - 0.85 * f) + 0.4, 3.2 * (1 - 0.95 * f) + 0.15

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

    # -- the tissue function -----------------------------------------------
    def tissue(self, xyz) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tissue code, region code and a per-pixel signal factor for patient points (..., 3)."""
        return self.tissue_local(*self.to_local(xyz))

    def tissue_local(self, u, v, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`tissue` from spine-local coordinates.

        On a 2-D grid the large soft-tissue compartments (tens of mm wide) are
        evaluated on every second pixel and upsampled; the spine at full
        resolution.
        """
        shape = np.shape(u)
        if len(shape) == 2 and min(shape) > 1:
            h, w = shape
            lab_c, gain_c = self._soft_tissue(*(a[::2, ::2].ravel() for a in (u, v, s)))
            ch, cw = (h + 1) // 2, (w + 1) // 2

            def up(a):
                return np.repeat(np.repeat(a.reshape(ch, cw), 2, 0), 2, 1)[:h, :w].ravel()

            lab, gain = up(lab_c), up(gain_c)
        else:
            lab, gain = self._soft_tissue(*(np.ravel(a) for a in (u, v, s)))
        u, v, s = (np.ravel(a) for a in (u, v, s))
        reg = np.zeros(u.size, np.uint8)
        au = np.abs(u)
        # The spine itself, only where it can be.
        near = (lab != AIR) & (au < 48) & (v > -45) & (v < 2 * self.canal_d + 52)
        idx = np.flatnonzero(near)
        if idx.size:
            self._spine(u[idx], v[idx], s[idx], lab, reg, gain, idx)
        return lab.reshape(shape), reg.reshape(shape), gain.reshape(shape)

    def _soft_tissue(self, u, v, s) -> tuple[np.ndarray, np.ndarray]:
        n = u.size
        lab = np.zeros(n, np.uint8)
        gain = np.ones(n, np.float32)
        au = np.abs(u)
        # Body outline, subcutaneous fat, abdominal wall and viscera follow a straight body axis
        # (the back is nearly flat while the spine inside it curves).
        theta = (self.s_apex - s) / self.radius
        vb = self.radius - (self.radius - v) * np.cos(theta)
        sup = (au / self.skin_a) ** 3 + (np.abs(vb - self.skin_vc) / self.skin_b) ** 3
        inside = sup <= 1.0
        lab[inside] = FAT
        fat = self.fat_mm
        wall = ((au / (self.skin_a - fat)) ** 3 + (np.abs(vb - self.skin_vc) / (self.skin_b - fat)) ** 3) <= 1.0
        lab[wall & (vb < -5)] = MUSCLE     # abdominal wall, not behind the spine
        deep = ((au / (self.skin_a - fat - 9)) ** 3 + (np.abs(vb - self.skin_vc) / (self.skin_b - fat - 9)) ** 3) <= 1.0
        lab[deep] = VISCERA
        tex = np.zeros(n, np.float32)
        tex[inside] = self._texture(u[inside], v[inside], s[inside])
        gain[inside] = (1.0 + 0.1 * tex[inside]).astype(np.float32)
        vis = deep & (v < -10)
        gain[vis] = (0.75 + 0.12 * tex[vis]).astype(np.float32)
        # Posterior compartment (quadratus lumborum, erector spinae, multifidus) hugging the spine.
        post = deep & ((au / 92) ** 2 + ((v - 22) / 40) ** 2 <= 1)
        lab[post] = MUSCLE
        streak = post & (v > 2) & (np.abs(tex) < 0.06)
        lab[streak] = FAT
        # Interspinous and supraspinous ligaments: dark tissue in the posterior midline.
        lab[inside & (au < 6) & (v > 2 * self.canal_d) & (vb < self.skin_vc + self.skin_b - fat)] = LIGAMENT
        # Psoas, growing inferiorly.
        ps_size = np.clip((s - self.body_top[LUMBAR_DISC0]) / 110.0, 0.0, 1.0)
        ps_a = 5 + 17 * ps_size
        for side in (-1, 1):
            m = deep & (ps_a > 5.5) & ((((u - side * (self.body_a.mean() + ps_a * 0.8)) / ps_a) ** 2
                                        + ((v + self.body_d.mean() * 0.9) / (ps_a * 1.1)) ** 2) <= 1)
            lab[m] = MUSCLE
        # Great vessels anterior to the spine; the aorta divides at L4.
        bif = self.body_top[VERTEBRAE.index("L4")] + 0.5 * self.body_h[VERTEBRAE.index("L4")]
        v_ves = -2 * self.body_d.mean() - 9
        spread = np.clip(s - bif, 0, None) * 0.35
        aorta = np.where(s < bif, (u - 12) ** 2 + (v - v_ves) ** 2 <= 10 ** 2,
                         np.minimum((u - 12 - spread) ** 2, (u - 12 + spread + 8) ** 2) + (v - v_ves) ** 2 <= 6.5 ** 2)
        ivc = ((u + 20) / 11) ** 2 + ((v - v_ves - 2) / 8) ** 2 <= 1
        lab[deep & (aorta | ivc) & (s < self.sacrum_top + 30)] = VESSEL
        # Iliac wings lateral to the sacrum.
        l5 = VERTEBRAE.index("L5")
        s_il = self.body_top[l5] + 0.4 * self.body_h[l5]
        il = deep & (s > s_il) & (s < self.sacrum_top + 85)
        il_in = 42 + 0.25 * (s - s_il)
        il &= (au > il_in) & (au < il_in + 55) & (v > -25 + 0.3 * (au - il_in)) & (v < 8 + 0.35 * (au - il_in))
        lab[il] = MARROW
        lab[il & (np.abs(au - il_in) < 2.0)] = CORTEX

        return lab, gain

    def _texture(self, u, v, s) -> np.ndarray:
        w = self.waves
        acc = np.zeros(u.shape, np.float32)
        for kx, ky, kz, ph in w:
            acc += np.sin(kx * u + ky * v + kz * s + ph).astype(np.float32)
        return acc / np.sqrt(len(w) / 2)

    def _spine(self, u, v, s, lab, reg, gain, idx) -> None:  # noqa: C901 - one anatomical walk
        au = np.abs(u)
        left = u > 0
        nb = len(self.body_top)
        sac_top = self.sacrum_top
        disc_c = self.disc_centre
        # Nearest disc for every point (its narrowing shapes the canal around it).
        mids = (disc_c[1:] + disc_c[:-1]) / 2
        d = np.searchsorted(mids, s)
        ds = s - disc_c[d]
        b = np.clip(np.searchsorted(self.body_top, s, side="right") - 1, 0, nb - 1)
        in_body = (s >= self.body_top[b]) & (s < self.body_top[b] + self.body_h[b]) & (s < sac_top)
        in_disc = (s >= self.body_top[b] + self.body_h[b]) & (s < sac_top) & (s >= self.body_top[0])
        sacral = s >= sac_top
        body_a, body_d = self.body_a[b], self.body_d[b]

        def put(mask, code):
            lab[idx[mask]] = code

        # Sacral kyphosis: the sacrum bends posteriorly below S1's top.
        ss = np.clip(s - sac_top, 0, None)
        vshift = 0.004 * ss ** 2 + 0.15 * ss
        vv = v - np.where(sacral, vshift, 0.0)
        # Vertebral bodies and discs.
        e_body = (u / body_a) ** 2 + ((vv + body_d) / body_d) ** 2
        g = np.exp(-0.5 * (ds / (0.7 * self.disc_h[d] + 2.0)) ** 2)
        fc = self.f_canal[d] * g
        fr = np.where(left, self.f_recess[d, 0], self.f_recess[d, 1]) * g
        # Posterior disc bulge (central for the canal, paracentral for the recess side).
        bulge = (self.sac_b * 1.25 * fc * np.exp(-(u / 9.0) ** 2)
                 + 2.4 * fr * np.exp(-((au - self.recess_u) / 4.0) ** 2))
        disc_prof = np.clip(1 - (2 * (s - disc_c[d]) / (self.disc_h[d] + 1e-3)) ** 2, 0, 1)
        body = in_body & (e_body <= 1)
        put(body, MARROW)
        rim = body & ((e_body > (1 - 2.6 / body_d) ** 2) | (s - self.body_top[b] < 1.1)
                      | (self.body_top[b] + self.body_h[b] - s < 1.1))
        put(rim, CORTEX)
        discm = in_disc & ((e_body <= 1.06) | ((vv >= -0.5) & (vv < bulge * np.sqrt(disc_prof) + 0.3)
                                               & (au < body_a * 0.8)))
        put(discm, ANNULUS)
        e_nuc = (u / (0.58 * body_a)) ** 2 + ((vv + body_d * 1.05) / (0.55 * body_d)) ** 2
        nuc = in_disc & (e_nuc <= 1) & (np.abs(s - disc_c[b]) < 0.32 * self.disc_h[b])
        put(nuc, NUCLEUS)
        gain[idx[nuc]] = self.hydration[b[nuc]]
        # Sacrum body.
        taper = np.clip(1 - ss / 120.0, 0.25, 1)
        e_sac = (u / (self.body_a[-1] * taper)) ** 2 + ((vv + self.body_d[-1] * taper) / (self.body_d[-1] * taper)) ** 2
        sacb = sacral & (ss < 100) & (e_sac <= 1)
        put(sacb, MARROW)
        put(sacb & ((e_sac > 0.82) | (ss < 1.1) | (np.abs(ss - 30) < 0.8)), CORTEX)

        # Canal: bony canal ellipse + lateral recess lobes, the sac inside.
        cw = self.canal_w * np.where(sacral, taper * 0.8, 1.0)
        cd = self.canal_d * np.where(sacral, taper * 0.7, 1.0)
        e_can = (u / cw) ** 2 + ((vv - cd) / cd) ** 2
        ra, rb = self.recess_axes(fr)
        lobe = ((au - self.recess_u) / ra) ** 2 + ((vv - rb) / rb) ** 2 <= 1
        lobe &= ~sacral & (ds > -0.6 * self.body_h[d]) & (ds < 0.6 * self.disc_h[d] + 1)
        canal = (e_can <= 1) | lobe
        # Posterior elements around the canal (painted first, the canal cuts them).
        ring = ~canal & (vv > -0.5) & (vv < 2 * cd + 7) & (au < cw + 9)
        lam_zone = ~sacral & (ds < -0.05 * self.body_h[d] - 2)     # lamina covers the upper body level
        lam_zone |= sacral & (ss < 100)
        put(ring & lam_zone & (vv > cd), POST_BONE)
        # Pedicles (upper 10-60 % of each body), lateral to the canal.
        tb = (s - self.body_top[b]) / self.body_h[b]
        ped = in_body & (tb > 0.08) & (tb < 0.6) & (au > cw - 1.5) & (au < cw + 10) & (vv > -1) & (vv < 11)
        put(ped, POST_BONE)
        # Facet joints around each disc: the superior articular process comes forward with narrowing.
        fdx = au - (cw + 5.0) + 3.0 * fr
        fv = vv - (2 * cd - 1.5)
        facet = ~sacral & (np.abs(ds + 0.15 * self.body_h[d]) < 0.55 * self.body_h[d]) & (
            (fdx / 7.5) ** 2 + (fv / 7.0) ** 2 <= 1 + 0.6 * fr)
        put(facet, POST_BONE)
        put(facet & (np.abs(0.7 * fdx - 0.7 * fv) < 0.55), JOINT)
        # Spinous process and its cortex.
        sp = (au < 3.5) & (vv > 2 * cd + 3) & (vv < 2 * cd + 34 - 0.25 * (ds + 0.4 * self.body_h[d])) & ~sacral & \
            (ds > -0.7 * self.body_h[d]) & (ds < -0.2 * self.body_h[d])
        sp |= sacral & (ss < 90) & (au < 4) & (vv > 2 * cd + 3) & (vv < 2 * cd + 14)
        put(sp, POST_BONE)
        bone_post = np.isin(lab[idx], (POST_BONE,))
        edge = bone_post & ((au > cw + 8.5) | (np.abs(au - 3.3) < 0.6) & sp)
        put(edge, CORTEX)

        # Neural foramina: the fat keyhole between the pedicles with the exiting root.
        fs_c = self.foramen_centre_s(d)
        fv = self.FORAMEN_V
        side_i = np.where(left, 0, 1)
        ff = self.f_foramen[d, side_i]
        fh, fw = self.foramen_axes(ff, self.foramen_dir[d, side_i])
        lat = (au > cw + 0.5) & (au < cw + 11.5) & ~sacral & (vv > -3) & (vv < 14)
        e_for = ((s - fs_c) / fh) ** 2 + ((vv - fv) / fw) ** 2
        foramen = lat & (e_for <= 1) & ~ped
        # Tissue that fills a narrowed foramen: disc/osteophyte in front, facet/ligament behind.
        fill = lat & ~ped & ~foramen & (np.abs(s - fs_c) < self.foramen_h + 1) & (np.abs(vv - fv) < self.foramen_w + 1.5)
        put(fill & (vv < fv), ANNULUS)
        put(fill & (vv >= fv), LIGAMENT)
        put(foramen, EPIFAT)
        root_r = 2.2
        root = foramen & (((s - (fs_c - 0.3 * fh)) / root_r) ** 2 + ((vv - fv) / root_r) ** 2 <= 1)
        put(root, NERVE)
        reg[idx[foramen & left]] = FORAMEN_L
        reg[idx[foramen & ~left]] = FORAMEN_R

        # Canal contents: epidural fat, ligamentum flavum, recess, sac.
        put(canal, EPIFAT)
        lf_t = 2.2 + 3.0 * fc + 2.0 * fr
        inner = (u / np.maximum(cw - lf_t, 1)) ** 2 + ((vv - cd) / np.maximum(cd - lf_t * 0.6, 1)) ** 2 > 1
        lf = canal & ~lobe & inner & (vv > cd * 0.9) & ~sacral & (ds > -0.45 * self.body_h[d]) & (ds < 0.5 * self.disc_h[d] + 1.5)
        put(lf, LIGAMENT)
        # Recess content: epidural fat around the traversing root (CSF only in the sac).
        put(lobe, RECESS_FAT)
        put(lobe & (((au - self.recess_u + ra * 0.15) / 1.4) ** 2 + ((vv - rb) / 1.4) ** 2 <= 1), NERVE)
        reg[idx[lobe & left]] = RECESS_L
        reg[idx[lobe & ~left]] = RECESS_R
        # Disc bulge wins over canal content at the disc.
        put(discm & canal & (vv < bulge * np.sqrt(disc_prof) + 0.3), ANNULUS)
        # Dural sac: ends at S2; narrowed around each disc.
        sa, sb = self.sac_axes(fc)
        scale_s = np.where(sacral, np.clip(1 - ss / 28.0, 0, 1), 1.0)
        sa, sb = sa * np.minimum(scale_s * 1.5, 1), sb * np.minimum(scale_s * 1.5, 1)
        sv = self.sac_centre_v(sb)
        e_sac = (u / np.maximum(sa, 1e-3)) ** 2 + ((vv - sv) / np.maximum(sb, 1e-3)) ** 2
        sac = (e_sac <= 1) & (scale_s > 0.05)
        put(sac, CSF)
        reg[idx[sac]] = SAC
        # Spinal cord down to the conus (L1), cauda equina rootlets below.
        s_conus = self.body_top[LUMBAR_DISC0] + 0.6 * self.body_h[LUMBAR_DISC0]
        cord_k = np.clip((s_conus - s) / 15.0, 0, 1)
        cord = sac & ((u / (4.2 * cord_k + 1e-3)) ** 2 + ((vv - sv) / (3.4 * cord_k + 1e-3)) ** 2 <= 1) & (cord_k > 0.1)
        put(cord, NERVE)
        rl = sac & (s > s_conus - 15)
        if rl.any():
            ru, rv = u[rl], vv[rl]
            ra_, rb_, sv_ = sa[rl], sb[rl], sv[rl]
            hit = np.zeros(ru.shape, bool)
            for px, py in self.rootlets:
                hit |= (ru - px * ra_) ** 2 + (rv - sv_ - py * rb_) ** 2 <= 0.75 ** 2
            lab[idx[np.flatnonzero(rl)[hit]]] = NERVE


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
    hydration = rng.uniform(0.8, 1.0, nb)
    for li, lv in enumerate(LEVELS):
        di = LUMBAR_DISC0 + li
        f_canal[di] = latents[f"spinal_canal_stenosis_{lv}"]["f"]
        f_for[di] = [latents[f"left_neural_foraminal_narrowing_{lv}"]["f"],
                     latents[f"right_neural_foraminal_narrowing_{lv}"]["f"]]
        f_rec[di] = [latents[f"left_subarticular_stenosis_{lv}"]["f"],
                     latents[f"right_subarticular_stenosis_{lv}"]["f"]]
        worst = max(f_canal[di], *f_for[di], *f_rec[di])
        # Degenerated discs lose T2 signal and height.
        hydration[di] = float(np.clip(1.0 - 0.9 * worst + rng.normal(0, 0.08), 0.25, 1.0))
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


# ---------------------------------------------------------------------------
# Acquisition
# ---------------------------------------------------------------------------

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
    centre = ph.to_patient(rng.normal(0, 2.5), rng.normal(-8, 10), s_mid + rng.normal(0, 10))
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
        plans[desc] = SeriesPlan(desc, seq, [geo], sp - rng.uniform(0.3, 1.0), [order])
    # Axial T2: one stack through L1-S1, or one oblique stack per disc.
    size_ax = int(rng.choice([256, 320, 384, 448, 512]))
    fov_ax = rng.uniform(150, 210)
    px_ax = round(fov_ax / size_ax, 4)
    c_uv = (rng.normal(0, 4), rng.normal(-6, 8))
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


def render_slice(ph: Phantom, geo: StackGeometry, k: int, sequence: str, rng: np.random.Generator, *,
                 noise: float, cache: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Signal (float, CSF ~ 1) and region map of slice ``k`` of a stack.

    The anatomy of a slice is cached by its geometry, so series sharing slice
    positions (T1 and T2 often do) are traced once.
    """
    import cv2

    key = (geo.positions_mm[k].tobytes(), geo.iop.tobytes(), geo.pixel_spacing_mm.tobytes(), geo.shape)
    if cache is not None and key in cache:
        lab, reg, gain, v = cache[key]
    else:
        rows, cols = geo.shape
        f_r, f_c, _ = orientation_axes(geo.iop)
        rr = (np.arange(rows, dtype=np.float32) * np.float32(geo.pixel_spacing_mm[0]))[:, None]
        cc = (np.arange(cols, dtype=np.float32) * np.float32(geo.pixel_spacing_mm[1]))[None, :]
        xyz = tuple(np.float32(geo.positions_mm[k][i]) + cc * np.float32(f_r[i]) + rr * np.float32(f_c[i])
                    for i in range(3))
        u, v, s = ph.to_local(xyz)
        lab, reg, gain = ph.tissue_local(u, v, s)
        if cache is not None:
            cache[key] = (lab, reg, gain, v)
    img = CONTRAST[sequence][lab].astype(np.float32) * gain
    img = cv2.GaussianBlur(img, (0, 0), 0.6)      # partial volume and scanner blur
    # Posterior surface coil: signal falls off with depth from the back.
    back = ph.skin_b + ph.skin_vc
    img *= (0.35 + 0.65 * np.exp(-np.clip(back - v, 0, None) / rng.uniform(90, 150))).astype(np.float32)
    n1 = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise)
    n2 = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise)
    return np.hypot(img + n1, n2), reg


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

def _unique_ids(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[int]:
    """``n`` distinct random integers in ``[lo, hi)`` (RSNA-like ids)."""
    ids: list[int] = []
    while len(ids) < n:
        cand = int(rng.integers(lo, hi))
        if cand not in ids:
            ids.append(cand)
    return ids


def _uid(*parts) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _write_dicom(path: Path, pixels: np.ndarray, geo: StackGeometry, k: int, *, study_uid: str, series_uid: str,
                 series_number: int, description: str, instance: int, thickness: float, spacing: float,
                 study_id: int) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = _uid(series_uid, instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = geo.frame_of_reference
    ds.Modality = "MR"
    ds.PatientID = str(study_id)
    ds.PatientName = "Synthetic^Phantom"
    ds.Manufacturer = "spinefeat synthetic"
    ds.SeriesDescription = description
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [f"{v:.4f}" for v in geo.positions_mm[k]]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in geo.iop]
    ds.PixelSpacing = [f"{v:.4f}" for v in geo.pixel_spacing_mm]
    ds.SliceThickness = f"{thickness:.2f}"
    ds.SpacingBetweenSlices = f"{spacing:.2f}"
    ds.SliceLocation = f"{float(geo.offsets_mm[k]):.3f}"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.PixelData = pixels.astype("<u2").tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


@dataclass
class StudyResult:
    study_id: int
    series: list[tuple[int, str]]            # (series_id, description)
    labels: dict[str, int | None]
    coordinates: list[dict]
    truth: list[dict]
    seconds: float


def label_points(ph: Phantom) -> dict[tuple[str, str], np.ndarray]:
    """Patient xyz of the structure each (condition, level) point marks."""
    pts = {}
    for li, lv in enumerate(LEVELS):
        di = LUMBAR_DISC0 + li
        s_d = float(ph.disc_centre[di])
        sa, sb = ph.sac_axes(ph.f_canal[di])
        sv = ph.sac_centre_v(sb)
        pts[("spinal_canal_stenosis", lv)] = ph.to_patient(0.0, sv, s_d)
        fs, fv = float(ph.foramen_centre_s(di)), ph.FORAMEN_V
        for side, sign in (("left", 1), ("right", -1)):
            pts[(f"{side}_neural_foraminal_narrowing", lv)] = ph.to_patient(sign * ph.foramen_u, fv, fs)
            _, rb = ph.recess_axes(ph.f_recess[di, 0 if side == "left" else 1])
            pts[(f"{side}_subarticular_stenosis", lv)] = ph.to_patient(sign * ph.recess_u, rb, s_d - 1.0)
    return pts


def true_measurements(ph: Phantom) -> dict[tuple[str, str], dict]:
    """The phantom's own measurements at each disc (what a perfect segmenter would read)."""
    out = {}
    for li, lv in enumerate(LEVELS):
        di = LUMBAR_DISC0 + li
        sa, sb = ph.sac_axes(ph.f_canal[di])
        out[("spinal_canal_stenosis", lv)] = {
            "canal_area_mm2": float(np.pi * sa * sb), "canal_ap_mm": float(2 * sb),
            "canal_normal_area_mm2": float(np.pi * ph.sac_a * ph.sac_b)}
        for side, j in (("left", 0), ("right", 1)):
            fh, fw = ph.foramen_axes(ph.f_foramen[di, j], ph.foramen_dir[di, j])
            out[(f"{side}_neural_foraminal_narrowing", lv)] = {
                "foramen_area_mm2": float(np.pi * fh * fw), "foramen_height_mm": float(2 * fh),
                "foramen_width_mm": float(2 * fw)}
            ra, rb = ph.recess_axes(ph.f_recess[di, j])
            out[(f"{side}_subarticular_stenosis", lv)] = {
                "recess_depth_mm": float(2 * rb), "recess_area_mm2": float(np.pi * ra * rb)}
    return out


def _draw_study(seed: int, index: int, stats: dict | None = None):
    rng = np.random.default_rng([seed, index, 7])
    latents = draw_latents(rng, stats)
    return rng, latents, make_phantom(rng, latents)


def study_phantom(seed: int, index: int) -> Phantom:
    """The phantom of study number ``index`` of a cohort drawn with ``seed`` (``synth_index`` in truth/targets.csv)."""
    return _draw_study(seed, index)[2]


def synth_study(root: Path, split: str, study_id: int, seed: int, index: int, *, stats: dict | None = None) -> StudyResult:
    """Draw, render and write one study under ``root/{split}_images/<study_id>/``."""
    t0 = time.perf_counter()
    rng, latents, ph = _draw_study(seed, index, stats)
    frame = _uid("frame", seed, study_id)
    plans = plan_study(rng, ph, frame)
    study_uid = _uid("study", seed, study_id)
    scale = rng.uniform(700, 2600)
    noise = rng.uniform(0.018, 0.04)
    cache: dict = {}
    series_ids = _unique_ids(rng, len(plans), 10 ** 8, 4 * 10 ** 9)
    series_out, ser_geo = [], {}
    for si, (desc, plan) in enumerate(plans.items()):
        series_id = int(series_ids[si])
        sdir = Path(root) / f"{split}_images" / str(study_id) / str(series_id)
        sdir.mkdir(parents=True, exist_ok=True)
        series_uid = _uid("series", seed, study_id, series_id)
        series_gain = scale * rng.uniform(0.85, 1.15)
        for st, numbers in zip(plan.stacks, plan.instance_order):
            for k in range(st.n_slices):
                img, _ = render_slice(ph, st, k, plan.sequence, rng, noise=noise, cache=cache)
                px = np.clip(img * series_gain, 0, 65535).astype(np.uint16)
                _write_dicom(sdir / f"{numbers[k]}.dcm", px, st, k, study_uid=study_uid, series_uid=series_uid,
                             series_number=si + 2, description=desc, instance=numbers[k],
                             thickness=plan.thickness_mm, spacing=st.slice_spacing_mm, study_id=study_id)
        series_out.append((series_id, desc))
        ser_geo[desc] = (series_id, plan)
    # Coordinates: each point on the instance nearest to the structure it marks.
    coords = []
    pts = label_points(ph)
    for (cond, lv), xyz in pts.items():
        series_id, plan = ser_geo[CONDITION_SERIES[cond]]
        p = project_to_stacks(xyz, plan.stacks, frame_of_reference=plan.stacks[0].frame_of_reference)
        coords.append({"study_id": study_id, "series_id": series_id,
                       "instance_number": plan.instance_order[p["stack"]][p["slice"]],
                       "condition": cond, "level": lv, "x": p["col"], "y": p["row"],
                       "x_mm": float(xyz[0]), "y_mm": float(xyz[1]), "z_mm": float(xyz[2])})
    meas = true_measurements(ph)
    truth = []
    for cond in CONDITIONS:
        for lv in LEVELS:
            lat = latents[f"{cond}_{lv}"]
            truth.append({"study_id": study_id, "split": split, "synth_index": index, "condition": cond, "level": lv,
                          "latent_f": lat["f"], "true_grade": lat["grade"],
                          "label": -1 if lat["label"] is None else lat["label"], **meas[(cond, lv)]})
    labels = {t: latents[t]["label"] for t in TRAIN_COLUMNS}
    return StudyResult(study_id, series_out, labels, coords, truth, time.perf_counter() - t0)


def _grade_name(g):
    return "" if g is None else SEVERITIES[g]


def synth_cohort(out: Path, *, studies: int, test_studies: int = 0, seed: int = 0, jobs: int = 1,
                 progress=None) -> dict:
    """Write a cohort in the Kaggle layout; returns a summary (counts, seconds per study).

    ``progress`` is called with the number of studies written after each one.
    """
    from joblib import Parallel, delayed

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stats = label_stats()
    rng = np.random.default_rng([seed, 0])
    ids = _unique_ids(rng, studies + test_studies, 10 ** 6, 4 * 10 ** 9)
    work = [("train", int(ids[i]), i) for i in range(studies)]
    work += [("test", int(ids[studies + i]), studies + i) for i in range(test_studies)]
    results: list[tuple[str, StudyResult]] = []
    runner = Parallel(n_jobs=jobs, return_as="generator")
    for split, res in zip((w[0] for w in work),
                          runner(delayed(synth_study)(out, sp, sid, seed, i, stats=stats) for sp, sid, i in work)):
        results.append((split, res))
        if progress is not None:
            progress(len(results))
    (out / "truth").mkdir(exist_ok=True)
    desc_cols = ["study_id", "series_id", "series_description"]
    coord_cols = ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]
    title = {c: c.replace("_", " ").title() for c in CONDITIONS}
    lvl = dict(zip(LEVELS, LEVEL_NAMES))

    def label_frame(rs):
        return pd.DataFrame([{"study_id": r.study_id, **{t: _grade_name(r.labels[t]) for t in TRAIN_COLUMNS}}
                             for r in rs], columns=["study_id", *TRAIN_COLUMNS])

    def coord_frame(rs):
        df = pd.DataFrame([c for r in rs for c in r.coordinates])
        df["condition"] = df["condition"].map(title)
        df["level"] = df["level"].map(lvl)
        return df

    for split in ("train", "test"):
        rs = [r for s, r in results if s == split]
        if not rs:
            continue
        pd.DataFrame([(r.study_id, sid, d) for r in rs for sid, d in r.series], columns=desc_cols) \
            .to_csv(out / f"{split}_series_descriptions.csv", index=False)
        coords = coord_frame(rs)
        if split == "train":
            label_frame(rs).to_csv(out / "train.csv", index=False)
            # Only labelled targets get coordinates, as in the challenge.
            keep = [(r.study_id, c["condition"], c["level"]) for r in rs for c in r.coordinates
                    if r.labels[f"{c['condition']}_{c['level']}"] is not None]
            keep_df = pd.DataFrame(keep, columns=["study_id", "condition", "level"])
            keep_df["condition"] = keep_df["condition"].map(title)
            keep_df["level"] = keep_df["level"].map(lvl)
            coords.merge(keep_df)[coord_cols].to_csv(out / "train_label_coordinates.csv", index=False)
        else:
            label_frame(rs).to_csv(out / "truth" / "test_labels.csv", index=False)
            coords.to_csv(out / "truth" / "test_label_coordinates.csv", index=False)
            pd.DataFrame([{"row_id": f"{r.study_id}_{t}", "normal_mild": 1 / 3, "moderate": 1 / 3, "severe": 1 / 3}
                          for r in rs for t in TARGETS]).to_csv(out / "sample_submission.csv", index=False)
    pd.DataFrame([t for _, r in results for t in r.truth]).to_csv(out / "truth" / "targets.csv", index=False)
    pd.DataFrame([c for _, r in results for c in r.coordinates]).assign(
        split=[s for s, r in results for _ in r.coordinates]).to_csv(out / "truth" / "coordinates_mm.csv", index=False)
    secs = [r.seconds for _, r in results]
    summary = {"spinefeat_version": __version__, "seed": seed, "train_studies": studies,
               "test_studies": test_studies, "seconds_per_study_mean": float(np.mean(secs)) if secs else 0.0,
               "seconds_per_study_max": float(np.max(secs)) if secs else 0.0}
    (out / "truth" / "synth.json").write_text(json.dumps(summary, indent=2))
    return summary
