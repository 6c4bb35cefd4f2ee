"""Pictures for people: contact sheets of series (pure functions returning uint8 arrays)."""

from __future__ import annotations

import cv2
import numpy as np

from .dicom import Stack


def window(img: np.ndarray, *, lo_pct: float = 1.0, hi_pct: float = 99.5) -> np.ndarray:
    """Percentile window to uint8 (the display equivalent of per-series normalisation)."""
    img = np.asarray(img, dtype=np.float32)
    lo, hi = np.percentile(img, [lo_pct, hi_pct])
    return (np.clip((img - lo) / max(float(hi - lo), 1e-6), 0, 1) * 255).astype(np.uint8)


def contact_sheet(stacks: list[Stack], *, title: str, n: int = 5, tile_px: int = 256) -> np.ndarray:
    """A row of ``n`` slices spread through a series (one per stack for multi-stack series)."""
    tiles = []
    if len(stacks) > 1:
        picks = [(st, st.geometry.n_slices // 2) for st in stacks[:n]]
    else:
        st = stacks[0]
        k = st.geometry.n_slices
        picks = [(st, int(round(i))) for i in np.linspace(k * 0.15, k * 0.85 - 1, min(n, k))]
    for st, k in picks:
        t = cv2.resize(window(st.pixels[k]), (tile_px, tile_px), interpolation=cv2.INTER_AREA)
        cv2.putText(t, f"{title} #{int(st.instance_numbers[k])}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1)
        tiles.append(t)
    row = np.hstack(tiles)
    width = n * tile_px
    if row.shape[1] < width:
        row = np.hstack([row, np.zeros((tile_px, width - row.shape[1]), np.uint8)])
    return row
