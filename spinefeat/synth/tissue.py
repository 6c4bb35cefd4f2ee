"""The tissue function: tissue code, region code and signal factor of the phantom at points.

Soft-tissue compartments (body outline, muscles, viscera, vessels, iliac wings)
and the spine's anatomical walk (bodies, discs, posterior elements, foramina,
canal, recesses, sac, cord and rootlets), each narrowed by the phantom's latents.
"""

from __future__ import annotations

import numpy as np

from .anatomy import LUMBAR_DISC0, VERTEBRAE, Phantom
from .codes import (AIR, ANNULUS, CORTEX, CSF, EPIFAT, FAT, FORAMEN_L, FORAMEN_R, JOINT, LIGAMENT, MARROW, MUSCLE,
                    NERVE, NUCLEUS, POST_BONE, RECESS_FAT, RECESS_L, RECESS_R, SAC, VESSEL, VISCERA)


def tissue(ph: Phantom, xyz) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue code, region code and a per-pixel signal factor for patient points (..., 3)."""
    return tissue_local(ph, *ph.to_local(xyz))


def tissue_local(ph: Phantom, u, v, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`tissue` from spine-local coordinates.

    On a 2-D grid the large soft-tissue compartments (tens of mm wide) are
    evaluated on every second pixel and upsampled; the spine at full
    resolution.
    """
    shape = np.shape(u)
    if len(shape) == 2 and min(shape) > 1:
        h, w = shape
        lab_c, gain_c = _soft_tissue(ph, *(a[::2, ::2].ravel() for a in (u, v, s)))
        ch, cw = (h + 1) // 2, (w + 1) // 2

        def up(a):
            return np.repeat(np.repeat(a.reshape(ch, cw), 2, 0), 2, 1)[:h, :w].ravel()

        lab, gain = up(lab_c), up(gain_c)
    else:
        lab, gain = _soft_tissue(ph, *(np.ravel(a) for a in (u, v, s)))
    u, v, s = (np.ravel(a) for a in (u, v, s))
    reg = np.zeros(u.size, np.uint8)
    au = np.abs(u)
    # The spine itself, only where it can be.
    near = (lab != AIR) & (au < 48) & (v > -45) & (v < 2 * ph.canal_d + 52)
    idx = np.flatnonzero(near)
    if idx.size:
        _spine(ph, u[idx], v[idx], s[idx], lab, reg, gain, idx)
    return lab.reshape(shape), reg.reshape(shape), gain.reshape(shape)


