"""Latent narrowing per (condition, level), the grade rendered and the label a reader writes."""

from __future__ import annotations

import json
from importlib import resources
from statistics import NormalDist

import numpy as np

from ..dataset import CONDITIONS, LEVELS

#: Latent narrowing fraction band of each grade (Lurie thirds for the canal).
GRADE_BANDS = ((0.0, 0.33), (0.33, 0.66), (0.66, 0.88))
#: Noise between the latent a reader sees and the one rendered (see :func:`draw_latents`).
READER_NOISE = 0.25
_ND = NormalDist()


def label_stats() -> dict:
    """Per-target class frequencies and empty-cell rates of the real train.csv (packaged aggregates)."""
    with resources.files("spinefeat").joinpath("data/label_stats.json").open() as fh:
        return json.load(fh)



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
