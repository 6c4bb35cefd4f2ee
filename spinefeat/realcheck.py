"""real-check: the project's own measurements and graders on real challenge images with real grades.

Folders in the layout of the share's ``real_rsna/sagittal_t1_slices`` (foramina on real Sagittal T1
slices) and ``real_rsna/axial_t2_crops`` (lateral recesses and the dural sac on real Axial T2 crops).
At every labelled point the same functions as ``extract`` (:func:`spinefeat.extract.region_features`)
measure the region; the grader code of :mod:`spinefeat.models` is scored in study-grouped 5-fold CV with
the metric's weighted log loss (1/2/4). Grades are used only to train and score inside the folds: no
threshold, scale or setting here is chosen on them.

Pixel spacing is not known on these images. Sagittal: the native pixel size is estimated per series from
anatomy, the spacing of the labelled levels on that series (:data:`LEVEL_SPACING_MM` per level, the
localiser gives the same points at test time). Axial crops: a typical field of view across the native
columns (:data:`AXIAL_FOV_MM`). Native pixels are taken as square; the PNG's own resizing is undone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import __version__
from .dataset import CLASS_COLUMNS, LEVELS, SEVERITIES, SEVERITY_WEIGHTS
from .errors import DataError
from .extract import QUALITY_CODE, STANDARD_IOP, add_relative_features, region_features, spine_axis_rc
from .io import write_json, write_parquet, write_png, write_text

log = logging.getLogger(__name__)

#: Distance between neighbouring lumbar levels in the sagittal plane (vertebral body plus disc, adults), mm.
LEVEL_SPACING_MM = 35.0
#: Field of view assumed across the native columns of an axial crop's slice when nothing else is known, mm.
AXIAL_FOV_MM = 190.0
#: Field of view assumed across a sagittal series' larger native dimension when its levels cannot be used, mm.
SAGITTAL_FOV_MM = 320.0
#: The raw-patch yardstick: a ``PATCH_SIZE`` x ``PATCH_SIZE`` down-sampling of +-half pixels around the point.
PATCH_SIZE = 8
SAGITTAL_PATCH_HALF_PX = 12
AXIAL_PATCH_HALF_PX = 10
#: The spinal yardstick: the whole axial crop down-sampled to (columns, rows).
SPINAL_PATCH_SHAPE = (12, 8)
FOLDS = 5
#: Seed of the folds and of LightGBM in the CV (stated in real_check.json).
FOLD_SEED = 0
#: The axial placement check: the sac seed (from a crop's two labelled recesses) is moved this far (mm) in a
#: random direction per crop, as the point projected from the sagittal series is off, before the sac is searched.
PLACEMENT_SEED_SHIFT_MM = 4.0
#: A placed recess counts as right within this distance (mm) of the labelled one (the localiser's target).
PLACEMENT_WITHIN_MM = 6.0

TERMS = ("foraminal", "subarticular", "spinal")
REGION_OF_TERM = {"foraminal": "foramen", "subarticular": "recess", "spinal": "canal_ax"}
#: The measurement each term's Spearman target is held to (the one a reader's grade should follow).
MAIN_MEASUREMENT = {"foraminal": "foramen_shape_fat_area_mm2", "subarticular": "recess_shape_depth_mm",
                    "spinal": "canal_ax_shape_csf_area_mm2"}
SEVERITY_CODE = {s: i for i, s in enumerate(SEVERITIES)}

#: Checks on a ``real_spider/``-layout folder: name -> callable(folder, jobs, progress) -> dict (JSON-ready;
#: ``progress(done, total)`` or None).
#: Filled by the module that implements them; ``--spider`` says "not available" while this is empty.
SPIDER_CHECKS: dict[str, Callable[[Path, int, Callable | None], dict]] = {}

SAGITTAL_POINT_COLUMNS = ("study_id", "series_id", "instance_number", "image", "condition", "level", "x", "y",
                          "grade", "rows", "columns", "x_png", "y_png")
AXIAL_CROP_COLUMNS = ("study_id", "series_id", "instance_number", "image", "level_of_slice", "crop_row0",
                      "crop_col0", "rows", "columns")
AXIAL_POINT_COLUMNS = ("study_id", "series_id", "instance_number", "image", "condition", "level", "x_crop",
                       "y_crop", "grade")
SPINAL_GRADE_COLUMNS = ("study_id", "level", "grade")


class LayoutError(DataError):
    """A folder given to real-check is not in the layout it expects."""


# ---------------------------------------------------------------- reading the folders

def _read(folder: Path, name: str, columns: tuple[str, ...], layout: str) -> pd.DataFrame:
    path = Path(folder) / name
    hint = f"{folder} is not in the layout of the share's {layout}/"
    if not path.is_file():
        raise LayoutError(f"{hint}: {name} is missing (expected {name} with columns {', '.join(columns)}, "
                          f"and images/<image>.png)")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise LayoutError(f"{hint}: {path} cannot be read as CSV ({exc})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LayoutError(f"{hint}: {path} lacks the column(s) {', '.join(missing)}")
    bad = df["grade"].notna() & ~df["grade"].isin(SEVERITIES) if "grade" in df else pd.Series(False, df.index)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise LayoutError(f"{path} line {i + 2}, column grade: {df['grade'].iloc[i]!r} is not one of "
                          f"{', '.join(SEVERITIES)} or empty")
    if "level" in df and not df["level"].isin(LEVELS).all():
        i = int(np.flatnonzero(~df["level"].isin(LEVELS).to_numpy())[0])
        raise LayoutError(f"{path} line {i + 2}, column level: {df['level'].iloc[i]!r} is not one of {', '.join(LEVELS)}")
    return df


def _check_images(folder: Path, images, layout: str) -> None:
    d = Path(folder) / "images"
    if not d.is_dir():
        raise LayoutError(f"{folder} is not in the layout of the share's {layout}/: no images/ folder")
    for name in pd.unique(pd.Series(images)):
        if not (d / str(name)).is_file():
            raise LayoutError(f"{folder}: images/{name} is listed but missing")


def read_sagittal(folder: Path) -> pd.DataFrame:
    """The labelled foramina of a ``sagittal_t1_slices/`` folder, checked, with ``severity`` (-1 = not graded)."""
    df = _read(folder, "points.csv", SAGITTAL_POINT_COLUMNS, "sagittal_t1_slices")
    if not df["condition"].str.contains("neural_foraminal_narrowing").all():
        raise LayoutError(f"{folder}/points.csv: every condition must be a neural_foraminal_narrowing")
    _check_images(folder, df["image"], "sagittal_t1_slices")
    df["severity"] = df["grade"].map(SEVERITY_CODE).fillna(-1).astype(int)
    return df


def read_axial(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Crops, labelled recess points and (when present) spinal grades of an ``axial_t2_crops/`` folder."""
    crops = _read(folder, "crops.csv", AXIAL_CROP_COLUMNS, "axial_t2_crops")
    points = _read(folder, "points.csv", AXIAL_POINT_COLUMNS, "axial_t2_crops")
    if not points["condition"].str.contains("subarticular_stenosis").all():
        raise LayoutError(f"{folder}/points.csv: every condition must be a subarticular_stenosis")
    unknown = ~points["image"].isin(crops["image"])
    if unknown.any():
        raise LayoutError(f"{folder}/points.csv line {int(np.flatnonzero(unknown.to_numpy())[0]) + 2}: "
                          f"image {points['image'][unknown].iloc[0]} is not in crops.csv")
    _check_images(folder, crops["image"], "axial_t2_crops")
    points["severity"] = points["grade"].map(SEVERITY_CODE).fillna(-1).astype(int)
    spinal = None
    if (Path(folder) / "spinal_grades.csv").is_file():
        spinal = _read(folder, "spinal_grades.csv", SPINAL_GRADE_COLUMNS, "axial_t2_crops")
        spinal["severity"] = spinal["grade"].map(SEVERITY_CODE).fillna(-1).astype(int)
    return crops, points, spinal