def _soft_tissue(ph: Phantom, u, v, s) -> tuple[np.ndarray, np.ndarray]:
    n = u.size
    lab = np.zeros(n, np.uint8)
    gain = np.ones(n, np.float32)
    au = np.abs(u)
    # Body outline, subcutaneous fat, abdominal wall and viscera follow a straight body axis
    # (the back is nearly flat while the spine inside it curves).
    theta = (ph.s_apex - s) / ph.radius
    vb = ph.radius - (ph.radius - v) * np.cos(theta)
    sup = (au / ph.skin_a) ** 3 + (np.abs(vb - ph.skin_vc) / ph.skin_b) ** 3
    inside = sup <= 1.0
    lab[inside] = FAT
    fat = ph.fat_mm
    wall = ((au / (ph.skin_a - fat)) ** 3 + (np.abs(vb - ph.skin_vc) / (ph.skin_b - fat)) ** 3) <= 1.0
    lab[wall & (vb < -5)] = MUSCLE     # abdominal wall, not behind the spine
    deep = ((au / (ph.skin_a - fat - 9)) ** 3 + (np.abs(vb - ph.skin_vc) / (ph.skin_b - fat - 9)) ** 3) <= 1.0
    lab[deep] = VISCERA
    tex = np.zeros(n, np.float32)
    tex[inside] = _texture(ph, u[inside], v[inside], s[inside])
    gain[inside] = (1.0 + 0.1 * tex[inside]).astype(np.float32)
    vis = deep & (v < -10)
    gain[vis] = (0.75 + 0.12 * tex[vis]).astype(np.float32)
    # Posterior compartment (quadratus lumborum, erector spinae, multifidus) hugging the spine.
    post = deep & ((au / 92) ** 2 + ((v - 22) / 40) ** 2 <= 1)
    lab[post] = MUSCLE
    streak = post & (v > 2) & (np.abs(tex) < 0.06)
    lab[streak] = FAT
    # Interspinous and supraspinous ligaments: dark tissue in the posterior midline.
    lab[inside & (au < 6) & (v > 2 * ph.canal_d) & (vb < ph.skin_vc + ph.skin_b - fat)] = LIGAMENT
    # Psoas, growing inferiorly.
    ps_size = np.clip((s - ph.body_top[LUMBAR_DISC0]) / 110.0, 0.0, 1.0)
    ps_a = 5 + 17 * ps_size
    for side in (-1, 1):
        m = deep & (ps_a > 5.5) & ((((u - side * (ph.body_a.mean() + ps_a * 0.8)) / ps_a) ** 2
                                    + ((v + ph.body_d.mean() * 0.9) / (ps_a * 1.1)) ** 2) <= 1)
        lab[m] = MUSCLE
    # Great vessels anterior to the spine; the aorta divides at L4.
    bif = ph.body_top[VERTEBRAE.index("L4")] + 0.5 * ph.body_h[VERTEBRAE.index("L4")]
    v_ves = -2 * ph.body_d.mean() - 9
    spread = np.clip(s - bif, 0, None) * 0.35
    aorta = np.where(s < bif, (u - 12) ** 2 + (v - v_ves) ** 2 <= 10 ** 2,
                     np.minimum((u - 12 - spread) ** 2, (u - 12 + spread + 8) ** 2) + (v - v_ves) ** 2 <= 6.5 ** 2)
    ivc = ((u + 20) / 11) ** 2 + ((v - v_ves - 2) / 8) ** 2 <= 1
    lab[deep & (aorta | ivc) & (s < ph.sacrum_top + 30)] = VESSEL
    # Iliac wings lateral to the sacrum.
    l5 = VERTEBRAE.index("L5")
    s_il = ph.body_top[l5] + 0.4 * ph.body_h[l5]
    il = deep & (s > s_il) & (s < ph.sacrum_top + 85)
    il_in = 42 + 0.25 * (s - s_il)
    il &= (au > il_in) & (au < il_in + 55) & (v > -25 + 0.3 * (au - il_in)) & (v < 8 + 0.35 * (au - il_in))
    lab[il] = MARROW
    lab[il & (np.abs(au - il_in) < 2.0)] = CORTEX

    return lab, gain


def _texture(ph: Phantom, u, v, s) -> np.ndarray:
    w = ph.waves
    acc = np.zeros(u.shape, np.float32)
    for kx, ky, kz, phase in w:
        acc += np.sin(kx * u + ky * v + kz * s + phase).astype(np.float32)
    return acc / np.sqrt(len(w) / 2)


def _mottle(ph: Phantom, u, v, s, cell_mm: float = 3.0) -> np.ndarray:
    """Smooth value noise in [-1, 1] at about ``cell_mm``, fixed in spine-local space (every series of a study
    sees the same mottle); the lattice values are a hash of the cell and the phantom's texture phases."""
    seed = float(ph.waves[0, 3])
    p = [np.asarray(a, np.float64) / cell_mm for a in (u, v, s)]
    i0 = [np.floor(a) for a in p]
    t = [a - b for a, b in zip(p, i0)]
    t = [w * w * (3 - 2 * w) for w in t]
    acc = np.zeros(np.shape(u), np.float64)
    for du in (0, 1):
        for dv in (0, 1):
            for dz in (0, 1):
                h = np.sin((i0[0] + du) * 12.9898 + (i0[1] + dv) * 78.233 + (i0[2] + dz) * 37.719 + seed)
                h = h * 43758.5453
                val = 2 * (h - np.floor(h)) - 1
                w = (t[0] if du else 1 - t[0]) * (t[1] if dv else 1 - t[1]) * (t[2] if dz else 1 - t[2])
                acc += w * val
    return acc


