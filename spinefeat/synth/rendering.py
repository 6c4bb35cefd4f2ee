"""A slice's signal: the tissue contrast of its sequence, blur, coil fall-off and Rician noise."""

from __future__ import annotations

import numpy as np

from ..geometry import StackGeometry, orientation_axes
from .anatomy import Phantom
from .codes import EPIFAT
from .tissue import tissue_local

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
for _seq, _v in (("T1", CONTRAST["T1"][EPIFAT]), ("T2", 0.80), ("STIR", CONTRAST["STIR"][EPIFAT])):
    CONTRAST[_seq] = np.append(CONTRAST[_seq], _v)


def render_slice(ph: Phantom, geo: StackGeometry, k: int, sequence: str, rng: np.random.Generator, *,
                 noise: float, thickness_mm: float = 0.0, cache: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Signal (float, CSF ~ 1) and region map of slice ``k`` of a stack.

    With ``thickness_mm`` the slice is a slab: its signal is the mean of two planes a quarter of the
    thickness either side of the slice's centre (partial volume through the slice: a keyhole, a root or
    a sac wall cut obliquely is blurred as on real 3-6 mm slices), and the region map keeps only the
    pixels whose region is the same on both planes. The anatomy of a slice is cached by its geometry
    and thickness, so series sharing slice positions (T1 and T2 often do) are traced once.
    """
    import cv2

    key = (geo.positions_mm[k].tobytes(), geo.iop.tobytes(), geo.pixel_spacing_mm.tobytes(), geo.shape,
           float(thickness_mm))
    if cache is not None and key in cache:
        planes, reg, v = cache[key]
    else:
        rows, cols = geo.shape
        f_r, f_c, n = orientation_axes(geo.iop)
        rr = (np.arange(rows, dtype=np.float32) * np.float32(geo.pixel_spacing_mm[0]))[:, None]
        cc = (np.arange(cols, dtype=np.float32) * np.float32(geo.pixel_spacing_mm[1]))[None, :]
        offsets = (-thickness_mm / 4, thickness_mm / 4) if thickness_mm > 0 else (0.0,)
        planes, regs = [], []
        for off in offsets:
            origin = geo.positions_mm[k] + off * n
            xyz = tuple(np.float32(origin[i]) + cc * np.float32(f_r[i]) + rr * np.float32(f_c[i]) for i in range(3))
            u, v, s = ph.to_local(xyz)
            lab, reg, gain = tissue_local(ph, u, v, s)
            planes.append((lab, gain))
            regs.append(reg)
        reg = np.where(regs[0] == regs[-1], regs[0], 0).astype(regs[0].dtype)
        if cache is not None:
            cache[key] = (planes, reg, v)
    table = CONTRAST[sequence]
    img = sum(table[lab].astype(np.float32) * gain for lab, gain in planes) / np.float32(len(planes))
    img = cv2.GaussianBlur(img, (0, 0), 0.6)      # in-plane partial volume and scanner blur
    # Posterior surface coil: signal falls off with depth from the back.
    back = ph.skin_b + ph.skin_vc
    img *= (0.35 + 0.65 * np.exp(-np.clip(back - v, 0, None) / rng.uniform(90, 150))).astype(np.float32)
    n1 = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise)
    n2 = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise)
    return np.hypot(img + n1, n2), reg
