"""Sagittal T2, step 3: exactly five ordered discs from the detector's probabilities (dynamic programming with
spacing priors), each at the centre of its detector plateau."""

from __future__ import annotations

import logging

import numpy as np

from ..errors import SpinefeatError

log = logging.getLogger(__name__)


DISC_RADIUS_MM = 2.5


def chain(logp: np.ndarray, s_mm: np.ndarray, gaps: np.ndarray) -> tuple[np.ndarray, float]:
    """Best ordered choice of one sample per level (top to bottom).

    ``logp`` (n, 5): log-probability of each sample being each level;
    ``gaps`` (4, 2): mean and sd (mm) of the distance from level k to k+1.
    Returns the sample index per level and the total score. Levels are
    strictly ordered and spaced by at least half the smallest mean gap, so a
    missing or extra candidate can never give a skipped or doubled level.
    """
    n, k = logp.shape
    if n < k:
        raise SpinefeatError("canal too short for five levels")
    min_gap = 0.5 * float(gaps[:, 0].min())
    score = logp[:, 0].copy()
    back = np.zeros((k, n), int)
    diff = s_mm[None, :] - s_mm[:, None]                     # [i, j] = s_j - s_i
    for lv in range(1, k):
        mu, sd = gaps[lv - 1]
        trans = -0.5 * ((diff - mu) / sd) ** 2
        trans[diff < min_gap] = -np.inf
        tot = score[:, None] + trans
        back[lv] = np.argmax(tot, axis=0)
        score = tot[back[lv], np.arange(n)] + logp[:, lv]
    idx = np.zeros(k, int)
    idx[-1] = int(np.argmax(score))
    for lv in range(k - 1, 0, -1):
        idx[lv - 1] = back[lv][idx[lv]]
    return idx, float(score[idx[-1]])


def disc_centre_mm(p_level: np.ndarray, s_mm: np.ndarray, i: int, *, half_window_mm: float = 2.0 * DISC_RADIUS_MM) -> float:
    """Arc position of a disc: the detector-probability-weighted mean of the samples around the chain's choice ``i``.

    The detector marks every sample within :data:`DISC_RADIUS_MM` of a disc
    centre, so its probability is a plateau; the plateau's centre is finer
    than its argmax (which lands anywhere on it).
    """
    near = np.abs(s_mm - s_mm[i]) <= half_window_mm
    w = p_level[near]
    return float(np.sum(w * s_mm[near]) / w.sum()) if w.sum() > 0 else float(s_mm[i])
