"""What the labels mark and what a perfect segmenter would measure, from the phantom itself."""

from __future__ import annotations

import numpy as np

from ..dataset import LEVELS
from .anatomy import LUMBAR_DISC0, Phantom


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
