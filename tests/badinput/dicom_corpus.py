"""Damaged DICOM series, one folder each: what the header scan and the series loader must make of them.

Each case is a series folder ``<root>/<case>/1/<n>/`` of three 8 x 10 axial slices, one of them (or
all) damaged. ``expect`` says what :func:`spinefeat.dicom.load_series` must do: ``ok`` (all slices
used), ``skip`` (the damaged slice left out and recorded, the rest used) or ``error`` (a
:class:`~spinefeat.errors.DicomError` for the series).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import JPEGLSLossless, MPEG2MPML

from dicom_factory import dicom_bytes, instance


@dataclass
class DicomCase:
    name: str
    what: str
    expect: str        # ok | skip | error
    folder: Path = Path()


def _series(folder: Path, datasets: list, raw: dict[int, bytes] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, ds in enumerate(datasets):
        data = (raw or {}).get(i)
        (folder / f"{i + 1}.dcm").write_bytes(data if data is not None else dicom_bytes(ds))
    return folder


def _three(**kw) -> list:
    return [instance(ipp=(0, 0, 4.0 * i), number=i + 1, **kw) for i in range(3)]


def _without(tag: str) -> list:
    dss = _three()
    del dss[1][tag]
    return dss


def build(root: Path) -> list[DicomCase]:
    """Write every case under ``root``; return them with their folders."""
    root = Path(root)
    cases: list[DicomCase] = []

    def add(name, what, expect, datasets, raw=None):
        c = DicomCase(name, what, expect, root / name / "1" / "2")
        _series(c.folder, datasets, raw)
        cases.append(c)

    good = _three()
    whole = dicom_bytes(good[1])
    add("truncated", "slice 2 cut to half its bytes", "skip", good, {1: whole[: len(whole) // 2]})
    add("truncated_pixels", "slice 2 loses its last 40 bytes (inside PixelData)", "skip", _three(),
        {1: whole[:-40]})
    add("non_dicom", "slice 2 is a text file", "skip", _three(), {1: b"hello, not a DICOM file\n" * 20})
    add("empty_file", "slice 2 has 0 bytes", "skip", _three(), {1: b""})
    add("no_pixeldata", "slice 2 has no PixelData", "skip", _without("PixelData"))
    add("no_pixelspacing", "slice 2 has no PixelSpacing", "skip", _without("PixelSpacing"))
    add("no_ipp", "slice 2 has no ImagePositionPatient", "skip", _without("ImagePositionPatient"))
    add("no_iop", "slice 2 has no ImageOrientationPatient", "skip", _without("ImageOrientationPatient"))
    bad_ipp = _three()
    bad_ipp[1].ImagePositionPatient = ["111", "0", "4"]     # then spelt "abc" in the bytes (pydicom refuses it)
    add("ipp_abc", "slice 2 has ImagePositionPatient 'abc'", "skip", bad_ipp,
        {1: dicom_bytes(bad_ipp[1]).replace(b"111\\0\\4", b"abc\\0\\4")})
    dup = _three()
    dup[2].ImagePositionPatient = [0, 0, 4.0]
    add("duplicate_positions", "slices 2 and 3 at the same position", "ok", dup)
    irregular = _three()
    irregular[2].ImagePositionPatient = [0, 0, 11.0]
    add("nonuniform_positions", "slice gaps 4 and 7 mm", "ok", irregular)
    dupn = _three()
    dupn[2].InstanceNumber = 2
    add("duplicate_instance_number", "slices 2 and 3 both InstanceNumber 2", "ok", dupn)
    add("compressed_no_decoder", "MPEG2 pixel data (no decoder exists)", "error", _three(syntax=MPEG2MPML))
    add("compressed_damaged", "JPEG-LS syntax, pixel data not a JPEG-LS stream", "error", _three(syntax=JPEGLSLossless))
    add("monochrome1", "MONOCHROME1 (inverted)", "ok", _three(photometric="MONOCHROME1"))
    add("bits8", "8-bit pixels", "ok", _three(bits=8))
    add("bits16", "16-bit pixels", "ok", _three(bits=16))
    absurd = _three()
    absurd[1].Rows, absurd[1].Columns = 60000, 60000
    add("absurd_size", "slice 2 claims 60000 x 60000 pixels", "skip", absurd)
    fewer = _three()
    for ds in fewer:
        ds.Rows = 4                       # pixel data holds 8 rows
    add("rows_smaller_than_data", "Rows 4 on every slice, pixel data of 8 rows", "error", fewer)
    zero_ps = _three()
    zero_ps[1].PixelSpacing = [0, 0]
    add("zero_pixelspacing", "slice 2 has PixelSpacing 0", "skip", zero_ps)
    return cases