def _spine(ph: Phantom, u, v, s, lab, reg, gain, idx) -> None:  # noqa: C901 - one anatomical walk
    au = np.abs(u)
    left = u > 0
    nb = len(ph.body_top)
    sac_top = ph.sacrum_top
    disc_c = ph.disc_centre
    # Nearest disc for every point (its narrowing shapes the canal around it).
    mids = (disc_c[1:] + disc_c[:-1]) / 2
    d = np.searchsorted(mids, s)
    ds = s - disc_c[d]
    b = np.clip(np.searchsorted(ph.body_top, s, side="right") - 1, 0, nb - 1)
    in_body = (s >= ph.body_top[b]) & (s < ph.body_top[b] + ph.body_h[b]) & (s < sac_top)
    in_disc = (s >= ph.body_top[b] + ph.body_h[b]) & (s < sac_top) & (s >= ph.body_top[0])
    sacral = s >= sac_top
    body_a, body_d = ph.body_a[b], ph.body_d[b]

    def put(mask, code):
        lab[idx[mask]] = code

    # Sacral kyphosis: the sacrum bends posteriorly below S1's top.
    ss = np.clip(s - sac_top, 0, None)
    vshift = 0.004 * ss ** 2 + 0.15 * ss
    vv = v - np.where(sacral, vshift, 0.0)
    # Vertebral bodies and discs.
    e_body = (u / body_a) ** 2 + ((vv + body_d) / body_d) ** 2
    g = np.exp(-0.5 * (ds / (0.7 * ph.disc_h[d] + 2.0)) ** 2)
    fc = ph.f_canal[d] * g
    fr = np.where(left, ph.f_recess[d, 0], ph.f_recess[d, 1]) * g
    # Posterior disc bulge (central for the canal, paracentral for the recess side).
    bulge = (ph.sac_b * 1.25 * fc * np.exp(-(u / 9.0) ** 2)
             + 2.4 * fr * np.exp(-((au - ph.recess_u) / 4.0) ** 2))
    disc_prof = np.clip(1 - (2 * (s - disc_c[d]) / (ph.disc_h[d] + 1e-3)) ** 2, 0, 1)
    body = in_body & (e_body <= 1)
    put(body, MARROW)
    rim = body & ((e_body > (1 - 2.6 / body_d) ** 2) | (s - ph.body_top[b] < 1.1)
                  | (ph.body_top[b] + ph.body_h[b] - s < 1.1))
    put(rim, CORTEX)
    discm = in_disc & ((e_body <= 1.06) | ((vv >= -0.5) & (vv < bulge * np.sqrt(disc_prof) + 0.3)
                                           & (au < body_a * 0.8)))
    put(discm, ANNULUS)
    e_nuc = (u / (0.58 * body_a)) ** 2 + ((vv + body_d * 1.05) / (0.55 * body_d)) ** 2
    nuc = in_disc & (e_nuc <= 1) & (np.abs(s - disc_c[b]) < 0.32 * ph.disc_h[b])
    put(nuc, NUCLEUS)
    gain[idx[nuc]] = ph.hydration[b[nuc]]
    # Sacrum body.
    taper = np.clip(1 - ss / 120.0, 0.25, 1)
    e_sac = (u / (ph.body_a[-1] * taper)) ** 2 + ((vv + ph.body_d[-1] * taper) / (ph.body_d[-1] * taper)) ** 2
    sacb = sacral & (ss < 100) & (e_sac <= 1)
    put(sacb, MARROW)
    put(sacb & ((e_sac > 0.82) | (ss < 1.1) | (np.abs(ss - 30) < 0.8)), CORTEX)

    # Canal: bony canal ellipse + lateral recess lobes, the sac inside.
    cw = ph.canal_w * np.where(sacral, taper * 0.8, 1.0)
    cd = ph.canal_d * np.where(sacral, taper * 0.7, 1.0)
    e_can = (u / cw) ** 2 + ((vv - cd) / cd) ** 2
    ra, rb = ph.recess_axes(fr)
    lobe = ((au - ph.recess_u) / ra) ** 2 + ((vv - rb) / rb) ** 2 <= 1
    lobe &= ~sacral & (ds > -0.6 * ph.body_h[d]) & (ds < 0.6 * ph.disc_h[d] + 1)
    canal = (e_can <= 1) | lobe
    # Posterior elements around the canal (painted first, the canal cuts them).
    ring = ~canal & (vv > -0.5) & (vv < 2 * cd + 7) & (au < cw + 9)
    lam_zone = ~sacral & (ds < -0.05 * ph.body_h[d] - 2)     # lamina covers the upper body level
    lam_zone |= sacral & (ss < 100)
    put(ring & lam_zone & (vv > cd), POST_BONE)
    # Pedicles (upper 10-60 % of each body), lateral to the canal.
    tb = (s - ph.body_top[b]) / ph.body_h[b]
    ped = in_body & (tb > 0.08) & (tb < 0.6) & (au > cw - 1.5) & (au < cw + 10) & (vv > -1) & (vv < 11)
    put(ped, POST_BONE)
    # Facet joints around each disc: the superior articular process comes forward with narrowing.
    fdx = au - (cw + 5.0) + 3.0 * fr
    fv = vv - (2 * cd - 1.5)
    facet = ~sacral & (np.abs(ds + 0.15 * ph.body_h[d]) < 0.55 * ph.body_h[d]) & (
        (fdx / 7.5) ** 2 + (fv / 7.0) ** 2 <= 1 + 0.6 * fr)
    put(facet, POST_BONE)
    put(facet & (np.abs(0.7 * fdx - 0.7 * fv) < 0.55), JOINT)
    # Spinous process and its cortex.
    sp = (au < 3.5) & (vv > 2 * cd + 3) & (vv < 2 * cd + 34 - 0.25 * (ds + 0.4 * ph.body_h[d])) & ~sacral & \
        (ds > -0.7 * ph.body_h[d]) & (ds < -0.2 * ph.body_h[d])
    sp |= sacral & (ss < 90) & (au < 4) & (vv > 2 * cd + 3) & (vv < 2 * cd + 14)
    put(sp, POST_BONE)
    bone_post = np.isin(lab[idx], (POST_BONE,))
    edge = bone_post & ((au > cw + 8.5) | (np.abs(au - 3.3) < 0.6) & sp)
    put(edge, CORTEX)

    # Neural foramina: the fat keyhole between the pedicles with the exiting root.
    fs_c = ph.foramen_centre_s(d)
    fv = ph.FORAMEN_V
    side_i = np.where(left, 0, 1)
    ff = ph.f_foramen[d, side_i]
    fh, fw = ph.foramen_axes(ff, ph.foramen_dir[d, side_i])
    lat = (au > cw + 0.5) & (au < cw + 11.5) & ~sacral & (vv > -3) & (vv < 14)
    e_for = ((s - fs_c) / fh) ** 2 + ((vv - fv) / fw) ** 2
    foramen = lat & (e_for <= 1) & ~ped
    # Tissue that fills a narrowed foramen: disc/osteophyte in front, facet/ligament behind.
    fill = lat & ~ped & ~foramen & (np.abs(s - fs_c) < ph.foramen_h + 1) & (np.abs(vv - fv) < ph.foramen_w + 1.5)
    put(fill & (vv < fv), ANNULUS)
    put(fill & (vv >= fv), LIGAMENT)
    put(foramen, EPIFAT)
    # The exiting root, just above the keyhole's centre: on the real Sagittal T1 slices the labelled point
    # reads 0.58 of the fat peak around it (median of 4,935 foramina), phantoms with the root 0.3 of the
    # keyhole's height above the point read 0.80, with it here 0.55 (reports/real_check/real_vs_phantom.md).
    root_r = 2.4
    root = foramen & (((s - (fs_c - 0.12 * fh)) / root_r) ** 2 + ((vv - fv) / root_r) ** 2 <= 1)
    put(root, NERVE)
    reg[idx[foramen & left]] = FORAMEN_L
    reg[idx[foramen & ~left]] = FORAMEN_R

    # Canal contents: epidural fat, ligamentum flavum, recess, sac.
    put(canal, EPIFAT)
    lf_t = 2.2 + 3.0 * fc + 2.0 * fr
    inner = (u / np.maximum(cw - lf_t, 1)) ** 2 + ((vv - cd) / np.maximum(cd - lf_t * 0.6, 1)) ** 2 > 1
    lf = canal & ~lobe & inner & (vv > cd * 0.9) & ~sacral & (ds > -0.45 * ph.body_h[d]) & (ds < 0.5 * ph.disc_h[d] + 1.5)
    put(lf, LIGAMENT)
    # Recess content: epidural fat around the traversing root (CSF only in the sac).
    put(lobe, RECESS_FAT)
    # The traversing root on the medial side of the recess, the labelled point on the fat lateral of it (real
    # crops read 0.47 of the series' high at the point; phantoms with the root under it 0.32, now 0.41).
    put(lobe & (((au - ph.recess_u + ra * 0.4) / 1.4) ** 2 + ((vv - rb) / 1.4) ** 2 <= 1), NERVE)
    reg[idx[lobe & left]] = RECESS_L
    reg[idx[lobe & ~left]] = RECESS_R
    # Disc bulge wins over canal content at the disc.
    put(discm & canal & (vv < bulge * np.sqrt(disc_prof) + 0.3), ANNULUS)
    # Dural sac: ends at S2; narrowed around each disc.
    sa, sb = ph.sac_axes(fc)
    scale_s = np.where(sacral, np.clip(1 - ss / 28.0, 0, 1), 1.0)
    sa, sb = sa * np.minimum(scale_s * 1.5, 1), sb * np.minimum(scale_s * 1.5, 1)
    sv = ph.sac_centre_v(sb)
    e_sac = (u / np.maximum(sa, 1e-3)) ** 2 + ((vv - sv) / np.maximum(sb, 1e-3)) ** 2
    sac = (e_sac <= 1) & (scale_s > 0.05)
    put(sac, CSF)
    reg[idx[sac]] = SAC
    # Spinal cord down to the conus (L1), cauda equina rootlets below.
    s_conus = ph.body_top[LUMBAR_DISC0] + 0.6 * ph.body_h[LUMBAR_DISC0]
    cord_k = np.clip((s_conus - s) / 15.0, 0, 1)
    cord = sac & ((u / (4.2 * cord_k + 1e-3)) ** 2 + ((vv - sv) / (3.4 * cord_k + 1e-3)) ** 2 <= 1) & (cord_k > 0.1)
    put(cord, NERVE)
    # Marrow is not uniform: fatty and red marrow mottle it at a few mm (the real T1 and T2 bodies look so, the
    # phantoms' were flat); epidural fat has lobules and septa. The recess crop's GLCM contrast stays below the
    # real one's (4.4 against 6.2) all the same: the real texture is more than this.
    for code, amp, cell in ((MARROW, 0.2, 3.0), (EPIFAT, 0.12, 2.0), (RECESS_FAT, 0.12, 2.0)):
        m = lab[idx] == code
        if m.any():
            gain[idx[m]] *= (1.0 + amp * _mottle(ph, u[m], v[m], s[m], cell)).astype(np.float32)
    rl = sac & (s > s_conus - 15)
    if rl.any():
        ru, rv = u[rl], vv[rl]
        ra_, rb_, sv_ = sa[rl], sb[rl], sv[rl]
        # The roots do not shrink with the sac: in a severely narrowed sac they pack it and the CSF is gone
        # (on the real Axial T2 crops 4.5 % of the spinal rows have no CSF left, phantoms drawn with a fixed
        # 0.75 mm rootlet kept it in every sac).
        r2 = (0.75 + 1.6 * np.clip((fc[rl] - 0.45) / 0.4, 0.0, 1.0)) ** 2
        hit = np.zeros(ru.shape, bool)
        for px, py in ph.rootlets:
            hit |= (ru - px * ra_) ** 2 + (rv - sv_ - py * rb_) ** 2 <= r2
        lab[idx[np.flatnonzero(rl)[hit]]] = NERVE
