"""The 25 points of a study and of a folder: the steps put together."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..dataset import CONDITION_SERIES, CONDITIONS, LEVELS, DataFolder
from ..errors import GeometryError
from ..geometry import project_to_stacks
from ..images import StudyImages
from ..series import project_to_series, series_for_levels
from .detector import Localizer
from .placement import RECESSES, axial_midline_mm, midline_offsets_mm, place_foramen, place_study_recesses

log = logging.getLogger(__name__)


# sop_instance_uid names the slice where instance numbers repeat in a series.
COORD_COLUMNS = ["study_id", "series_id", "instance_number", "condition", "level", "x", "y", "confidence",
                 "sop_instance_uid"]


def localize_study(loc: Localizer, root: Path, split: str, study_id: int, series: pd.DataFrame, *,
                   images=None) -> tuple[list[dict], list[str]]:
    """The 25 points of one study (rows in the coordinate-file layout + confidence), and reasons for missing
    ones ("condition level: why", "condition: why" or, for the whole study, "why"). ``images`` reuses a
    :class:`~spinefeat.images.StudyImages` (its decoded series)."""
    images = images or StudyImages(DataFolder(root), split, study_id, series)
    rows, missing = [], []
    levels = series_for_levels(images)
    if levels is None:
        return [], ["no sagittal series: no levels found"]
    stack, frame = levels.stack, levels.stack.geometry.frame_of_reference
    log.info("study %s: levels found on %s", study_id, levels.reason)
    k, shift_mm, rc, conf, flags = loc.find_discs(stack)
    missing += flags              # a doubtful count from the sacrum: every level's confidence is capped too
    # The axial sac centres show where the midline is at each level; the spinal point of a level goes
    # on the sagittal slice nearest to its midline point (tilted planes cross slices along the spine).
    t_mm = np.linalg.norm((rc - rc[0]) * np.asarray(stack.geometry.pixel_spacing_mm), axis=1)
    d = midline_offsets_mm(axial_midline_mm(images, stack, k, rc), t_mm, shift_mm)
    midline = {}
    on_t2 = levels.description == CONDITION_SERIES["spinal_canal_stenosis"]
    for li, lv in enumerate(LEVELS):
        midline[lv] = stack.geometry.to_patient(k, rc[li, 0], rc[li, 1]) + d[li] * stack.geometry.normal
        if not on_t2:
            continue
        pr = project_to_stacks(midline[lv], [stack.geometry], frame_of_reference=frame)
        rows.append({"study_id": study_id, "series_id": levels.series_id,
                     "instance_number": int(stack.instance_numbers[pr["slice"]]),
                     "condition": "spinal_canal_stenosis", "level": lv, "x": float(pr["col"]), "y": float(pr["row"]),
                     "confidence": float(conf[li]), "sop_instance_uid": stack.sop_uid(pr["slice"])})
    if not on_t2:
        missing.append(f"spinal_canal_stenosis: no {CONDITION_SERIES['spinal_canal_stenosis']} series to read the "
                       f"canal on (levels found on {levels.reason})")
    for cond in CONDITIONS[1:]:
        desc = CONDITION_SERIES[cond]
        sids = images.series_of(desc)
        if not sids:
            missing.append(f"{cond}: no {desc} series")
            continue
        if cond in RECESSES:
            continue            # below: both sides of a level from one sac
        for lv in LEVELS:
            if lv not in loc.offsets[cond]:
                missing.append(f"{cond} {lv}: no training point to learn its offset from")
                continue
            xyz = midline[lv] + np.asarray(loc.offsets[cond][lv])
            try:
                sid, st, pr = project_to_series(xyz, images, sids, frame_of_reference=frame)
            except GeometryError as exc:
                missing.append(f"{cond} {lv}: {exc}")
                continue
            if not pr["in_image"]:
                missing.append(f"{cond} {lv}: outside the {desc} series")
                continue
            # The label marks the middle of the foramen: the centre of its fat keyhole on T1.
            j, r, c, hole_conf = place_foramen(st, xyz, pr, root_share=loc.keyhole_share)
            rows.append({"study_id": study_id, "series_id": sid, "instance_number": int(st.instance_numbers[j]),
                         "condition": cond, "level": lv, "x": c, "y": r,
                         "confidence": float(conf[LEVELS.index(lv)]) * hole_conf,
                         "sop_instance_uid": st.sop_uid(j)})
    got, why = (place_study_recesses(images, midline, frame=frame, rules=loc.sac_offsets)
                if images.series_of(CONDITION_SERIES[RECESSES[0]]) else ({}, {}))
    for lv in LEVELS:
        missing.extend(f"{cond} {lv}: {why[lv]}" for cond in RECESSES if lv in why)
        for cond, (sid, st, j, r, c, sac_conf) in got.get(lv, {}).items():
            rows.append({"study_id": study_id, "series_id": sid, "instance_number": int(st.instance_numbers[j]),
                         "condition": cond, "level": lv, "x": c, "y": r,
                         "confidence": float(conf[LEVELS.index(lv)]) * sac_conf, "sop_instance_uid": st.sop_uid(j)})
    return rows, missing


def localize(loc: Localizer, root: Path, *, split: str = "test", jobs: int = 1, progress=None,
             scheduler=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Points of every study of a split, and a table of what could not be placed and why.

    Studies run in ``jobs`` local processes or on the Dask cluster at ``scheduler``
    (:func:`spinefeat.parallel.map_studies`); a failing study is recorded and the run goes on."""
    from ..parallel import map_studies

    series = DataFolder(root).series(split, check_planes=True)
    ids = sorted(series["study_id"].unique())

    def one(sid):
        return localize_study(loc, root, split, int(sid), series)

    rows, missing = [], []
    done = 0
    for sid, (r, m) in map_studies(one, ids, jobs=jobs, scheduler=scheduler,
                                   on_error=lambda s, exc: ([], [f"{type(exc).__name__}: {exc}"])):
        rows.extend(r)
        missing.extend({"study_id": int(sid), "reason": x} for x in m)
        done += 1
        if progress is not None:
            progress(done, len(ids))
    pts = pd.DataFrame(rows, columns=COORD_COLUMNS).sort_values(["study_id", "condition", "level"]).reset_index(drop=True)
    return pts, pd.DataFrame(missing, columns=["study_id", "reason"])
