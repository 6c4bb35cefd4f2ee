"""The RSNA 2024 lumbar spine folder: CSV readers, validators, naming helpers and the folder's DICOM index.

Every reader checks the columns and values it relies on and raises
:class:`~spinefeat.errors.DataError` naming the file, the row (as a 1-based
line number of the CSV, header = line 1) and the column of the first bad value.
Empty label cells are kept as "not scored" (NaN), never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .dicom import INSTANCE_COLUMNS, check_series_planes, read_header, scan_series, summarize_series
from .errors import DataError, DicomError

CONDITIONS = (
    "spinal_canal_stenosis",
    "left_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing",
    "left_subarticular_stenosis",
    "right_subarticular_stenosis",
)
LEVELS = ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")
LEVEL_NAMES = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")
SEVERITIES = ("Normal/Mild", "Moderate", "Severe")
CLASS_COLUMNS = ("normal_mild", "moderate", "severe")
SEVERITY_WEIGHTS = (1.0, 2.0, 4.0)
SERIES_TYPES = ("Sagittal T1", "Sagittal T2/STIR", "Axial T2")

#: The series type each condition is read (and labelled) on.
CONDITION_SERIES = {
    "spinal_canal_stenosis": "Sagittal T2/STIR",
    "left_neural_foraminal_narrowing": "Sagittal T1",
    "right_neural_foraminal_narrowing": "Sagittal T1",
    "left_subarticular_stenosis": "Axial T2",
    "right_subarticular_stenosis": "Axial T2",
}

#: Train.csv column order: condition-major, as in the challenge's train.csv.
TRAIN_COLUMNS = tuple(f"{c}_{lv}" for c in CONDITIONS for lv in LEVELS)
#: Submission order: conditions sorted by name, then levels (sample_submission.csv).
TARGETS = tuple(f"{c}_{lv}" for c in sorted(CONDITIONS) for lv in LEVELS)

_TITLE_CONDITIONS = {c.replace("_", " ").title(): c for c in CONDITIONS}
_LEVEL_BY_NAME = dict(zip(LEVEL_NAMES, LEVELS))


def _key(name, keys: tuple[str, ...], by_name: dict[str, str]) -> str:
    name = str(name).strip()
    if name in keys:
        return name
    if name in by_name:
        return by_name[name]
    raise KeyError(name)


def condition_key(name: str) -> str:
    """Snake-case condition key from either the title-case or snake-case spelling.

    >>> condition_key("Left Neural Foraminal Narrowing")
    'left_neural_foraminal_narrowing'
    """
    return _key(name, CONDITIONS, _TITLE_CONDITIONS)


def level_key(name: str) -> str:
    """Snake-case level key from ``L4/L5`` or ``l4_l5``."""
    return _key(name, LEVELS, _LEVEL_BY_NAME)


def row_id(study_id: int, condition: str, level: str) -> str:
    """Submission row id ``<study>_<condition>_<level>``."""
    return f"{int(study_id)}_{condition_key(condition)}_{level_key(level)}"


def parse_row_id(rid: str) -> tuple[int, str, str]:
    """Inverse of :func:`row_id`: ``(study_id, condition, level)``."""
    study, rest = str(rid).split("_", 1)
    level = rest[-5:]
    condition = rest[:-6]
    if level not in LEVELS or condition not in CONDITIONS or not study.isdigit():
        raise DataError(f"not a submission row_id: {rid!r}")
    return int(study), condition, level


def _line(i: int) -> int:
    """CSV line number of 0-based data row *i* (header is line 1)."""
    return int(i) + 2


def _read_csv(path: Path, required: tuple[str, ...], what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: {what} file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: cannot parse as CSV ({type(exc).__name__}: {str(exc)[:200]})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} file ({exc.strerror or type(exc).__name__})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing required column(s) {missing}; found {list(df.columns)}")
    if df.empty:
        raise DataError(f"{path}: {what} file has a header but no rows")
    return df


def _check_ids(df: pd.DataFrame, cols: tuple[str, ...], path: Path) -> None:
    for col in cols:
        numeric = pd.to_numeric(df[col], errors="coerce")
        bad = ~np.isfinite(numeric.to_numpy(dtype=float)) | (numeric != numeric.round()).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path}: line {_line(i)}, column '{col}': {df[col].iloc[i]!r} is not an integer id"
            )
        df[col] = numeric.astype("int64")


def read_train(path: Path) -> pd.DataFrame:
    """Read ``train.csv``: one row per study, 25 severity columns.

    Returns a frame indexed by ``study_id`` with the columns in
    :data:`TRAIN_COLUMNS`; cells hold a severity string or NaN (not scored).
    """
    df = _read_csv(path, ("study_id",) + TRAIN_COLUMNS, "train labels")
    _check_ids(df, ("study_id",), path)
    for col in TRAIN_COLUMNS:
        vals = df[col]
        bad = vals.notna() & ~vals.isin(SEVERITIES)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{path}: line {_line(i)}, column '{col}': {vals.iloc[i]!r} is not one of {list(SEVERITIES)} or empty"
            )
    dup = df["study_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}: line {_line(i)}: study_id {df['study_id'].iloc[i]} appears twice")
    return df.set_index("study_id")[list(TRAIN_COLUMNS)]


def labels_long(train: pd.DataFrame) -> pd.DataFrame:
    """Wide train labels -> one row per (study, condition, level).

    Columns: ``study_id, condition, level, target, row_id, severity`` where
    ``severity`` is 0/1/2 (Normal/Mild, Moderate, Severe) or -1 when the cell
    is empty (predicted but not scored).
    """
    codes = {s: i for i, s in enumerate(SEVERITIES)}
    pairs = [(condition, level) for condition in CONDITIONS for level in LEVELS]
    targets = [f"{c}_{lv}" for c, lv in pairs]
    ids = [int(s) for s in train.index]
    # Study by study, each study's targets in CONDITIONS x LEVELS order (in arrays: a row loop took seconds).
    return pd.DataFrame({
        "study_id": np.repeat(np.asarray(ids, dtype=np.int64), len(targets)),
        "condition": [c for c, _ in pairs] * len(ids),
        "level": [lv for _, lv in pairs] * len(ids),
        "target": targets * len(ids),
        "row_id": [f"{s}_{t}" for s in ids for t in targets],
        "severity": np.array([codes.get(v, -1) for v in train[targets].to_numpy().ravel()], dtype=np.int64),
    })


def read_coordinates(path: Path) -> pd.DataFrame:
    """Read ``train_label_coordinates.csv`` (original title case or the corrected snake case).

    Returns columns ``study_id, series_id, instance_number, condition, level,
    x, y`` with condition and level as snake-case keys, plus ``fix`` when the
    file has it.
    """
    req = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
    df = _read_csv(path, req, "label coordinates")
    _check_ids(df, ("study_id", "series_id", "instance_number"), path)
    for col, fn in (("condition", condition_key), ("level", level_key)):
        keys = []
        for i, v in enumerate(df[col].tolist()):
            try:
                keys.append(fn(v))
            except KeyError:
                raise DataError(f"{path}: line {_line(i)}, column '{col}': unknown {col} {v!r}") from None
        df[col] = keys
    for col in ("x", "y"):
        num = pd.to_numeric(df[col], errors="coerce")
        bad = ~np.isfinite(num.to_numpy(dtype=float)) | (num < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: line {_line(i)}, column '{col}': {df[col].iloc[i]!r} is not a pixel position")
        df[col] = num.astype(float)
    _check_ambiguous(df, path)
    opt = [c for c in ("fix", "confidence", "sop_instance_uid") if c in df.columns]
    if "sop_instance_uid" in opt:
        df["sop_instance_uid"] = df["sop_instance_uid"].fillna("").astype(str)
    return df[list(req) + opt]


def _check_ambiguous(df: pd.DataFrame, path: Path) -> None:
    """Refuse two rows for one (study, condition, level): which point is meant would be a guess."""
    dup = df.duplicated(["study_id", "condition", "level"])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        first = int(np.flatnonzero((df[["study_id", "condition", "level"]] == df[["study_id", "condition", "level"]]
                                    .iloc[i]).all(axis=1).to_numpy())[0])
        raise DataError(f"{path}: line {_line(i)}: study {df['study_id'].iloc[i]} {df['condition'].iloc[i]} "
                        f"{df['level'].iloc[i]} already has a point on line {_line(first)}; keep one")


def read_series_descriptions(path: Path) -> pd.DataFrame:
    """Read ``{train,test}_series_descriptions.csv`` and check the series types."""
    df = _read_csv(path, ("study_id", "series_id", "series_description"), "series descriptions")
    _check_ids(df, ("study_id", "series_id"), path)
    bad = ~df["series_description"].isin(SERIES_TYPES)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}: line {_line(i)}, column 'series_description': {df['series_description'].iloc[i]!r} "
            f"is not one of {list(SERIES_TYPES)}"
        )
    dup = df.duplicated(["study_id", "series_id"])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}: line {_line(i)}: series {df['series_id'].iloc[i]} listed twice")
    return df


def read_submission(path: Path) -> pd.DataFrame:
    """Read a submission CSV (``row_id, normal_mild, moderate, severe``)."""
    df = _read_csv(path, ("row_id",) + CLASS_COLUMNS, "submission")
    for col in CLASS_COLUMNS:
        num = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(num) | (num < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: line {_line(i)}, column '{col}': {df[col].iloc[i]!r} is not a probability")
        df[col] = num
    dup = df["row_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}: line {_line(i)}: row_id {df['row_id'].iloc[i]!r} appears twice")
    return df


@dataclass(frozen=True)
class DataFolder:
    """A folder in the Kaggle layout (``train.csv``, ``train_images/`` ...).

    Parameters
    ----------
    root : Path
        The folder. Only the files needed by a call are read.
    """

    root: Path

    def __post_init__(self) -> None:
        if not Path(self.root).is_dir():
            raise DataError(f"{self.root}: not a folder")

    def series_path(self, split: str) -> Path:
        return Path(self.root) / f"{split}_series_descriptions.csv"

    def images_dir(self, split: str) -> Path:
        return Path(self.root) / f"{split}_images"

    def splits(self) -> list[str]:
        """Splits present: those with a series description file."""
        return [s for s in ("train", "test") if self.series_path(s).is_file()]

    def series(self, split: str, *, check_planes: bool = False) -> pd.DataFrame:
        """The split's series descriptions; with ``check_planes`` corrected by each series' orientation
        (:func:`spinefeat.dicom.check_series_planes`: one header read per series, a warning per fix)."""
        ser = read_series_descriptions(self.series_path(split))
        if check_planes:
            ser, _ = check_series_planes(self.images_dir(split), ser)
        return ser

    def train(self) -> pd.DataFrame:
        return read_train(Path(self.root) / "train.csv")

    def coordinates(self) -> pd.DataFrame:
        return read_coordinates(Path(self.root) / "train_label_coordinates.csv")

    def validate(self, *, check_images: bool = True) -> dict[str, int]:
        """Check cross-references between the files; return counts.

        Raises :class:`DataError` when a coordinate names a series that is not
        described, a label row has no series, or (with ``check_images``) a
        described series has no folder of DICOM files.
        """
        counts: dict[str, int] = {}
        if not self.splits():
            raise DataError(f"{self.root}: no train_series_descriptions.csv or test_series_descriptions.csv")
        for split in self.splits():
            ser = self.series(split)
            counts[f"{split}_series"] = len(ser)
            counts[f"{split}_studies"] = ser["study_id"].nunique()
            if check_images:
                for rec in ser.itertuples():
                    d = self.images_dir(split) / str(rec.study_id) / str(rec.series_id)
                    if not d.is_dir() or not any(d.glob("*.dcm")):
                        raise DataError(
                            f"{self.series_path(split)}: study {rec.study_id} series {rec.series_id} "
                            f"has no DICOM files under {d}"
                        )
        if (Path(self.root) / "train.csv").is_file():
            train = self.train()
            counts["labelled_studies"] = len(train)
            if "train" in self.splits():
                ser = self.series("train")
                missing = sorted(set(train.index) - set(ser["study_id"]))
                if missing:
                    raise DataError(f"{self.root}/train.csv: study {missing[0]} has no series in train_series_descriptions.csv")
                coord_path = Path(self.root) / "train_label_coordinates.csv"
                if coord_path.is_file():
                    coords = self.coordinates()
                    counts["coordinates"] = len(coords)
                    known = set(zip(ser["study_id"], ser["series_id"]))
                    pairs = list(zip(coords["study_id"], coords["series_id"]))
                    for i, p in enumerate(pairs):
                        if p not in known:
                            raise DataError(
                                f"{coord_path}: line {_line(i)}: study {p[0]} series {p[1]} is not in "
                                "train_series_descriptions.csv"
                            )
                    if check_images:
                        self._check_points_in_images(coords, coord_path)
        return counts

    def _check_points_in_images(self, coords: pd.DataFrame, coord_path: Path) -> None:
        """Each coordinate must name an instance file of its series and lie inside that image."""
        sizes: dict[tuple[int, int, int], tuple[int, int]] = {}
        for i, rec in enumerate(coords.itertuples()):
            key = (rec.study_id, rec.series_id, rec.instance_number)
            if key not in sizes:
                f = self.images_dir("train") / str(key[0]) / str(key[1]) / f"{key[2]}.dcm"
                if not f.is_file():
                    raise DataError(f"{coord_path}: line {_line(i)}: study {key[0]} series {key[1]} has no instance "
                                    f"file {f.name}")
                try:
                    h = read_header(f)
                except DicomError as exc:
                    raise DataError(f"{coord_path}: line {_line(i)}: {exc}") from None
                sizes[key] = (h["rows"], h["cols"])
            rows, cols = sizes[key]
            for col, val, size in (("x", rec.x, cols), ("y", rec.y, rows)):
                if not 0 <= val <= size:
                    raise DataError(f"{coord_path}: line {_line(i)}, column '{col}': {val:g} is outside the "
                                    f"{cols} x {rows} image of study {key[0]} series {key[1]} instance {key[2]}")


def index_folder(root: Path, *, jobs: int = 1, progress=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scan every DICOM header of a Kaggle-layout folder (no pixels).

    Walks ``{train,test}_images/<study>/<series>/*.dcm``; series descriptions
    come from the split's ``*_series_descriptions.csv`` when present.

    Returns ``(instances, series)``: one row per instance (columns
    :data:`INSTANCE_COLUMNS`) and one per series (:func:`spinefeat.dicom.summarize_series`).
    ``progress`` is called with the number of series done after each one.
    """
    from joblib import Parallel, delayed

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
    inst = inst.reindex(columns=list(INSTANCE_COLUMNS))
    inst["error"] = inst["error"].fillna("")
    return inst, summarize_series(inst)
