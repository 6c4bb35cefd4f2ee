"""Read DICOM headers and series into geometric stacks.

Only ids, geometry and pixel-format tags are read into tables; no
patient-identifying values are stored, logged or put into error messages
(studies and series are named by the folder ids of the RSNA layout).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

from .errors import DicomError
from .geometry import StackGeometry, orientation_axes, split_stacks

log = logging.getLogger(__name__)

#: Columns of the per-instance index.
INSTANCE_COLUMNS = (
    "split", "study_id", "series_id", "instance_number", "file", "series_description",
    "frame_of_reference", "ipp_x", "ipp_y", "ipp_z", "iop_0", "iop_1", "iop_2", "iop_3", "iop_4", "iop_5",
    "row_spacing_mm", "col_spacing_mm", "slice_thickness_mm", "spacing_between_slices_mm",
    "rows", "cols", "bits_stored", "photometric", "transfer_syntax", "error",
)

_COMPRESSED_HINT = (
    "install the decoders with `pip install 'spinefeat[jpeg]'` (pylibjpeg with its OpenJPEG and libjpeg plugins)"
)


def _floats(ds, keyword: str, n: int) -> list[float]:
    val = ds.get(keyword)
    if val is None:
        return [float("nan")] * n
    vals = [float(v) for v in (val if n > 1 else [val])]
    if len(vals) != n:
        return [float("nan")] * n
    return vals


def read_header(path: Path) -> dict:
    """Geometry and format tags of one DICOM file, without its pixels.

    Raises :class:`DicomError` for a file that is not DICOM.
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise DicomError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from exc
    ipp = _floats(ds, "ImagePositionPatient", 3)
    iop = _floats(ds, "ImageOrientationPatient", 6)
    ps = _floats(ds, "PixelSpacing", 2)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return {
        "instance_number": int(ds.get("InstanceNumber", -1) or -1),
        "dicom_series_description": str(ds.get("SeriesDescription", "")),
        "frame_of_reference": str(ds.get("FrameOfReferenceUID", "")),
        "ipp_x": ipp[0], "ipp_y": ipp[1], "ipp_z": ipp[2],
        **{f"iop_{i}": v for i, v in enumerate(iop)},
        "row_spacing_mm": ps[0], "col_spacing_mm": ps[1],
        "slice_thickness_mm": _floats(ds, "SliceThickness", 1)[0],
        "spacing_between_slices_mm": _floats(ds, "SpacingBetweenSlices", 1)[0],
        "rows": int(ds.get("Rows", 0) or 0),
        "cols": int(ds.get("Columns", 0) or 0),
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
        "photometric": str(ds.get("PhotometricInterpretation", "")),
        "transfer_syntax": str(ts.name) if ts is not None else "",
    }


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

    def slice_of_instance(self, instance_number: int) -> int | None:
        hit = np.flatnonzero(self.instance_numbers == int(instance_number))
        return int(hit[0]) if len(hit) else None