def read_image(path: Path, *, channel: int | None = None) -> np.ndarray:
    """A PNG as float32; ``channel`` picks one of a colour image's channels (RGB order)."""
    import cv2

    im = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if im is None:
        raise LayoutError(f"{path}: not a readable image")
    if im.ndim == 3:
        im = im[:, :, ::-1] if im.shape[2] == 3 else im[:, :, 2::-1]     # BGR -> RGB
        im = im[:, :, channel if channel is not None else 0]
    return np.ascontiguousarray(im, dtype=np.float32)


# ---------------------------------------------------------------- scale

def sagittal_native_spacing_mm(points: pd.DataFrame) -> float:
    """Native pixel size (mm) of one sagittal series from the spacing of its labelled levels.

    For each side, the in-plane distance between consecutive labelled levels per level step (native
    pixels); the median over both sides maps to :data:`LEVEL_SPACING_MM`. Without two levels on a side,
    :data:`SAGITTAL_FOV_MM` over the larger native dimension.
    """
    steps = []
    for _, g in points.groupby("condition"):
        g = g.assign(li=g["level"].map(LEVELS.index)).drop_duplicates("li").sort_values("li")
        if len(g) >= 2:
            d = np.hypot(np.diff(g["x"].to_numpy(float)), np.diff(g["y"].to_numpy(float)))
            steps.extend(d / np.diff(g["li"].to_numpy()))
    steps = [s for s in steps if s > 0]
    if steps:
        return LEVEL_SPACING_MM / float(np.median(steps))
    return SAGITTAL_FOV_MM / float(max(points["rows"].iloc[0], points["columns"].iloc[0]))


def axial_native_spacing_mm(crop: pd.Series) -> float:
    """Native pixel size (mm) of an axial crop's slice: :data:`AXIAL_FOV_MM` across its native columns."""
    return AXIAL_FOV_MM / float(crop["columns"])


def png_spacing_mm(native_mm: float, native_rows: int, native_columns: int, shape) -> tuple[float, float]:
    """(row, column) pixel size of a PNG resized from the native matrix (square native pixels)."""
    return native_mm * native_rows / shape[0], native_mm * native_columns / shape[1]


# ---------------------------------------------------------------- features at the points

def raw_patch(image: np.ndarray, seed_rc, *, half_px: int, series_high: float, size: int = PATCH_SIZE) -> dict:
    """The yardstick's features: raw intensities of +-``half_px`` around the seed at ``size`` x ``size``."""
    import cv2

    win = cv2.getRectSubPix(image, (2 * half_px, 2 * half_px), (float(seed_rc[1]), float(seed_rc[0])))
    small = cv2.resize(win, (size, size), interpolation=cv2.INTER_AREA) / max(series_high, 1e-6)
    return {f"patch_{i:03d}": float(v) for i, v in enumerate(small.ravel())}


def whole_patch(image: np.ndarray, *, series_high: float, shape=SPINAL_PATCH_SHAPE) -> dict:
    import cv2

    small = cv2.resize(image, shape, interpolation=cv2.INTER_AREA) / max(series_high, 1e-6)
    return {f"patch_{i:03d}": float(v) for i, v in enumerate(small.ravel())}


def _series_high(images) -> float:
    return float(np.percentile(np.concatenate([im.ravel() for im in images]), 99.5))


def _row(study, condition, level, severity) -> dict:
    side = 1.0 if condition.startswith("left") else (-1.0 if condition.startswith("right") else 0.0)
    return {"study_id": int(study), "condition": condition, "level": level,
            "row_id": f"{int(study)}_{condition}_{level}", "severity": int(severity),
            "context_level_index": float(LEVELS.index(level)), "context_side": side}


def _guarded(row: dict, fn) -> dict:
    try:
        row.update(fn())
        row["diagnostics_error"] = ""
    except (ValueError, np.linalg.LinAlgError) as exc:
        row["diagnostics_error"] = f"{type(exc).__name__}: {exc}"
    return row


