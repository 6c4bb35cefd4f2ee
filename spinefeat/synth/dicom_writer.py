"""One rendered slice written as an MR DICOM file with its geometry tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from ..geometry import StackGeometry


def uid(*parts) -> str:
    """A UID derived from ``parts`` (the same parts give the same UID: cohorts are reproducible)."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_dicom(path: Path, pixels: np.ndarray, geo: StackGeometry, k: int, *, study_uid: str, series_uid: str,
                series_number: int, description: str, instance: int, thickness: float, spacing: float,
                study_id: int) -> None:
    """Write slice ``k`` of stack ``geo`` (``pixels``: uint16 rows x columns) as one MR file at ``path``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = uid(series_uid, instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = geo.frame_of_reference
    ds.Modality = "MR"
    ds.PatientID = str(study_id)
    ds.PatientName = "Synthetic^Phantom"
    ds.Manufacturer = "spinefeat synthetic"
    ds.SeriesDescription = description
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [f"{v:.4f}" for v in geo.positions_mm[k]]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in geo.iop]
    ds.PixelSpacing = [f"{v:.4f}" for v in geo.pixel_spacing_mm]
    ds.SliceThickness = f"{thickness:.2f}"
    ds.SpacingBetweenSlices = f"{spacing:.2f}"
    ds.SliceLocation = f"{float(geo.offsets_mm[k]):.3f}"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.PixelData = pixels.astype("<u2").tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
