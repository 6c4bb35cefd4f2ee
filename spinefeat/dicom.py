"""Read DICOM headers and series into geometric stacks.

Only ids, geometry and pixel-format tags are read into tables; no
patient-identifying values are stored, logged or put into error messages
(studies and series are named by the folder ids of the RSNA layout).
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword

from .errors import DicomError
from .geometry import StackGeometry, orientation_axes, split_stacks

log = logging.getLogger(__name__)

#: Columns of the per-instance index.
INSTANCE_COLUMNS = (
    "split", "study_id", "series_id", "instance_number", "file", "series_description",
    "frame_of_reference", "ipp_x", "ipp_y", "ipp_z", "iop_0", "iop_1", "iop_2", "iop_3", "iop_4", "iop_5",
    "row_spacing_mm", "col_spacing_mm", "slice_thickness_mm", "spacing_between_slices_mm",
    "rows", "cols", "bits_stored", "photometric", "transfer_syntax", "plane", "error",
)

_COMPRESSED_HINT = (
    "install the decoders with `pip install 'spinefeat[jpeg]'` (pylibjpeg with its OpenJPEG and libjpeg plugins)"
)


def _raw_text(ds, keyword: str) -> list[str] | None:
    """The text values of a decimal or integer string element (DS, IS) that pydicom has not converted yet, or
    None (absent, already converted, of another VR).

    Read from the element's bytes: pydicom's conversion builds and validates one object per value, which on
    a header of 30 elements costs more than decoding an RLE slice."""
    if not _text_number(keyword):
        return None
    elem = ds.get_item(keyword) if keyword in ds else None
    if elem is None or not isinstance(elem.value, bytes):
        return None
    vr = elem.VR if elem.VR is not None else dictionary_VR(elem.tag)     # None: implicit VR, the dictionary's
    if vr not in ("DS", "IS"):
        return None
    return elem.value.decode("ascii").split("\\")


@functools.lru_cache(maxsize=None)
def _text_number(keyword: str) -> bool:
    """Whether the dictionary gives a tag a decimal or integer string VR (DS, IS): only those are read from bytes."""
    return dictionary_VR(tag_for_keyword(keyword)) in ("DS", "IS")


def _floats(ds, keyword: str, n: int) -> list[float]:
    """``n`` floats of a tag; NaNs when it is absent, malformed ("abc") or of another length."""
    try:
        raw = _raw_text(ds, keyword)
        if raw is not None:
            vals = [float(v.strip(" \0")) for v in raw]
        else:
            val = ds.get(keyword)
            if val is None:
                return [float("nan")] * n
            vals = [float(v) for v in (val if n > 1 else [val])]
    except (TypeError, ValueError, OverflowError, UnicodeDecodeError):
        return [float("nan")] * n
    if len(vals) != n:
        return [float("nan")] * n
    return vals


def _int(ds, keyword: str, default: int) -> int:
    try:
        raw = _raw_text(ds, keyword)
        if raw is not None:
            if len(raw) != 1 or not raw[0].strip(" \0"):
                return default
            v = float(raw[0].strip(" \0"))
            return int(v) if v == int(v) else default
        val = ds.get(keyword)
        return int(val) if val not in (None, "") else default
    except (TypeError, ValueError, OverflowError, UnicodeDecodeError):
        return default


def _guard(fn):
    """Run ``fn(path)`` with pydicom's warnings silenced and any failure on a damaged file as DicomError."""

    @functools.wraps(fn)
    def run(path, *args, **kwargs):
        _quiet_pydicom(+1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")          # pydicom warns about every oddity of a damaged file
                return fn(path, *args, **kwargs)
        except DicomError:
            raise
        except (*_READ_ERRORS, MemoryError) as exc:
            # Elements are parsed lazily, so a damaged one can fail at any access, not only in dcmread.
            raise DicomError(f"{path}: damaged DICOM file ({type(exc).__name__})") from None
        finally:
            _quiet_pydicom(-1)
    return run


_quiet = {"depth": 0, "level": logging.NOTSET, "lock": threading.Lock()}


def _quiet_pydicom(step: int) -> None:
    """Silence pydicom's logger while any thread reads a file (its decoders log a traceback at ERROR
    before raising; the DicomError says it in one line), and restore its level after the last one."""
    with _quiet["lock"]:
        pd_log = logging.getLogger("pydicom")
        if step > 0 and _quiet["depth"] == 0:
            _quiet["level"] = pd_log.level
            pd_log.setLevel(logging.CRITICAL)
        _quiet["depth"] += step
        if _quiet["depth"] == 0:
            pd_log.setLevel(_quiet["level"])


@_guard
def read_header(path: Path) -> dict:
    """Geometry and format tags of one DICOM file, without its pixels.

    Raises :class:`DicomError` (only) for a file that is not DICOM or is damaged.
    """
    path = Path(path)
    ds = _read(path, stop_before_pixels=True)
    ipp = _floats(ds, "ImagePositionPatient", 3)
    iop = _floats(ds, "ImageOrientationPatient", 6)
    ps = _floats(ds, "PixelSpacing", 2)
    # Free-text tags (SeriesDescription ...) are never copied: the plane comes from the orientation.
    return {
        "instance_number": _int(ds, "InstanceNumber", -1),
        "plane": plane_of(iop) if np.all(np.isfinite(iop)) and np.linalg.norm(iop[:3]) > 0 else "",
        "frame_of_reference": _str(ds, "FrameOfReferenceUID"),
        "ipp_x": ipp[0], "ipp_y": ipp[1], "ipp_z": ipp[2],
        **{f"iop_{i}": v for i, v in enumerate(iop)},
        "row_spacing_mm": ps[0], "col_spacing_mm": ps[1],
        "slice_thickness_mm": _floats(ds, "SliceThickness", 1)[0],
        "spacing_between_slices_mm": _floats(ds, "SpacingBetweenSlices", 1)[0],
        "rows": _int(ds, "Rows", 0),
        "cols": _int(ds, "Columns", 0),
        "bits_stored": _int(ds, "BitsStored", 0),
        "photometric": _str(ds, "PhotometricInterpretation"),
        "transfer_syntax": _ts_name(ds),
    }


def _str(ds, keyword: str) -> str:
    try:
        return str(ds.get(keyword, ""))
    except Exception:       # a malformed value pydicom cannot convert
        return ""


def _ts_name(ds) -> str:
    try:
        ts = ds.file_meta.TransferSyntaxUID
        return str(ts.name)
    except Exception:
        return ""


#: pydicom raises almost anything on a damaged file (BytesLengthException, struct.error, KeyError ...,
#: found by tests/badinput/fuzz.py): while parsing one file, every Exception becomes a DicomError.
_READ_ERRORS = (Exception,)


def _read(path: Path, *, stop_before_pixels: bool):
    """``dcmread`` with every failure of a damaged file turned into :class:`DicomError` naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
            # Elements are parsed lazily: touch the ones read later so their errors surface here (the geometry
            # tags and InstanceNumber are read from their bytes by _floats and _int).
            for kw in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation"):
                ds.get(kw)
    except _READ_ERRORS as exc:
        raise DicomError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None
    return ds


def series_files(series_dir: Path) -> list[Path]:
    """The ``*.dcm`` files of a series folder, sorted by name (order is irrelevant)."""
    files = sorted(Path(series_dir).glob("*.dcm"))
    if not files:
        raise DicomError(f"{series_dir}: no .dcm files")
    return files


def scan_series(series_dir: Path, *, split: str = "", study_id: int | None = None,
                series_id: int | None = None, description: str = "") -> list[dict]:
    """Header rows of every instance of a series folder; unreadable files get an ``error``."""
    series_dir = Path(series_dir)
    study_id = int(series_dir.parent.name) if study_id is None else study_id
    series_id = int(series_dir.name) if series_id is None else series_id
    rows = []
    for f in series_files(series_dir):
        base = {"split": split, "study_id": study_id, "series_id": series_id, "file": str(f),
                "series_description": description, "error": ""}
        try:
            base.update(read_header(f))
        except DicomError as exc:
            base["error"] = str(exc)
        rows.append(base)
    return rows


def plane_of(iop) -> str:
    """``sagittal``, ``coronal`` or ``axial`` from the dominant axis of the slice normal."""
    n = np.abs(orientation_axes(iop)[2])
    return ("sagittal", "coronal", "axial")[int(np.argmax(n))]


def _iops(df: pd.DataFrame) -> np.ndarray:
    return df[[f"iop_{i}" for i in range(6)]].to_numpy(float)


def _ipps(df: pd.DataFrame) -> np.ndarray:
    return df[["ipp_x", "ipp_y", "ipp_z"]].to_numpy(float)


def summarize_series(instances: pd.DataFrame) -> pd.DataFrame:
    """One row per series from an instance index (see :func:`spinefeat.dataset` layout).

    Columns: ids, description, plane, n_instances, n_stacks, slice_spacing_mm
    (median over stacks), spacing_regular, n_missing (slices missing inside a
    stack, from gaps of about twice the spacing), n_duplicate_positions,
    n_frames_of_reference, rows, cols, pixel spacing, n_errors.
    """
    out = []
    for (split, study, series), g in instances.groupby(["split", "study_id", "series_id"], sort=True):
        ok = g[g["error"] == ""].dropna(subset=["ipp_x", "iop_0", "row_spacing_mm"])
        rec = {"split": split, "study_id": study, "series_id": series,
               "series_description": g["series_description"].iloc[0],
               "n_instances": len(g), "n_errors": int((g["error"] != "").sum())}
        if len(ok):
            stacks = split_stacks(_ipps(ok), _iops(ok))
            spacings, regular, missing, dups = [], True, 0, 0
            for idx in stacks:
                sub = ok.iloc[idx]
                geo = StackGeometry(_ipps(sub), _iops(sub)[0], sub[["row_spacing_mm", "col_spacing_mm"]].iloc[0],
                                    (int(sub["rows"].iloc[0]), int(sub["cols"].iloc[0])))
                if geo.n_slices > 1:
                    gaps = np.diff(geo.offsets_mm)
                    dups += int(np.sum(gaps < 1e-3))
                    real = gaps[gaps >= 1e-3]
                    if len(real):
                        med = float(np.median(real))
                        spacings.append(med)
                        missing += int(np.sum(np.maximum(np.round(real / med) - 1, 0)))
                        regular &= geo.is_regular() and dups == 0
            rec.update({
                "plane": plane_of(_iops(ok)[0]),
                "n_stacks": len(stacks),
                "slice_spacing_mm": float(np.median(spacings)) if spacings else float("nan"),
                "spacing_regular": bool(regular),
                "n_missing": missing,
                "n_duplicate_positions": dups,
                "n_frames_of_reference": int(ok["frame_of_reference"].nunique()),
                "rows": int(ok["rows"].iloc[0]), "cols": int(ok["cols"].iloc[0]),
                "row_spacing_mm": float(ok["row_spacing_mm"].iloc[0]),
                "col_spacing_mm": float(ok["col_spacing_mm"].iloc[0]),
                "transfer_syntax": ok["transfer_syntax"].iloc[0],
            })
        out.append(rec)
    return pd.DataFrame(out)


@dataclass
class Stack:
    """Decoded pixels of one geometric stack of a series.

    Attributes
    ----------
    pixels : ndarray (k, rows, cols) float32
        Modality values (rescale applied, MONOCHROME1 inverted with the series' range), in slice-normal
        order; one array per stack.
    geometry : StackGeometry
    instance_numbers : ndarray (k,)
        InstanceNumber of each slice, in the same order.
    """

    study_id: int
    series_id: int
    description: str
    pixels: np.ndarray
    geometry: StackGeometry
    instance_numbers: np.ndarray
    #: SOPInstanceUID of each slice ("" when absent): names a slice even where instance numbers repeat.
    sop_uids: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    #: Files of the series left out ("<file>: why"): unreadable, truncated, without geometry.
    skipped: tuple[str, ...] = ()
    #: Instance numbers carried by more than one slice of the series (ambiguous labels).
    duplicate_instances: tuple[int, ...] = ()

    def slice_of_instance(self, instance_number: int) -> int | None:
        """The slice carrying ``instance_number``, None when none does.

        Raises :class:`DicomError` when the number is on more than one slice of the
        series: a point given by that number cannot be placed unambiguously.
        """
        if int(instance_number) in self.duplicate_instances:
            raise DicomError(f"study {self.study_id} series {self.series_id}: instance number {int(instance_number)} "
                             "is on more than one slice; a point given by it is ambiguous (fix the InstanceNumber "
                             "tags or the label file)")
        hit = np.flatnonzero(self.instance_numbers == int(instance_number))
        return int(hit[0]) if len(hit) else None

    def sop_uid(self, k: int) -> str:
        """SOPInstanceUID of slice ``k`` ("" when the files have none)."""
        return str(self.sop_uids[k]) if len(self.sop_uids) > k else ""

    def slice_of(self, instance_number: int, sop_uid: str = "") -> int | None:
        """The slice a point names: by its SOPInstanceUID when given (unambiguous), else by instance number."""
        if sop_uid:
            hit = np.flatnonzero(self.sop_uids == sop_uid)
            return int(hit[0]) if len(hit) else None
        return self.slice_of_instance(instance_number)


def decode_pixels(ds, path: Path, out: np.ndarray | None = None) -> np.ndarray:
    """Pixel data of one frame as float32 modality values (RescaleSlope / RescaleIntercept applied).

    With ``out`` (a float32 array of the frame's shape, e.g. one slice of a stack) the values are written
    there and no other array is made. MONOCHROME1 is not inverted here: an inversion needs the range of the
    whole series (:func:`load_series` does it). A compressed transfer syntax without a decoder raises
    :class:`DicomError` naming the syntax and the extra to install.
    """
    arr = _pixel_array(ds, path)
    if out is None:
        out = np.empty(arr.shape, np.float32)
    elif out.shape != arr.shape:
        raise DicomError(f"{path}: pixel array of shape {arr.shape}, but Rows/Columns say {out.shape}")
    return _to_modality(ds, arr, out)


def _pixel_array(ds, path: Path) -> np.ndarray:
    """The decoded frame, as the decoder gives it (pydicom's ``pixel_array`` function: the Dataset property
    would also read a dozen tags twice to cache the array, which a series read once does not need)."""
    from pydicom.pixels import pixel_array

    arr = _native_frame(ds)
    if arr is None:
        arr = _rle_frame(ds)
    if arr is not None:
        return arr
    try:
        arr = pixel_array(ds)
    except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError/ValueError by handler
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = ts.name if ts is not None else "unknown transfer syntax"
        hint = _COMPRESSED_HINT if ts is not None and ts.is_compressed else "the file may be truncated"
        raise DicomError(f"{path}: cannot decode pixels ({name}): {hint}") from exc
    if arr.ndim != 2:
        raise DicomError(f"{path}: expected one 2-D frame, got pixel array of shape {arr.shape}")
    return arr


#: Transfer syntaxes whose pixel data are the little-endian pixel values themselves (Implicit and Explicit VR
#: Little Endian).
_NATIVE_LE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _native_frame(ds) -> np.ndarray | None:
    """The frame read straight from the PixelData bytes with numpy, or None when that might not be exactly the
    array pydicom's pixel handler gives (which then decodes it).

    Only for one frame of one sample of 8 or 16 allocated bits, unsigned or two's complement, little endian,
    MONOCHROME1/2, with BitsStored <= BitsAllocated given; bits above BitsStored are cleared (unsigned) or
    take the sign bit (signed), as pydicom's default ``correct_unused_bits`` does. Rescale and MONOCHROME1
    are applied after either route, by the same code. Skips pydicom's per-file option building, which costs
    several times the copy on a small uncompressed slice.
    """
    fmt = _plain_format(ds, _NATIVE_LE)
    if fmt is None:
        return None
    rows, cols, bits, stored, dtype = fmt
    raw = ds.PixelData
    if not isinstance(raw, bytes) or len(raw) < rows * cols * bits // 8:
        return None
    arr = np.frombuffer(raw, dtype, count=rows * cols).reshape(rows, cols)
    return _unused_bits_corrected(arr.copy() if stored < bits else arr, bits, stored)


#: RLE Lossless, decoded by pylibjpeg-rle's frame decoder directly where that is what pydicom would run.
_RLE = ("1.2.840.10008.1.2.5",)


def _rle_frame(ds) -> np.ndarray | None:
    """An RLE Lossless frame decoded by pylibjpeg-rle's frame decoder (the plugin pydicom itself tries first
    for RLE), or None when pydicom should decode it: not RLE, not a format :func:`_native_frame` takes, no
    pylibjpeg-rle, an extended offset table, or data the decoder rejects or decodes to the wrong length (then
    pydicom says what is wrong, as before).

    The frame is taken from the encapsulated data as pydicom takes it (``get_frame``), interpreted as pydicom's
    little-endian pixel dtype and its unused bits corrected as pydicom does (:func:`_unused_bits_corrected`).
    Skips pydicom's decode runner and its option building, a third of the decoding time of a 512 x 512 slice.
    """
    fmt = _plain_format(ds, _RLE)
    if fmt is None or "ExtendedOffsetTable" in ds or min(fmt[:2]) <= 0:
        return None
    rows, cols, bits, stored, dtype = fmt
    try:
        from pydicom.encaps import get_frame
        from rle.rle import decode_frame

        frame = decode_frame(get_frame(ds.PixelData, 0, number_of_frames=1), rows * cols, bits, "<")
    except Exception:        # no pylibjpeg-rle, or data it cannot decode: pydicom's handler decides
        return None
    if len(frame) != rows * cols * bits // 8:
        return None
    return _unused_bits_corrected(np.frombuffer(frame, dtype).reshape(rows, cols), bits, stored)


def _plain_format(ds, syntaxes) -> tuple[int, int, int, int, np.dtype] | None:
    """Rows, columns, BitsAllocated, BitsStored and the little-endian numpy dtype of a file whose pixels the fast
    routes read: a transfer syntax among ``syntaxes``, PixelData (not float), one frame of one sample of 8 or 16
    allocated bits, PixelRepresentation 0 or 1, 0 < BitsStored <= BitsAllocated, MONOCHROME1/2; else None."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts not in syntaxes or "PixelData" not in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return None
    bits, stored = _int(ds, "BitsAllocated", 0), _int(ds, "BitsStored", 0)
    rep, spp, frames = _int(ds, "PixelRepresentation", -1), _int(ds, "SamplesPerPixel", 1), _int(ds, "NumberOfFrames", 1)
    rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    if (bits not in (8, 16) or not 0 < stored <= bits or rep not in (0, 1) or spp != 1 or frames != 1
            or _str(ds, "PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2")):
        return None
    return rows, cols, bits, stored, np.dtype(f"<{'ui'[rep]}{bits // 8}")


def _unused_bits_corrected(arr: np.ndarray, bits: int, stored: int) -> np.ndarray:
    """The bits above BitsStored cleared (unsigned) or given the sign bit (signed), in place, as pydicom's
    ``correct_unused_bits`` does (a shift left, then right); ``arr`` must be writeable when they are unused."""
    if stored < bits:
        np.left_shift(arr, bits - stored, out=arr)
        np.right_shift(arr, bits - stored, out=arr)
    return arr


def _to_modality(ds, arr: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``arr`` as float32 modality values written into ``out`` (RescaleSlope / RescaleIntercept applied)."""
    out[...] = arr
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1:
        out *= np.float32(slope)
    if intercept != 0:
        out += np.float32(intercept)
    return out


def _invert_monochrome1(stacks: list["Stack"], inverted: list[np.ndarray]) -> None:
    """MONOCHROME1 (low values bright) to MONOCHROME2, in place, with the series' range: one value maps to one
    value on every slice (inverting each slice with its own max + min would give each slice its own scale)."""
    if not any(m.any() for m in inverted):
        return
    lo = min(float(st.pixels[m].min()) for st, m in zip(stacks, inverted) if m.any())
    hi = max(float(st.pixels[m].max()) for st, m in zip(stacks, inverted) if m.any())
    for st, m in zip(stacks, inverted):
        if m.any():
            st.pixels[m] = np.float32(hi + lo) - st.pixels[m]


def load_series(series_dir: Path, *, description: str = "", study_id: int | None = None,
                series_id: int | None = None) -> list[Stack]:
    """Decode a series folder into stacks sorted along their normals.

    Each file is read and decoded once. Instances are split by orientation, image size and gaps
    (:func:`spinefeat.geometry.split_stacks`). MONOCHROME1 slices are inverted with the series' range. A
    file that cannot be used (unreadable, truncated, no geometry, Rows x Columns disagreeing with its
    pixel data) is skipped with a warning and listed in each stack's ``skipped``; a series with no usable
    file raises :class:`DicomError`. Instance numbers on more than one slice are listed in
    ``duplicate_instances`` (looking one up raises).
    """
    series_dir = Path(series_dir)
    study_id = int(series_dir.parent.name) if study_id is None else study_id
    series_id = int(series_dir.name) if series_id is None else series_id
    skipped: dict[int, str] = {}         # file index -> "<file>: why"

    def skip(i: int, f: Path, exc: DicomError) -> None:
        # One bad slice does not cost the series: it is left out and recorded.
        why = str(exc).split(": ", 1)[-1]
        log.warning("study %s series %s: skipping %s: %s", study_id, series_id, f.name, why)
        skipped[i] = f"{f.name}: {why}"

    heads: dict[int, _Header] = {}
    _quiet_pydicom(+1)           # once for the series, not twice a file (each switch clears logging's caches)
    try:
        for i, f in enumerate(series_files(series_dir)):
            try:
                heads[i] = _slice_header(f)
            except DicomError as exc:
                skip(i, f, exc)
        # The stacks' layout comes from the headers, so each slice is decoded straight into its stack's array.
        # A slice that then fails to decode is left out and the layout redone without it (its gaps may differ).
        while True:
            layout, pixels, failed = _layout(list(heads.values())), [], {}
            for members in layout:
                arr = np.empty((len(members), *members[0].shape), np.float32)
                for j, h in enumerate(members):
                    try:
                        _decode_into(h, arr[j])
                    except DicomError as exc:
                        failed[h.path] = exc
                pixels.append(arr)
            if not failed:
                break
            for i, h in list(heads.items()):
                if h.path in failed:
                    skip(i, h.path, failed[h.path])
                    del heads[i]
    finally:
        _quiet_pydicom(-1)
    if not heads:
        first = f" (first: {skipped[min(skipped)]})" if skipped else ""
        raise DicomError(f"study {study_id} series {series_id}: no decodable instance with geometry{first}")
    numbers = [h.instance_number for h in heads.values()]
    dups = tuple(sorted({n for n in numbers if numbers.count(n) > 1}))
    if dups:
        log.warning("study %s series %s: instance numbers %s are on more than one slice", study_id, series_id,
                    list(dups))
    skipped_files = tuple(skipped[i] for i in sorted(skipped))
    stacks: list[Stack] = []
    for members, arr in zip(layout, pixels):
        first = members[0]
        geo = StackGeometry(np.array([h.ipp for h in members]), first.iop, first.ps, first.shape, first.frame)
        stacks.append(Stack(study_id, series_id, description, arr, geo,
                            np.array([h.instance_number for h in members]),
                            np.array([h.sop_uid for h in members], dtype=object), skipped_files, dups))
    _invert_monochrome1(stacks, [np.array([h.monochrome1 for h in members]) for members in layout])
    return stacks


def _layout(heads: list[_Header]) -> list[list[_Header]]:
    """The files of each stack, in stack order: split by image size (images of different size never share a
    stack), then by orientation and gaps (:func:`spinefeat.geometry.split_stacks`)."""
    by_shape: dict[tuple[int, int], list[_Header]] = {}
    for h in heads:
        by_shape.setdefault(h.shape, []).append(h)
    out = []
    for members in by_shape.values():
        for idx in split_stacks(np.array([h.ipp for h in members]), np.array([h.iop for h in members])):
            out.append([members[i] for i in idx])
    return out


def _expected_pixel_bytes(ds) -> int | None:
    """Bytes of native (uncompressed) pixel data the header promises; None for compressed data."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and ts.is_compressed:
        return None
    rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    bits, spp, frames = _int(ds, "BitsAllocated", 0), _int(ds, "SamplesPerPixel", 1), _int(ds, "NumberOfFrames", 1)
    return rows * cols * spp * max(frames, 1) * bits // 8


def _has_decoder(ts) -> bool:
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(ts).is_available)
    except Exception:          # no decoder implemented for this syntax at all
        return False


#: Largest image side accepted (real MRI is at most a few thousand pixels).
MAX_SIDE = 8192


@dataclass
class _Header:
    """One usable file of a series, read but not yet decoded: its dataset (pixel data still encoded) and tags."""

    path: Path
    ds: object
    ipp: list[float]
    iop: list[float]
    ps: list[float]
    instance_number: int
    frame: str
    sop_uid: str
    monochrome1: bool
    shape: tuple[int, int]


@_guard
def _slice_header(f: Path) -> _Header:
    """The file read once (pixels kept encoded) and its header checked.

    Raises :class:`DicomError` saying what is wrong with it: unreadable, geometry tags missing,
    Rows x Columns absurd or disagreeing with native pixel data, no pixel data, no decoder installed.
    """
    ds = _read(f, stop_before_pixels=False)
    ipp = _floats(ds, "ImagePositionPatient", 3)
    iop = _floats(ds, "ImageOrientationPatient", 6)
    ps = _floats(ds, "PixelSpacing", 2)
    if not np.all(np.isfinite(ipp + iop + ps)):
        missing = [k for k, v in (("ImagePositionPatient", ipp), ("ImageOrientationPatient", iop),
                                  ("PixelSpacing", ps)) if not np.all(np.isfinite(v))]
        raise DicomError(f"{f}: no usable {', '.join(missing)}")
    if min(ps) <= 0 or np.linalg.norm(iop[:3]) < 1e-6 or np.linalg.norm(iop[3:]) < 1e-6:
        raise DicomError(f"{f}: degenerate PixelSpacing or ImageOrientationPatient")
    rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    if not (0 < rows <= MAX_SIDE and 0 < cols <= MAX_SIDE):
        raise DicomError(f"{f}: Rows x Columns {rows} x {cols} is not an image size")
    if "PixelData" not in ds:
        raise DicomError(f"{f}: no PixelData")
    want = _expected_pixel_bytes(ds)
    if want is not None:
        have = len(ds.PixelData)
        if have < want or have > want + 1:     # one pad byte keeps the length even
            raise DicomError(f"{f}: pixel data holds {have} bytes but Rows x Columns x BitsAllocated needs {want} "
                             "(a truncated file or wrong Rows/Columns)")
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is not None and ts.is_compressed and not _has_decoder(ts):
        raise DicomError(f"{f}: no decoder installed for its pixel data ({ts.name}); JPEG and JPEG 2000 data need "
                         "`pip install 'spinefeat[jpeg]'`")
    return _Header(f, ds, ipp, iop, ps, _int(ds, "InstanceNumber", -1), _str(ds, "FrameOfReferenceUID"),
                   _str(ds, "SOPInstanceUID"), _str(ds, "PhotometricInterpretation") == "MONOCHROME1", (rows, cols))


@_guard
def _decode_into(h: _Header, out: np.ndarray) -> None:
    """Decode a checked file's pixels straight into ``out`` (its slice of the stack's array).

    Raises :class:`DicomError` when its data cannot be decoded or is not the size its header says."""
    f, ds = h.path, h.ds
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        arr = _pixel_array(ds, f)
    except DicomError as exc:
        if ts is not None and ts.is_compressed:      # the decoder is there: the data is damaged
            raise DicomError(f"{f}: cannot decode its {ts.name} pixel data (damaged or not of that syntax)") from exc
        raise
    except (*_READ_ERRORS, MemoryError) as exc:
        raise DicomError(f"{f}: cannot decode pixels ({type(exc).__name__})") from None
    if arr.shape != h.shape:
        raise DicomError(f"{f}: decoded image is {arr.shape[0]} x {arr.shape[1]}, header says {h.shape[0]} x "
                         f"{h.shape[1]}")
    _to_modality(ds, arr, out)


#: The plane each series type is acquired in.
PLANE_OF_TYPE = {"Sagittal T1": "sagittal", "Sagittal T2/STIR": "sagittal", "Axial T2": "axial"}


def series_plane(series_dir: Path) -> str:
    """Plane of a series from the ImageOrientationPatient of its first readable header ("" if none)."""
    for f in sorted(Path(series_dir).glob("*.dcm")):
        try:
            plane = read_header(f)["plane"]
        except DicomError:
            continue
        if plane:
            return plane
    return ""


def check_series_planes(images_dir: Path, series: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Series descriptions checked against the plane of each series' orientation.

    A series whose orientation contradicts its description is given the type its plane says (an
    axial series described as Sagittal T1 becomes Axial T2; a sagittal one described as Axial T2
    becomes the study's missing sagittal type, or is dropped when that is not clear), with a
    warning. Returns the corrected table and the warnings (study and series ids only).
    """
    series = series.copy()
    warnings_out: list[str] = []
    for study_id, g in series.groupby("study_id", sort=False):
        planes = {int(r.series_id): series_plane(Path(images_dir) / str(int(study_id)) / str(int(r.series_id)))
                  for r in g.itertuples()}
        desc = dict(zip(g["series_id"].astype(int), g["series_description"]))
        wrong = [sid for sid, p in planes.items() if p and PLANE_OF_TYPE.get(desc[sid]) != p]
        for sid in wrong:
            old, plane = desc[sid], planes[sid]
            if plane == "axial":
                new = "Axial T2"
            elif plane == "sagittal":
                kept = {d for s, d in desc.items() if s not in wrong}
                missing = [t for t in ("Sagittal T1", "Sagittal T2/STIR") if t not in kept]
                new = missing[0] if len(missing) == 1 else ""
            else:
                new = ""
            desc[sid] = new
            msg = (f"study {int(study_id)} series {sid}: described as {old} but its orientation is {plane}; "
                   + (f"used as {new}" if new else "not used"))
            log.warning(msg)
            warnings_out.append(msg)
        idx = g.index
        series.loc[idx, "series_description"] = [desc[int(s)] for s in g["series_id"]]
    return series[series["series_description"] != ""].reset_index(drop=True), warnings_out
