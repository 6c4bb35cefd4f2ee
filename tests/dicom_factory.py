"""The one builder of small MR DICOM instances for the tests (test_dicom, the damaged-input corpus, the fuzzer).

Every instance carries identifying tags (patient name, id, birth date, a free-text description) as real
files do, so the tests that check no such value reaches a message or a report have something to find.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

AXIAL = [1, 0, 0, 0, 1, 0]


def instance(*, pixels=None, ipp=(0, 0, 0), iop=AXIAL, number=1, spacing=(0.5, 0.5), photometric="MONOCHROME2",
             bits=16, slope=None, intercept=None, syntax=ExplicitVRLittleEndian, frame="1.2.3.4") -> FileDataset:
    """One valid MR instance (8 x 10 by default) as a pydicom dataset.

    ``pixels`` default to ``arange(80) + number``; ``slope``/``intercept`` are written only when given;
    a ``syntax`` other than Explicit VR Little Endian gets encapsulated bytes no decoder can read.
    """
    pixels = np.arange(80, dtype=np.uint16).reshape(8, 10) + number if pixels is None else pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.FrameOfReferenceUID = frame
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-SECRET-42"
    ds.PatientBirthDate = "19500101"
    ds.SeriesDescription = "free text SECRET-DESC"
    ds.InstanceNumber = number
    ds.ImagePositionPatient = list(ipp)
    ds.ImageOrientationPatient = list(iop)
    ds.PixelSpacing = list(spacing)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    ds.PixelData = pixels.astype("<u2" if bits == 16 else "u1").tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x01no decoder" * 4])
    return ds


def dicom_bytes(ds: FileDataset) -> bytes:
    """The file an instance is written as (with the 128-byte preamble and file meta)."""
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def write(path: Path, ds: FileDataset) -> Path:
    """Write ``ds`` to ``path``; returns the path."""
    Path(path).write_bytes(dicom_bytes(ds))
    return Path(path)