def sagittal_series_rows(folder: Path, points: pd.DataFrame) -> list[dict]:
    """Feature rows of the labelled foramina of one sagittal series (its PNGs read once)."""
    images = {name: read_image(Path(folder) / "images" / name) for name in pd.unique(points["image"])}
    high = _series_high(images.values())
    native_mm = sagittal_native_spacing_mm(points)
    # Each side's points on the PNGs (the spine's axis at each foramen, for its HOG window).
    sides = {c: g[["level", "x_png", "y_png"]].set_axis(["level", "x", "y"], axis=1)
             for c, g in points.groupby("condition")}
    out = []
    for p in points.itertuples(index=False):
        img = images[p.image]
        ps = png_spacing_mm(native_mm, p.rows, p.columns, img.shape)
        side = sides[p.condition]
        seed = (float(p.y_png), float(p.x_png))
        row = _row(p.study_id, p.condition, p.level, p.severity)
        row.update(series_id=int(p.series_id), image=p.image, seed_row=seed[0], seed_col=seed[1],
                   diagnostics_pixel_spacing_mm=float(ps[0]), diagnostics_pixel_spacing_col_mm=float(ps[1]),
                   diagnostics_native_spacing_mm=native_mm, diagnostics_series_high=high)
        out.append(_guarded(row, lambda: {
            **region_features("foramen", img, seed, pixel_spacing_mm=ps, series_high=high,
                              axis_rc=spine_axis_rc(side, p.level, ps))[0],
            **raw_patch(img, seed, half_px=SAGITTAL_PATCH_HALF_PX, series_high=high)}))
    return out


def sac_seed(points_on_crop: pd.DataFrame, *, pixel_spacing_mm) -> tuple[float, float] | None:
    """Where the dural sac is seeded on an axial crop: from its left and right recess points, or from the one
    it holds (:func:`spinefeat.segment.canal.axial_sac_seed`, the crop in the standard axial orientation).

    None when the crop holds no recess point.
    """
    from .geometry import axial_directions
    from .segment.canal import axial_sac_seed

    sides = points_on_crop.drop_duplicates("condition")
    if sides.empty:
        return None
    back, left = axial_directions(STANDARD_IOP["canal_ax"])
    side = [1 if c.startswith("left") else -1 for c in sides["condition"]]
    return axial_sac_seed(sides[["y_crop", "x_crop"]].to_numpy(float), pixel_spacing_mm=pixel_spacing_mm,
                          posterior_rc=back, left_rc=left, sides=side if len(sides) == 1 else None)


def sac_seed_without_points(image: np.ndarray, *, pixel_spacing_mm) -> tuple[float, float]:
    """Where the dural sac is seeded on an axial crop that holds no recess point: the centre of the sac the
    localiser finds from the crop's centre (:func:`spinefeat.localize.placement.find_sac`; the crops are cut
    around the canal), or the crop's centre when it finds none."""
    from .localize.placement import find_sac

    centre = ((image.shape[0] - 1) / 2, (image.shape[1] - 1) / 2)
    fit = find_sac(image, centre, pixel_spacing_mm=pixel_spacing_mm, iop=STANDARD_IOP["canal_ax"])
    return centre if fit is None else (float(fit.rc[0]), float(fit.rc[1]))


def axial_series_rows(folder: Path, crops: pd.DataFrame, points: pd.DataFrame,
                      spinal: pd.DataFrame | None) -> tuple[list[dict], list[dict]]:
    """Subarticular rows (recess at each labelled point) and spinal rows (the sac seeded from the crop's recess
    points, :func:`sac_seed`, or found near its centre when it holds none, :func:`sac_seed_without_points`;
    ``diagnostics_seed_points`` says which) of one axial series' crops. Channel 1 of a crop is its instance
    (0 and 2 are the neighbours)."""
    images = {name: read_image(Path(folder) / "images" / name, channel=1) for name in crops["image"]}
    high = _series_high(images.values())
    grade = {} if spinal is None else dict(zip(zip(spinal["study_id"], spinal["level"]), spinal["severity"]))
    sub, spi = [], []
    for crop in crops.itertuples(index=False):
        img = images[crop.image]
        mm = axial_native_spacing_mm(crop._asdict())     # crops keep the native resolution
        ps = (mm, mm)
        pts = points[points["image"] == crop.image]
        for p in pts.itertuples(index=False):
            seed = (float(p.y_crop), float(p.x_crop))
            row = _row(p.study_id, p.condition, p.level, p.severity)
            row.update(series_id=int(crop.series_id), image=crop.image, seed_row=seed[0], seed_col=seed[1],
                       diagnostics_pixel_spacing_mm=float(ps[0]), diagnostics_series_high=high)
            sub.append(_guarded(row, lambda: {
                **region_features("recess", img, seed, pixel_spacing_mm=ps, series_high=high,
                                  side=row["context_side"])[0],
                **raw_patch(img, seed, half_px=AXIAL_PATCH_HALF_PX, series_high=high)}))
        levels = pts["level"].unique()
        level = levels[0] if len(levels) == 1 else crop.level_of_slice
        if (crop.study_id, level) not in grade:
            continue
        seed = sac_seed(pts, pixel_spacing_mm=ps)
        if seed is None:
            seed = sac_seed_without_points(img, pixel_spacing_mm=ps)
        row = _row(crop.study_id, "spinal_canal_stenosis", level, grade[(crop.study_id, level)])
        row.update(series_id=int(crop.series_id), image=crop.image, seed_row=seed[0], seed_col=seed[1],
                   diagnostics_pixel_spacing_mm=float(ps[0]), diagnostics_series_high=high,
                   diagnostics_seed_points=int(pts["condition"].nunique()))
        spi.append(_guarded(row, lambda: {
            **region_features("canal_ax", img, seed, pixel_spacing_mm=ps, series_high=high)[0],
            **whole_patch(img, series_high=high)}))
    return sub, spi


def placement_seed(image_name: str, seed_rc, *, pixel_spacing_mm, shift_mm: float) -> tuple[float, float]:
    """``seed_rc`` moved ``shift_mm`` in a direction drawn from the image's name (the same on every run)."""
    import zlib

    a = np.random.default_rng(zlib.crc32(str(image_name).encode())).uniform(0, 2 * np.pi)
    dr, dc = (float(v) for v in pixel_spacing_mm)
    return float(seed_rc[0] + shift_mm * np.sin(a) / dr), float(seed_rc[1] + shift_mm * np.cos(a) / dc)


