"""NumPy's percentile and median without their per-call machinery: the same values, bit for bit.

The segmenters and features ask for a percentile or a median of a small array some 600 times per study;
``np.percentile`` spends most of each call (about 40 us) on generic set-up (axis handling, method look-up,
``np.unique`` of the indices, dtype checks), not on the partition that finds the values. These run the same
partition and the same interpolation arithmetic as NumPy's ``linear`` method (``(n - 1) q`` virtual index,
``_lerp`` from below for a weight under 0.5 and from above otherwise, float64 weights; a scalar ``q`` keeps
NumPy's weak promotion, so a float32 array gives a float32 result as ``np.percentile`` does) and give the same
result type; anything else (NaN in the data, an empty or non-real array, ``q`` out of range) goes to NumPy itself.
``tests/test_fast_paths.py`` checks them against NumPy on many arrays.
"""

from __future__ import annotations

import math

import numpy as np

_REAL = frozenset("fiu")


def percentile(a, q):
    """``np.percentile(a, q)`` (``method="linear"``, every axis), the same value and type."""
    arr = np.asarray(a)
    n = arr.size
    if n == 0 or arr.dtype.kind not in _REAL:
        return np.percentile(a, q)
    if type(q) in (int, float):                        # NumPy's weak promotion: see _percentile_of_number
        return _percentile_of_number(arr, n, q)
    qs = np.true_divide(q, 100)
    if not ((qs >= 0) & (qs <= 1)).all():
        return np.percentile(a, q)
    vi = (n - 1) * qs                                  # NumPy's virtual index for "linear"
    prev = np.floor(vi)
    nxt = prev + 1
    above = vi >= n - 1
    prev_i = np.where(above, -1, prev).astype(np.intp)
    next_i = np.where(above, -1, nxt).astype(np.intp)
    inexact = arr.dtype.kind == "f"
    # The partition NumPy runs (the same kth set: 0, -1 and the neighbours); its values at those places are
    # the order statistics, whatever the partition's internal order.
    part = np.partition(arr.ravel(), np.unique(np.concatenate(([0, -1], prev_i.ravel(), next_i.ravel()))))
    if inexact and np.isnan(part[-1]):
        return np.percentile(a, q)
    lo, hi = part[prev_i], part[next_i]
    t = np.asarray(vi - prev_i, dtype=np.asarray(vi).dtype)        # the weights, float64
    diff = hi - lo
    out = np.add(lo, diff * t, out=...)
    np.subtract(hi, diff * (1 - t), out=out, where=t >= 0.5, casting="unsafe", dtype=type(out.dtype))
    return out[()] if out.ndim == 0 else out


def _percentile_of_number(arr: np.ndarray, n: int, q) -> np.generic:
    """:func:`percentile` at a Python int or float ``q``, in Python numbers where NumPy's 0-d arithmetic gives
    the same float64 values (``q / 100``, the virtual index, its floor and weight), and NumPy scalars for the
    interpolation (the array's dtype, as NumPy's weak promotion keeps it)."""
    if not 0 <= q <= 100:
        return np.percentile(arr, q)
    vi = (n - 1) * (q / 100)
    prev = -1 if vi >= n - 1 else math.floor(vi)
    nxt = -1 if prev == -1 else prev + 1
    part = np.partition(arr.ravel(), sorted({0, n - 1, prev % n, nxt % n}))
    if arr.dtype.kind == "f" and np.isnan(part[-1]):
        return np.percentile(arr, q)
    lo, hi = part[prev], part[nxt]
    t = vi - prev
    diff = hi - lo
    return hi - diff * (1 - t) if t >= 0.5 else lo + diff * t


def median(a):
    """``np.median(a)`` of a real array (every axis), the same value and type."""
    arr = np.asarray(a)
    n = arr.size
    if n == 0 or arr.dtype.kind not in _REAL:
        return np.median(a)
    h = n // 2
    inexact = arr.dtype.kind == "f"
    kth = [h - 1, h] if n % 2 == 0 else [h]
    part = np.partition(arr.ravel(), kth + [-1] if inexact else kth)
    if inexact and np.isnan(part[-1]):
        return np.median(a)
    # np.mean of the one or two middle values: their sum in the array's dtype over the count.
    return part[h:h + 1].mean() if n % 2 else part[h - 1:h + 1].mean()
