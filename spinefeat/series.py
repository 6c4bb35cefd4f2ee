"""Which of a study's series a point is found or read on, and moving a point onto the best of several series.

Two rules live here and nowhere else:

* :func:`series_for_levels` picks the sagittal series the levels are found on:
  the most complete Sagittal T2/STIR (the canal is read on it), else the most
  complete Sagittal T1, and says which and why.
* :func:`project_to_series` moves a patient point onto the best stack of one or
  more series, only within the point's FrameOfReferenceUID, and says why when
  it cannot.

``images`` is any object with ``series_of(description) -> [series_id]`` and
``stacks(series_id) -> [Stack]`` (a :class:`~spinefeat.extract.StudyImages`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .dataset import CONDITION_SERIES
from .dicom import Stack
from .errors import GeometryError
from .geometry import project_to_stacks

LEVEL_SERIES = (CONDITION_SERIES["spinal_canal_stenosis"], "Sagittal T1")


@dataclass(frozen=True)
class SeriesChoice:
    """The series a study's levels are found on: its id, its type, its largest stack, and why it was chosen."""

    series_id: int
    description: str
    stack: Stack
    reason: str


def most_complete(images, description: str) -> tuple[int, Stack, str] | None:
    """The series of ``description`` whose largest stack has the most slices (the first listed on a tie).

    Returns ``(series_id, largest stack, reason)`` or None when the study has no such series.
    """
    sids = images.series_of(description)
    if not sids:
        return None
    largest = {sid: max(images.stacks(sid), key=lambda s: s.geometry.n_slices) for sid in sids}
    best = max(sids, key=lambda sid: largest[sid].geometry.n_slices)      # max keeps the first on a tie
    why = f"{description} series {best}"
    if len(sids) > 1:
        counts = " and ".join(str(largest[sid].geometry.n_slices) for sid in sids)
        why += f" (the most complete of {len(sids)}: {counts} slices)"
    return best, largest[best], why


def series_for_levels(images) -> SeriesChoice | None:
    """The sagittal series the five levels are found on, or None when the study has no sagittal series.

    The most complete Sagittal T2/STIR (the canal's own series); without one, the
    most complete Sagittal T1 (the spine is on it too; only the spinal points,
    read on T2, are then missing). ``reason`` names the series and why.
    """
    for i, description in enumerate(LEVEL_SERIES):
        hit = most_complete(images, description)
        if hit is not None:
            sid, stack, why = hit
            if i > 0:
                why += f", no {LEVEL_SERIES[0]} series"
            return SeriesChoice(sid, description, stack, why)
    return None


def project_to_series(xyz, images, series_ids, *, frame_of_reference: str) -> tuple[int, Stack, dict]:
    """Project a patient point onto the best stack of the given series.

    The best stack is the one whose nearest slice is closest out of plane among
    those where the point falls inside the image, when any
    (:func:`~spinefeat.geometry.project_to_stacks`). Stacks in another
    FrameOfReferenceUID than ``frame_of_reference`` (the one the point was found
    in) are never candidates: patient coordinates mean nothing across frames.

    Returns ``(series_id, stack, projection)``.

    Raises
    ------
    GeometryError
        When no series is given, or every stack is in another frame (the message
        names the series).
    """
    cands = [(sid, st) for sid in series_ids for st in images.stacks(sid)]
    if not cands:
        raise GeometryError("no series to project onto")
    same = [(sid, st) for sid, st in cands if st.geometry.frame_of_reference == frame_of_reference]
    if not same:
        ids = ", ".join(str(s) for s in dict.fromkeys(sid for sid, _ in cands))
        raise GeometryError(f"series {ids} in another FrameOfReferenceUID than the point's: points do not move "
                            "between frames")
    pr = project_to_stacks(xyz, [st.geometry for _, st in same], frame_of_reference=frame_of_reference)
    sid, st = same[pr["stack"]]
    return sid, st, pr