def axial_placement_rows(folder: Path, crops: pd.DataFrame, points: pd.DataFrame, *,
                         shift_mm: float = PLACEMENT_SEED_SHIFT_MM) -> list[dict]:
    """Recesses placed on one axial series' crops by the localiser's own code
    (:func:`spinefeat.localize.placement.place_recesses`) from a sac seed ``shift_mm`` off, against the labelled
    ones: one row per labelled recess of a crop holding both sides (one alone does not give the seed)."""
    from .localize.placement import place_recesses

    out = []
    iop = STANDARD_IOP["recess"]
    for crop in crops.itertuples(index=False):
        pts = points[points["image"] == crop.image]
        mm = axial_native_spacing_mm(crop._asdict())
        ps = (mm, mm)
        seed = sac_seed(pts, pixel_spacing_mm=ps)
        if seed is None:
            continue
        img = read_image(Path(folder) / "images" / crop.image, channel=1)
        seeds = {"off": placement_seed(crop.image, seed, pixel_spacing_mm=ps, shift_mm=shift_mm), "at": seed}
        placed = {k: place_recesses(img, s, pixel_spacing_mm=ps, iop=iop) for k, s in seeds.items()}
        for p in pts.itertuples(index=False):
            side = 1.0 if p.condition.startswith("left") else -1.0
            row = {"study_id": int(p.study_id), "image": crop.image, "condition": p.condition, "level": p.level,
                   "severity": int(p.severity),
                   "diagnostics_pixel_spacing_mm": mm}
            for k, (fit, rec) in placed.items():
                # The labelled recess and the sac's corner from the sac's centre (mm along the rows and the
                # columns; NaN without a sac).
                nan = (np.nan, np.nan)
                lab = ((p.y_crop - fit.rc[0]) * mm, (p.x_crop - fit.rc[1]) * mm) if fit is not None else nan
                cor = ((rec[side][0] - fit.rc[0]) * mm, (rec[side][1] - fit.rc[1]) * mm) if fit is not None else nan
                row.update({f"label_row_mm_seed_{k}": lab[0], f"label_col_mm_seed_{k}": lab[1],
                            f"corner_row_mm_seed_{k}": cor[0], f"corner_col_mm_seed_{k}": cor[1],
                            f"confidence_seed_{k}": fit.confidence if fit is not None else 0.0})
            out.append(row)
    return out


def axial_placement(folder: Path, *, jobs: int = 1, progress=None, shift_mm: float = PLACEMENT_SEED_SHIFT_MM,
                    folds: int = FOLDS) -> tuple[dict, pd.DataFrame]:
    """How far the localiser's recesses land from the labelled ones on real axial crops (see
    :func:`axial_placement_rows`), with the seed ``shift_mm`` off: median mm, share within
    :data:`PLACEMENT_WITHIN_MM` and the AUC of the sac fit's confidence for a larger error
    (:func:`spinefeat.localize.confidence_auc`). The localiser places each recess from the sac's centre and
    corner by a rule learnt from labelled recesses (:func:`spinefeat.localize.placement.fit_recess_rule`):
    here learnt on the other folds' studies (:func:`cv_folds`, per condition). Also: the corner alone (``corner_only``) and the seed at the labels'
    own sac seed (``seed_at_labels``)."""
    from functools import partial

    from .localize import confidence_auc
    from .localize.placement import apply_recess_rule, fit_recess_rule

    crops, points, _ = read_axial(folder)
    tasks = [(partial(axial_placement_rows, shift_mm=shift_mm), (folder, g, points[points["series_id"] == sid]))
             for sid, g in crops.groupby("series_id", sort=True)]
    df = pd.DataFrame([r for part in _run_parallel(tasks, jobs=jobs, progress=progress, label="recess placement")
                       for r in part])
    res = {"rows": int(len(df)), "studies": int(df["study_id"].nunique()) if len(df) else 0,
           "crops": int(df["image"].nunique()) if len(df) else 0, "seed_shift_mm": float(shift_mm),
           "within_mm": PLACEMENT_WITHIN_MM, "rows_of_one_side_crops_left_out": int(len(points) - len(df)),
           "folds": folds}
    if len(df) == 0 or df["study_id"].nunique() < folds:
        return res, df
    fold_of, _ = cv_folds(df, folds=folds)     # the folds train uses (stratified on each study's worst grade)
    fold = df["study_id"].map(fold_of).to_numpy()

    def summary(err, conf):
        e = pd.Series(err).fillna(np.inf)
        return {"median_mm": float(e.median()), "within_6mm": float((e <= PLACEMENT_WITHIN_MM).mean()),
                "no_sac": float(pd.Series(err).isna().mean()),
                "confidence_auc": confidence_auc(pd.DataFrame({"error_mm": e, "confidence": conf}),
                                                 threshold_mm=PLACEMENT_WITHIN_MM)}

    for k in ("off", "at"):
        lab = df[[f"label_row_mm_seed_{k}", f"label_col_mm_seed_{k}"]].to_numpy(float)
        cor = df[[f"corner_row_mm_seed_{k}", f"corner_col_mm_seed_{k}"]].to_numpy(float)
        placed = np.full_like(lab, np.nan)
        found = np.isfinite(lab).all(axis=1)
        for f in range(folds):
            for cond in df["condition"].unique():
                this = (df["condition"] == cond).to_numpy() & found
                train = np.flatnonzero(this & (fold != f))
                rule = fit_recess_rule({lv: [(lab[i], cor[i]) for i in train if df["level"].iat[i] == lv]
                                        for lv in df["level"].iloc[train].unique()})
                for i in np.flatnonzero(this & (fold == f)):
                    placed[i] = apply_recess_rule(rule, np.zeros(2), cor[i], df["level"].iat[i])
        df[f"error_mm_seed_{k}"] = np.hypot(*(lab - placed).T)
        df[f"error_mm_corner_seed_{k}"] = np.hypot(*(lab - cor).T)
        conf = df[f"confidence_seed_{k}"]
        if k == "off":
            res.update(summary(df["error_mm_seed_off"], conf))
            res["corner_only"] = summary(df["error_mm_corner_seed_off"], conf)
        else:
            res["seed_at_labels"] = summary(df["error_mm_seed_at"], conf)
    return res, df


