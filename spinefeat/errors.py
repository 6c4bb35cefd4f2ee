"""Exceptions raised by spinefeat.

Messages name the file, study and series involved, never patient-identifying
DICOM values.
"""


class SpinefeatError(Exception):
    """Base class of every error spinefeat raises on purpose."""


class DataError(SpinefeatError):
    """A CSV of the RSNA layout is missing, malformed or inconsistent."""


class DicomError(SpinefeatError):
    """A DICOM file or series cannot be read or has unusable geometry."""


class GeometryError(SpinefeatError):
    """A geometric operation is impossible (different frames, degenerate axes)."""


class ModelError(SpinefeatError):
    """A models folder is missing a file, was changed after training, or is damaged."""


class OutputError(SpinefeatError):
    """An output cannot be written (disk full, permissions, a file in the way)."""


class UsageError(SpinefeatError):
    """The command line asks for something impossible (bad option value, unusable output path)."""
