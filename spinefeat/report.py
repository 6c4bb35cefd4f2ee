"""Pictures and reports written to disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .dataset import SERIES_TYPES, DataFolder
from .dicom import load_series
from .viz import contact_sheet


def preview_sheet(folders: list[Path], *, studies: int = 1, tile_px: int = 256) -> np.ndarray:
    """Contact sheets of the first ``studies`` studies of each folder, grouped by series type.

    Rows come in the order of :data:`~spinefeat.dataset.SERIES_TYPES`, so a real
    and a synthetic folder given together show each series type side by side.
    """
    rows = {t: [] for t in SERIES_TYPES}
    for root in folders:
        folder = DataFolder(root)
        for split in folder.splits():
            ser = folder.series(split)
            for study_id in list(dict.fromkeys(ser["study_id"]))[:studies]:
                for rec in ser[ser["study_id"] == study_id].itertuples():
                    stacks = load_series(folder.images_dir(split) / str(study_id) / str(rec.series_id),
                                         description=rec.series_description)
                    title = f"{study_id} {rec.series_description}"
                    rows[rec.series_description].append(contact_sheet(stacks, title=title, tile_px=tile_px))
            break   # one split per folder
    return np.vstack([r for t in SERIES_TYPES for r in rows[t]])


def write_preview(folders: list[Path], out: Path, *, studies: int = 1) -> Path:
    """Write :func:`preview_sheet` as a PNG."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), preview_sheet(folders, studies=studies))
    return out