def decode_pixels(ds, path: Path, out: np.ndarray | None = None) -> np.ndarray:
    """Pixel data of one frame as float32 modality values (RescaleSlope / RescaleIntercept applied).

    With ``out`` (a float32 array of the frame's shape, e.g. one slice of a stack) the values are written
    there and no other array is made. MONOCHROME1 is not inverted here: an inversion needs the range of the
    whole series (:func:`load_series` does it). A compressed transfer syntax without a decoder raises
    :class:`DicomError` naming the syntax and the extra to install.
    """
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError/ValueError by handler
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = ts.name if ts is not None else "unknown transfer syntax"
        hint = _COMPRESSED_HINT if ts is not None and ts.is_compressed else "the file may be truncated"
        raise DicomError(f"{path}: cannot decode pixels ({name}): {hint}") from exc
    if arr.ndim != 2:
        raise DicomError(f"{path}: expected one 2-D frame, got pixel array of shape {arr.shape}")
    if out is None:
        out = np.empty(arr.shape, np.float32)
    elif out.shape != arr.shape:
        raise DicomError(f"{path}: pixel array of shape {arr.shape}, but Rows/Columns say {out.shape}")
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

    Each file is read and decoded once, straight into its slice of its stack's ``(k, rows, cols)`` float32
    array (no per-slice copies). Instances are split by orientation, image size and gaps
    (:func:`spinefeat.geometry.split_stacks`). MONOCHROME1 slices are inverted with the series' range.
    Unreadable files are skipped with a warning; a series with no usable file raises :class:`DicomError`.
    """
    series_dir = Path(series_dir)
    study_id = int(series_dir.parent.name) if study_id is None else study_id
    series_id = int(series_dir.name) if series_id is None else series_id
    items = []
    for f in series_files(series_dir):
        try:
            ds = pydicom.dcmread(f)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            log.warning("study %s series %s: skipping unreadable file %s", study_id, series_id, f.name)
            continue
        ipp = _floats(ds, "ImagePositionPatient", 3)
        iop = _floats(ds, "ImageOrientationPatient", 6)
        ps = _floats(ds, "PixelSpacing", 2)
        if not np.all(np.isfinite(ipp + iop + ps)):
            log.warning("study %s series %s: %s lacks geometry tags, skipped", study_id, series_id, f.name)
            continue
        shape = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
        items.append((ds, f, ipp, iop, ps, int(ds.get("InstanceNumber", -1) or -1),
                      str(ds.get("FrameOfReferenceUID", "")), shape))
    if not items:
        raise DicomError(f"study {study_id} series {series_id}: no decodable instance with geometry")
    # Images of different size never share a stack.
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, it in enumerate(items):
        by_shape.setdefault(it[7], []).append(i)
    stacks: list[Stack] = []
    inverted: list[np.ndarray] = []
    for shape, members in by_shape.items():
        ipps = np.array([items[i][2] for i in members])
        iops = np.array([items[i][3] for i in members])
        for idx in split_stacks(ipps, iops):
            sel = [members[i] for i in idx]
            pixels = np.empty((len(sel), *shape), np.float32)
            for j, i in enumerate(sel):
                decode_pixels(items[i][0], items[i][1], out=pixels[j])
            geo = StackGeometry(ipps[idx], iops[idx[0]], items[sel[0]][4], shape, items[sel[0]][6])
            stacks.append(Stack(study_id, series_id, description, pixels, geo,
                                np.array([items[i][5] for i in sel])))
            inverted.append(np.array([str(items[i][0].get("PhotometricInterpretation", "")) == "MONOCHROME1"
                                      for i in sel]))
    _invert_monochrome1(stacks, inverted)
    return stacks


def index_folder(root: Path, *, jobs: int = 1, progress=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scan every DICOM header of a Kaggle-layout folder (no pixels).

    Walks ``{train,test}_images/<study>/<series>/*.dcm``; series descriptions
    come from the split's ``*_series_descriptions.csv`` when present.

    Returns ``(instances, series)``: one row per instance (columns
    :data:`INSTANCE_COLUMNS`) and one per series (:func:`summarize_series`).
    ``progress`` is called with the number of series done after each one.
    """
    from joblib import Parallel, delayed

    from .dataset import read_series_descriptions

    root = Path(root)
    jobs_list = []
    for split in ("train", "test"):
        img = root / f"{split}_images"
        if not img.is_dir():
            continue
        desc_path = root / f"{split}_series_descriptions.csv"
        desc = {}
        if desc_path.is_file():
            d = read_series_descriptions(desc_path)
            desc = dict(zip(zip(d["study_id"], d["series_id"]), d["series_description"]))
        for study_dir in sorted(p for p in img.iterdir() if p.is_dir() and p.name.isdigit()):
            for series_dir in sorted(p for p in study_dir.iterdir() if p.is_dir() and p.name.isdigit()):
                key = (int(study_dir.name), int(series_dir.name))
                jobs_list.append((series_dir, split, key, desc.get(key, "")))
    if not jobs_list:
        raise DicomError(f"{root}: no train_images/ or test_images/ series folders found")
    rows: list[dict] = []
    done = 0
    runner = Parallel(n_jobs=jobs, return_as="generator")
    for res in runner(delayed(scan_series)(d, split=s, study_id=k[0], series_id=k[1], description=desc)
                      for d, s, k, desc in jobs_list):
        rows.extend(res)
        done += 1
        if progress is not None:
            progress(done)
    inst = pd.DataFrame(rows)
    cols = [c for c in INSTANCE_COLUMNS if c in inst.columns] + ["dicom_series_description"]
    inst = inst.reindex(columns=cols)
    inst["error"] = inst["error"].fillna("")
    return inst, summarize_series(inst)
