"""A study's decoded images: its series loaded on first use and kept, and the slice look-ups.

Both extraction (measuring at points) and localisation (finding them) read a
study through one :class:`StudyImages`, so a series is decoded once per study
whichever of them asks first.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd

from .dataset import DataFolder
from .dicom import Stack, load_series, read_header, series_files
from .errors import SpinefeatError

log = logging.getLogger(__name__)


class StudyImages:
    """The decoded series of one study, loaded on first use and kept (decode each slice once)."""

    def __init__(self, folder: DataFolder, split: str, study_id: int, series: pd.DataFrame):
        self.folder, self.split, self.study_id = folder, split, int(study_id)
        self.series = series[series["study_id"] == self.study_id]
        self._stacks: dict[int, list[Stack]] = {}
        self._high: dict[int, float] = {}
        self._of: dict[str, list[int]] = {}
        self._one_frame: str | None = None

    def study_frame(self) -> str:
        """The frame every series of the study is taken to share when the FrameOfReferenceUIDs say nothing,
        else "".

        A scanner puts the series of one session in one frame. When no two series of the study share a
        FrameOfReferenceUID, the UIDs were regenerated per series (the RSNA 2024 anonymiser did this to every
        study: Sagittal T1, T2 and Axial T2 of one session each got their own) and cannot tell sessions apart;
        the series are then taken to share the patient coordinates of the study, as their positions show.
        Read from one header per series, once.
        """
        if self._one_frame is None:
            frames = []
            for sid in self.series["series_id"].astype(int):
                try:
                    frames.append(read_header(series_files(self._series_dir(sid))[0])["frame_of_reference"])
                except SpinefeatError:
                    continue
            regenerated = len(frames) >= 2 and all(frames) and len(set(frames)) == len(frames)
            self._one_frame = f"study {self.study_id} (one FrameOfReferenceUID per series)" if regenerated else ""
            if regenerated:
                log.info("study %s: every series has its own FrameOfReferenceUID; taken as one frame", self.study_id)
        return self._one_frame

    def _series_dir(self, series_id: int):
        return self.folder.images_dir(self.split) / str(self.study_id) / str(series_id)

    def stacks(self, series_id: int) -> list[Stack]:
        """The stacks of one series of the study (decoded on the first call)."""
        series_id = int(series_id)
        if series_id not in self._stacks:
            desc = self.series.loc[self.series["series_id"] == series_id, "series_description"]
            stacks = load_series(self._series_dir(series_id), description=desc.iloc[0] if len(desc) else "",
                                 study_id=self.study_id, series_id=series_id)
            if self.study_frame():
                for st in stacks:
                    st.geometry = replace(st.geometry, frame_of_reference=self.study_frame())
            self._stacks[series_id] = stacks
        return self._stacks[series_id]

    def series_high(self, series_id: int) -> float:
        """The series' 99.5th intensity percentile (every 4th pixel of every slice): its bright-tissue level."""
        series_id = int(series_id)
        if series_id not in self._high:
            px = np.concatenate([s.pixels[:, ::4, ::4].ravel() for s in self.stacks(series_id)])
            self._high[series_id] = float(np.percentile(px, 99.5, overwrite_input=True))     # px is a copy
        return self._high[series_id]

    def series_of(self, description: str) -> list[int]:
        """Series ids of the study with this description (e.g. ``Axial T2``), looked up once per description (the
        study's series table is fixed at construction; a new list each call)."""
        if description not in self._of:
            self._of[description] = self.series.loc[self.series["series_description"] == description,
                                                    "series_id"].astype(int).tolist()
        return list(self._of[description])

    def locate(self, series_id: int, instance_number: int, sop_uid: str = "") -> tuple[Stack, int]:
        """The stack and slice index holding an instance of a series (by SOPInstanceUID when given)."""
        for st in self.stacks(series_id):
            k = st.slice_of(instance_number, sop_uid)
            if k is not None:
                return st, k
        raise SpinefeatError(f"study {self.study_id} series {series_id}: no instance {instance_number}")

    def label_xyz(self, point) -> np.ndarray:
        """Patient position (mm) of a point given as series_id, instance_number, x (column), y (row)."""
        st, k = self.locate(point["series_id"], point["instance_number"])
        return st.geometry.to_patient(k, float(point["y"]), float(point["x"]))