def foramen_placement_rows(folder: Path, points: pd.DataFrame, *, shift_mm: float = PLACEMENT_SEED_SHIFT_MM) -> list[dict]:
    """Foramina placed on one sagittal series' slices by the localiser's own in-plane search
    (:func:`spinefeat.localize.placement.find_keyhole`, as ``place_foramen`` uses it on the slice the prior falls
    on) from a seed ``shift_mm`` off each labelled foramen (a direction per image, condition and level), and
    from the label itself: one row per labelled foramen. Where no keyhole is found the localiser keeps its
    prior, so the seed is the placed point."""
    from .localize.placement import find_keyhole

    images = {name: read_image(Path(folder) / "images" / name) for name in pd.unique(points["image"])}
    native_mm = sagittal_native_spacing_mm(points)
    out = []
    for p in points.itertuples(index=False):
        img = images[p.image]
        ps = png_spacing_mm(native_mm, p.rows, p.columns, img.shape)
        label = (float(p.y_png), float(p.x_png))
        seeds = {"off": placement_seed(f"{p.image} {p.condition} {p.level}", label, pixel_spacing_mm=ps,
                                       shift_mm=shift_mm), "at": label}
        row = {"study_id": int(p.study_id), "series_id": int(p.series_id), "image": p.image, "condition": p.condition,
               "level": p.level, "severity": int(p.severity), "diagnostics_pixel_spacing_mm": float(ps[0])}
        for k, seed in seeds.items():
            fit = find_keyhole(img, seed, pixel_spacing_mm=ps, iop=STANDARD_IOP["foramen"])
            r, c = fit.rc if fit is not None else seed
            row.update({f"error_mm_seed_{k}": float(np.hypot((r - label[0]) * ps[0], (c - label[1]) * ps[1])),
                        f"keyhole_seed_{k}": fit is not None,
                        f"confidence_seed_{k}": fit.confidence if fit is not None else 0.0})
        out.append(row)
    return out


def foramen_placement(folder: Path, *, jobs: int = 1, progress=None,
                      shift_mm: float = PLACEMENT_SEED_SHIFT_MM) -> tuple[dict, pd.DataFrame]:
    """How far the localiser's foramina land from the labelled ones on real Sagittal T1 slices (see
    :func:`foramen_placement_rows`), with the seed ``shift_mm`` off: median mm, share within
    :data:`PLACEMENT_WITHIN_MM`, share without a keyhole (the seed kept) and the AUC of the keyhole fit's
    confidence for a larger error over the others; ``seed_at_labels`` the same from the label itself (what the
    search costs a right seed).
    Nothing is learnt from the labels: the same numbers on any subset of a folder."""
    from functools import partial

    from .localize import confidence_auc

    points = read_sagittal(folder)
    tasks = [(partial(foramen_placement_rows, shift_mm=shift_mm), (folder, g))
             for _, g in points.groupby("series_id", sort=True)]
    df = pd.DataFrame([r for part in _run_parallel(tasks, jobs=jobs, progress=progress, label="foramen placement")
                       for r in part])
    res = {"rows": int(len(df)), "studies": int(df["study_id"].nunique()) if len(df) else 0,
           "series": int(df["series_id"].nunique()) if len(df) else 0, "seed_shift_mm": float(shift_mm),
           "within_mm": PLACEMENT_WITHIN_MM}
    if len(df) == 0:
        return res, df

    def summary(k):
        e, found = df[f"error_mm_seed_{k}"], df[f"keyhole_seed_{k}"].astype(bool)
        # The AUC over the foramina placed on a keyhole: the others stay at the seed, here a known distance off.
        placed = pd.DataFrame({"error_mm": e[found], "confidence": df[f"confidence_seed_{k}"][found]})
        return {"median_mm": float(e.median()), "within_6mm": float((e <= PLACEMENT_WITHIN_MM).mean()),
                "no_keyhole": float(1 - found.mean()),
                "confidence_auc": confidence_auc(placed, threshold_mm=PLACEMENT_WITHIN_MM)}

    res.update(summary("off"))
    res["seed_at_labels"] = summary("at")
    return res, df


def _run_parallel(tasks, *, jobs: int, progress, label: str) -> list:
    from joblib import Parallel, delayed

    done, results = 0, []
    if progress is not None:
        progress(label, 0, len(tasks))
    for res in Parallel(n_jobs=jobs, return_as="generator_unordered")(delayed(f)(*a) for f, a in tasks):
        results.append(res)
        done += 1
        if progress is not None:
            progress(label, done, len(tasks))
    return results


def _finish_table(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    # A sac seeded from both recess points comes before one seeded from one.
    first = ["diagnostics_seed_points"] if "diagnostics_seed_points" in df else []
    df = df.sort_values(["study_id", "condition", "level", *first, "image"],
                        ascending=[True, True, True, *[False] * len(first), True])
    # One row per target (a study with two series of a kind keeps its first).
    df = df.drop_duplicates("row_id").reset_index(drop=True)
    return add_relative_features(df)


def sagittal_table(folder: Path, *, jobs: int = 1, progress=None) -> pd.DataFrame:
    """Feature rows of every labelled foramen of a ``sagittal_t1_slices/`` folder."""
    points = read_sagittal(folder)
    tasks = [(sagittal_series_rows, (folder, g)) for _, g in points.groupby("series_id", sort=True)]
    rows = [r for part in _run_parallel(tasks, jobs=jobs, progress=progress, label="foramina (sagittal T1)")
            for r in part]
    return _finish_table(rows)


def axial_tables(folder: Path, *, jobs: int = 1, progress=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Subarticular and spinal feature rows of an ``axial_t2_crops/`` folder."""
    crops, points, spinal = read_axial(folder)
    tasks = [(axial_series_rows, (folder, g, points[points["series_id"] == sid], spinal))
             for sid, g in crops.groupby("series_id", sort=True)]
    parts = _run_parallel(tasks, jobs=jobs, progress=progress, label="recesses and sacs (axial T2)")
    return _finish_table([r for s, _ in parts for r in s]), _finish_table([r for _, s in parts for r in s])


# ---------------------------------------------------------------- scoring

def development_half(study_ids) -> np.ndarray:
    """True for the studies of the development half: CRC-32 of the decimal study id is even.

    A fixed rule on the id alone, so any folder splits the same way. Settings chosen by looking at real
    grades (the graders' parameters, which features to keep) were chosen on this half; real-check reports
    the other half beside all rows."""
    import zlib

    return np.array([zlib.crc32(str(int(s)).encode()) % 2 == 0 for s in study_ids], bool)


def feature_sets(df: pd.DataFrame, term: str) -> dict[str, list[str]]:
    """Columns of the full set, the mm measurements alone and the raw-patch yardstick (each with level and side)."""
    region = REGION_OF_TERM[term]
    context = [c for c in ("context_level_index", "context_side") if c in df and df[c].nunique() > 1]
    usable = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any()
              and c not in ("study_id", "series_id", "severity", "seed_row", "seed_col")
              and not c.startswith(("diagnostics_", "patch_", "oof_"))]
    shape = [c for c in usable if c.startswith(f"{region}_shape_") and not c.endswith(("_rel_study", "_rel_side"))]
    patch = [c for c in df.columns if c.startswith("patch_")]
    return {"full": usable, "measurements_only": shape + context, "patch_baseline": patch + context}


def cv_folds(df: pd.DataFrame, *, folds: int = FOLDS, seed: int = FOLD_SEED) -> tuple[dict, dict]:
    """The folds `train` uses (:func:`spinefeat.models.stratified_folds`: ``StratifiedGroupKFold`` on each
    study's worst grade, here of the term's graded rows) and each fold's early-stopping studies."""
    from .models import early_stopping_studies, stratified_folds

    studies = np.sort(df["study_id"].unique())
    worst = df.groupby("study_id")["severity"].max()
    fold_of = stratified_folds(studies, worst, folds, seed)
    return fold_of, early_stopping_studies(studies, fold_of, worst, folds, seed)


def cv_proba(df: pd.DataFrame, cols: list[str], term: str, *, folds: int = FOLDS, seed: int = FOLD_SEED,
             jobs: int = 1) -> np.ndarray:
    """Out-of-fold class probabilities of the project's grader of ``term`` (its settings,
    :func:`spinefeat.models.grader_params`, and its appearance stage fitted in each fold when ``cols`` hold its
    inputs, :data:`spinefeat.models.APPEARANCE`, and its trees averaged over the LightGBM seeds of its bag,
    :data:`spinefeat.models.BAG`, from ``seed``) on ``cols`` (graded rows, :func:`cv_folds`)."""
    from .models import _softmax, grader_params, grouped_cv

    fold_of, held = cv_folds(df, folds=folds, seed=seed)
    x = df[cols].to_numpy(np.float32)
    y = df["severity"].to_numpy(int)
    study = df["study_id"]
    raw, _ = grouped_cv(x, y, study.map(fold_of).to_numpy(), lambda k: study.isin(held[k]).to_numpy(),
                        cols=list(cols), params=grader_params(term, num_threads=jobs, seed=seed), folds=folds,
                        group=term, study=study.to_numpy(), jobs=jobs)
    return _softmax(raw)


def constant_proba(df: pd.DataFrame, *, folds: int = FOLDS, seed: int = FOLD_SEED) -> np.ndarray:
    """The best constant, fitted on each fold's training rows (same folds as :func:`cv_proba`)."""
    from .models import prior_proba

    fold_of, _ = cv_folds(df, folds=folds, seed=seed)
    fold = df["study_id"].map(fold_of).to_numpy()
    y = df["severity"].to_numpy(int)
    p = np.zeros((len(df), 3))
    for k in range(folds):
        p[fold == k] = prior_proba(y[fold != k])
    return p


def read_peer(paths) -> pd.DataFrame:
    """Submission-format CSVs averaged per row_id."""
    from .dataset import read_submission

    frames = [read_submission(Path(p)) for p in paths]
    return pd.concat(frames, ignore_index=True).groupby("row_id", as_index=False)[list(CLASS_COLUMNS)].mean()


def evaluate_term(df: pd.DataFrame, term: str, *, peer: pd.DataFrame | None = None, folds: int = FOLDS,
                  jobs: int = 1) -> tuple[dict, pd.DataFrame]:
    """The term's scores (see the module doc) and its graded rows with out-of-fold probabilities."""
    from .metric import weighted_log_loss

    region = REGION_OF_TERM[term]
    g = df[df["severity"] >= 0].reset_index(drop=True)
    if g["study_id"].nunique() < folds:
        raise DataError(f"{term}: {g['study_id'].nunique()} graded studies, need at least {folds} for {folds}-fold CV")
    y = g["severity"].to_numpy(int)
    sets = feature_sets(g, term)
    scores, oof = {}, None
    for name, cols in sets.items():
        p = cv_proba(g, cols, term, folds=folds, jobs=jobs)
        scores[name] = weighted_log_loss(y, p)
        if name == "full":
            oof = p
    flags = g.get(f"{region}_quality_flag", pd.Series(np.nan, index=g.index))
    quality = {q: float((flags == code).mean()) for q, code in QUALITY_CODE.items()}
    quality["error"] = float((g["diagnostics_error"] != "").mean())
    rho = {}
    for c in [c for c in sets["measurements_only"] if c.startswith(f"{region}_shape_")]:
        ok = g[c].notna()
        rho[c] = float(g.loc[ok, c].corr(g.loc[ok, "severity"], method="spearman")) if ok.sum() > 2 else None
    res = {"rows": int(len(g)), "studies": int(g["study_id"].nunique()), "cv": scores["full"],
           "constant": weighted_log_loss(y, constant_proba(g, folds=folds)), "peer": None, "peer_rows": 0,
           "quality": quality, "main_measurement": MAIN_MEASUREMENT[term],
           "main_rho": rho.get(MAIN_MEASUREMENT[term]), "spearman": rho,
           "measurements_only": scores["measurements_only"], "patch_baseline": scores["patch_baseline"],
           "features": {k: len(v) for k, v in sets.items()},
           "grades": {s: int((y == i).sum()) for i, s in enumerate(SEVERITIES)},
           "halves": {}}
    # The same scores on each half of the studies (development_half): settings chosen by looking at real
    # grades saw the development half only, so the held-out half is their honest test.
    dev = development_half(g["study_id"])
    main = MAIN_MEASUREMENT[term]
    for half, sel in (("development", dev), ("held_out", ~dev)):
        h = g[sel].reset_index(drop=True)
        if h["study_id"].nunique() < folds:
            res["halves"][half] = None
            continue
        yh = h["severity"].to_numpy(int)
        ok = h[main].notna() if main in h else pd.Series(False, index=h.index)
        res["halves"][half] = {
            "rows": int(len(h)), "studies": int(h["study_id"].nunique()),
            "cv": weighted_log_loss(yh, cv_proba(h, sets["full"], term, folds=folds, jobs=jobs)),
            "measurements_only": weighted_log_loss(yh, cv_proba(h, sets["measurements_only"], term, folds=folds, jobs=jobs)),
            "constant": weighted_log_loss(yh, constant_proba(h, folds=folds)),
            "main_rho": float(h.loc[ok, main].corr(h.loc[ok, "severity"], method="spearman")) if ok.sum() > 2 else None}
    if peer is not None:
        m = g[["row_id", "severity"]].merge(peer, on="row_id", how="inner")
        res["peer_rows"] = int(len(m))
        if len(m):
            res["peer"] = weighted_log_loss(m["severity"].to_numpy(int), m[list(CLASS_COLUMNS)].to_numpy())
    out = g.copy()
    out[[f"oof_{c}" for c in CLASS_COLUMNS]] = oof
    w = np.asarray(SEVERITY_WEIGHTS)[y]
    out["oof_loss"] = w * -np.log(np.clip(oof[np.arange(len(y)), y], 1e-15, 1))
    return res, out


def write_overlays(folder: Path, scored: pd.DataFrame, term: str, out: Path, *, worst: int = 12) -> Path:
    """One PNG of the ``worst`` rows (largest out-of-fold loss): each region's crop, mask and point, labelled
    with the grade, the predicted probability of that grade and the main measurement."""
    import cv2

    from .extract import overlay_tile

    rows = scored.sort_values("oof_loss", ascending=False).head(worst)
    region = REGION_OF_TERM[term]
    tiles = []
    for r in rows.itertuples(index=False):
        r = r._asdict()
        img = read_image(Path(folder) / "images" / r["image"], channel=None if term == "foraminal" else 1)
        high = float(r.get("diagnostics_series_high") or np.percentile(img, 99.5))
        ps = (r["diagnostics_pixel_spacing_mm"], r.get("diagnostics_pixel_spacing_col_mm") or
              r["diagnostics_pixel_spacing_mm"])
        _, seg = region_features(region, img, (r["seed_row"], r["seed_col"]), pixel_spacing_mm=ps, series_high=high)
        p_true = r[f"oof_{CLASS_COLUMNS[r['severity']]}"]
        main = r.get(MAIN_MEASUREMENT[term], np.nan)
        tile = overlay_tile(img, (r["seed_row"], r["seed_col"]), ps, seg, f"{SEVERITIES[r['severity']][:6]} p={p_true:.2f}")
        cv2.putText(tile, f"{r['study_id']} {r['level']} {r['condition'][:1]}", (4, 230), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (0, 255, 255), 1)
        cv2.putText(tile, f"main {main:.1f} {seg.quality}", (4, 216), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1)
        tiles.append(tile)
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.vstack([np.hstack(tiles[i:i + 4]) for i in range(0, len(tiles), 4)])
    path = Path(out) / f"worst_{term}.png"
    write_png(path, sheet)
    return path


def real_check(*, sagittal_t1: Path | None = None, axial_t2: Path | None = None, spider: Path | None = None,
               peer_files=(), out: Path, jobs: int = 1, overlays: int = 0, phantom: Path | None = None,
               progress=None) -> dict:
    """Measure, grade in CV and score every term whose folder is given; write ``OUT/real_check.json`` and
    ``OUT/real_check.md`` (and the feature tables with out-of-fold predictions as parquet). With
    ``overlays`` > 0, ``OUT/worst_<term>.png`` draws that many rows with the largest out-of-fold loss. With
    ``phantom`` (an ``extract`` feature table of a phantom cohort), ``OUT/real_vs_phantom.png`` puts the
    same measurements' distributions side by side."""
    from .models import bag_seeds

    t0 = time.perf_counter()
    out = Path(out)
    # Read (and so check) every folder before the long work starts.
    if sagittal_t1 is not None:
        read_sagittal(sagittal_t1)
    if axial_t2 is not None:
        read_axial(axial_t2)
    peer = read_peer(peer_files) if peer_files else None
    tables: dict[str, pd.DataFrame] = {}
    seconds = {}
    result: dict = {}
    out.mkdir(parents=True, exist_ok=True)
    if sagittal_t1 is not None:
        t = time.perf_counter()
        tables["foraminal"] = sagittal_table(sagittal_t1, jobs=jobs, progress=progress)
        seconds["foraminal_measure"] = time.perf_counter() - t
        t = time.perf_counter()
        result["foramen_placement"], placed = foramen_placement(sagittal_t1, jobs=jobs, progress=progress)
        write_parquet(out / "foramen_placement.parquet", placed)
        seconds["foramen_placement"] = time.perf_counter() - t
    if axial_t2 is not None:
        t = time.perf_counter()
        tables["subarticular"], tables["spinal"] = axial_tables(axial_t2, jobs=jobs, progress=progress)
        seconds["axial_measure"] = time.perf_counter() - t
        t = time.perf_counter()
        result["axial_placement"], placed = axial_placement(axial_t2, jobs=jobs, progress=progress)
        write_parquet(out / "axial_placement.parquet", placed)
        seconds["axial_placement"] = time.perf_counter() - t
    for i, (term, df) in enumerate(tables.items()):
        if df.empty:
            continue
        if progress is not None:
            progress("grading in CV", i, len(tables))
        t = time.perf_counter()
        result[term], scored = evaluate_term(df, term, peer=peer, jobs=jobs)
        seconds[f"{term}_cv"] = time.perf_counter() - t
        write_parquet(out / f"features_{term}.parquet", scored)
        if overlays:
            write_overlays(sagittal_t1 if term == "foraminal" else axial_t2, scored, term, out, worst=overlays)
        if progress is not None:
            progress("grading in CV", i + 1, len(tables))
    if phantom is not None:
        from .report import write_real_vs_phantom

        write_real_vs_phantom(tables, pd.read_parquet(phantom), out / "real_vs_phantom.png")
    if spider is not None:
        t = time.perf_counter()
        result["spider"] = {name: fn(Path(spider), jobs, None if progress is None else
                                     (lambda done, total, name=name: progress(f"SPIDER {name}", done, total)))
                            for name, fn in SPIDER_CHECKS.items()} or None
        seconds["spider"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    result["run"] = {"spinefeat_version": __version__, "folds": FOLDS, "fold_seed": FOLD_SEED,
                     "fold_method": "StratifiedGroupKFold on each study's worst grade of the term, grouped by "
                                    "study, as train (spinefeat.models.stratified_folds); per fold a stratified "
                                    "share of the training studies stops the boosting early",
                     "lightgbm_seeds": {term: bag_seeds(term, FOLD_SEED) for term in TERMS},
                     "seed_averaging": "each grader's raw scores averaged over its LightGBM seeds "
                                       "(spinefeat.models.BAG), each seed its own early stop per fold",
                     "seconds": seconds, "jobs": jobs,
                     "folders": {k: str(v) for k, v in (("sagittal_t1", sagittal_t1), ("axial_t2", axial_t2),
                                                        ("spider", spider)) if v is not None},
                     "peer_files": [Path(p).name for p in peer_files],
                     "scale": {"level_spacing_mm": LEVEL_SPACING_MM, "axial_fov_mm": AXIAL_FOV_MM}}
    write_json(out / "real_check.json", result)
    write_text(out / "real_check.md", markdown_table(result))
    return result


def markdown_table(result: dict) -> str:
    """The scores as a markdown table (weighted log loss; lower is better)."""
    head = ("| term | rows | best constant | raw-patch yardstick | measurements only | all features | peer "
            "| main measurement: rho | found / weak / failed |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for term in TERMS:
        r = result.get(term)
        if not r:
            continue
        peer = f"{r['peer']:.3f} ({r['peer_rows']})" if r.get("peer") is not None else "-"
        rho = f"{r['main_measurement']}: {r['main_rho']:.2f}" if r.get("main_rho") is not None else "-"
        q = r["quality"]
        lines.append(f"| {term} | {r['rows']} | {r['constant']:.3f} | {r['patch_baseline']:.3f} | "
                     f"{r['measurements_only']:.3f} | {r['cv']:.3f} | {peer} | {rho} | "
                     f"{q['found']:.2f} / {q['weak']:.2f} / {q['failed']:.2f} |")
    halves = ["", "Each half of the studies (`development_half`: CRC-32 of the study id even; settings chosen on "
              "real grades saw the development half only), in its own 5-fold CV:", "",
              "| term | half | rows | best constant | measurements only | all features | main rho |",
              "|---|---|---|---|---|---|---|"]
    for term in TERMS:
        for half, h in ((result.get(term) or {}).get("halves") or {}).items():
            if h:
                rho = f"{h['main_rho']:.2f}" if h.get("main_rho") is not None else "-"
                halves.append(f"| {term} | {half.replace('_', '-')} | {h['rows']} | {h['constant']:.3f} | "
                              f"{h['measurements_only']:.3f} | {h['cv']:.3f} | {rho} |")
    text = (head + "\n".join(lines) + "\n" if lines else "") + ("\n".join(halves) + "\n" if len(halves) > 5 else "")
    for key, what, rows, extra, at in (("axial_placement", "Recess placement on the axial crops", "recesses", None,
                                        "the labels' sac"),
                                       ("foramen_placement", "Foramen placement on the sagittal T1 slices", "foramina",
                                        "no_keyhole", "the label")):
        text += _placement_sentence(result.get(key), what, rows, extra, at)
    return text + _spider_sentence((result.get("spider") or {}).get("localisation"))


def _spider_sentence(loc: dict | None) -> str:
    """The SPIDER localisation check (``spider.localisation``) in two markdown sentences; "" without it."""
    if not loc or "sagittal_canal" not in loc:
        return ""
    c, d = loc["sagittal_canal"], loc["discs"]
    return (f"\nSPIDER ({c['patients']} patients): the CSF column covers a median {c['rows_covered_median']:.2f} of "
            f"the canal mask's rows (lowest {c['rows_covered_min']:.2f}), Dice {c['dice_median']:.2f} against the "
            f"canal mask. Lumbar discs ({d['detector']}): {d['within_5mm']:.2f} within 5 mm, median "
            f"{d['median_mm']:.1f} mm, {d['level_swaps']} of {d['patients']} patients counted off by a level"
            + (f"; the true disc points lie within 3 mm of the canal curve the detector reads for "
               f"{d['curve_within_3mm']:.2f} of them (furthest {d['curve_max_mm']:.1f} mm)"
               if d.get("curve_within_3mm") is not None else "") + ".\n")


def _placement_sentence(p: dict | None, what: str, rows: str, extra: str | None, at: str) -> str:
    """One markdown sentence of a placement check (``axial_placement``, ``foramen_placement``); "" without it."""
    if not p or "median_mm" not in p:
        return ""
    more = f", no keyhole {p[extra]:.2f}" if extra else ""
    return (f"\n{what} ({p['rows']} {rows}, seed {p['seed_shift_mm']:g} mm off): median {p['median_mm']:.1f} mm, "
            f"within {p['within_mm']:g} mm {p['within_6mm']:.2f}{more}, confidence AUC {p['confidence_auc']:.2f}; "
            f"seeded at {at}: median {p['seed_at_labels']['median_mm']:.1f} mm, within "
            f"{p['seed_at_labels']['within_6mm']:.2f}.\n")


def _spider_localisation(folder: Path, jobs: int, progress=None) -> dict:
    from .spider import check_spider

    return check_spider(folder, jobs=jobs, progress=progress)


SPIDER_CHECKS["localisation"] = _spider_localisation
