"""Study -> one feature row per (study, condition, level): caching, parallel, overlays.

Each study's series are decoded once; each finished study is written to its
own cache file (atomically) named by a hash of its inputs, points and settings,
so an interrupted run, rerun, skips finished studies and gives the same table,
and a changed input is measured afresh. A study that fails is recorded in
``diagnostics_error`` and the run goes on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .dataset import CONDITION_SERIES, CONDITIONS, LEVELS, DataFolder
from .dicom import Stack
from .errors import GeometryError, SpinefeatError
from .features import RELATIVE, STUDY_CONTEXT, shape_name
from .features.axial import recess_profile, sac_profile
from .features.cross import foramen_cross
from .features.profile import foramen_profile
from .io import inside, write_bytes, write_parquet
from .features.texture import ROI_MM, ROI_SPACING_MM, aligned_hog, aligned_windows, roi_features, spine_axes_rc
from .geometry import axial_directions
from .images import StudyImages
from .segment import FAILED, FOUND, Segmentation, measure_recess, measure_sagittal_canal, segment_axial_sac, \
    segment_foramen
from .segment.canal import SAC_SEED_OFFSETS_MM
from .segment.recess import RECESS_AROUND_MM
from .segment.common import BACK_LPS, LEFT_LPS, View, crop_mm
from .series import project_to_series

log = logging.getLogger(__name__)
QUALITY_CODE = {FAILED: 0.0, "weak": 1.0, FOUND: 2.0}
#: ImageOrientationPatient of a standard sagittal slice (columns to the patient's back, rows to the feet)
#: and of a standard axial slice (columns to the patient's left, rows to the back): for images without tags.
SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
STANDARD_IOP = {"foramen": SAGITTAL_IOP, "canal_sag": SAGITTAL_IOP, "recess": AXIAL_IOP, "canal_ax": AXIAL_IOP}
ID_COLUMNS = ["study_id", "condition", "level", "row_id", "split"]
POINT_COLUMNS = ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]


def _sop_uid(point: pd.Series) -> str:
    """The point's SOPInstanceUID when it has one (points handed on from the localiser), else ""."""
    uid = point.get("sop_instance_uid", "")
    return uid if isinstance(uid, str) else ""


def _skipped(images: StudyImages) -> str:
    """Files left out of the study's decoded series ("series S file: why"), for the diagnostics column."""
    seen = {}
    for sid, stacks in getattr(images, "_stacks", {}).items():
        for st in stacks[:1]:
            for item in st.skipped:
                seen[f"series {sid} {item}"] = None
    return "; ".join(seen)


def _shape(region: str, seg: Segmentation) -> dict[str, float]:
    out = {shape_name(region, k): float(v) for k, v in seg.measurements.items()}
    out[f"{region}_quality_flag"] = QUALITY_CODE[seg.quality]
    return out


def region_features(region: str, image: np.ndarray, seed_rc, *, pixel_spacing_mm, series_high: float,
                    iop=None, side: float = 0.0, roi: bool = True,
                    axis_rc=None) -> tuple[dict[str, float], Segmentation]:
    """One region's shape features (segmenter at the seed) and the intensity/texture crop around the seed.

    The one path from pixels to features: ``extract`` calls it on DICOM slices with their PixelSpacing and
    ImageOrientationPatient, ``real-check`` on the real slices and crops with an estimated spacing and the
    standard orientation of their plane. ``region`` is ``foramen``, ``recess``, ``canal_ax`` or ``canal_sag``;
    ``side`` (+1 left, -1 right) orients a recess's lateral direction; ``roi=False`` leaves out the
    intensity/texture crop (the axial sac of a spinal row, whose crop is the sagittal point's); ``axis_rc``
    (foramen: the spine's direction to the feet at the point, :func:`spinefeat.features.texture.spine_axes_rc`)
    turns the windows of the foramen's HOG and of its grader's appearance stage (the recess's and the axial
    sac's windows: the axial view, :data:`spinefeat.features.texture.WINDOWS_MM`).
    """
    iop = STANDARD_IOP[region] if iop is None else iop
    if region == "foramen":
        seg = segment_foramen(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, series_high=series_high, iop=iop)
    elif region in ("recess", "canal_ax"):
        back, left = axial_directions(iop)
        if region == "recess":
            out = left if side >= 0 else (-left[0], -left[1])
            seg = measure_recess(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, posterior_rc=back,
                                 lateral_rc=out, around_mm=RECESS_AROUND_MM)
        else:
            seg = segment_axial_sac(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, posterior_rc=back,
                                    seed_offsets_mm=SAC_SEED_OFFSETS_MM)
    elif region == "canal_sag":
        seg = measure_sagittal_canal(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm)
    else:
        raise ValueError(f"unknown region {region!r}")
    feats = _shape(region, seg)
    if region == "foramen":
        feats.update(foramen_profile(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, series_high=series_high,
                                     iop=iop))
    elif region == "recess":
        feats.update(recess_profile(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, series_high=series_high,
                                    posterior_rc=back, lateral_rc=out))
    elif region == "canal_ax":
        feats.update(sac_profile(image, seed_rc, seg, pixel_spacing_mm=pixel_spacing_mm, series_high=series_high,
                                 posterior_rc=back, left_rc=left))
    if roi or region == "foramen":
        crop, _ = crop_mm(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, size_mm=ROI_MM,
                          spacing_mm=ROI_SPACING_MM)
    if roi:
        feats.update(roi_features(crop, series_high=series_high))
    if region == "foramen":
        view = View.from_iop(iop)
        feats.update(aligned_hog(crop, series_high=series_high, view=view, axis_rc=axis_rc))
        feats.update(foramen_cross(image, seed_rc, pixel_spacing_mm=pixel_spacing_mm, series_high=series_high,
                                   view=view, axis_rc=axis_rc))
        feats.update(aligned_windows("foramen", image, seed_rc, pixel_spacing_mm=pixel_spacing_mm,
                                     series_high=series_high, view=view, axis_rc=axis_rc))
    elif region in ("canal_ax", "recess"):
        # The axial view; a recess's columns run towards its own side, so both sides' windows look alike.
        towards = LEFT_LPS if region == "canal_ax" or side >= 0 else tuple(-v for v in LEFT_LPS)
        feats.update(aligned_windows(region, image, seed_rc, pixel_spacing_mm=pixel_spacing_mm,
                                     series_high=series_high, view=View.from_iop(iop, rows_along=BACK_LPS,
                                                                                 cols_along=towards)))
    return feats, seg


def spine_axis_rc(side_points: pd.DataFrame, level: str, pixel_spacing_mm) -> tuple[float, float] | None:
    """The spine's direction to the feet at ``level`` (:func:`~spinefeat.features.texture.spine_axes_rc`) from
    the points (columns ``level``, ``x``, ``y``: image pixels) of one side of one series; None without them."""
    if side_points is None:
        return None
    levels = side_points["level"].to_numpy()
    if level not in set(levels):
        return None
    # The first point of each level, in the table's order (``drop_duplicates("level")``), with numpy.
    first = np.sort(np.unique(levels, return_index=True)[1])
    axes = spine_axes_rc([LEVELS.index(lv) for lv in levels[first]], side_points["y"].to_numpy(float)[first],
                         side_points["x"].to_numpy(float)[first], pixel_spacing_mm=pixel_spacing_mm)
    return axes[list(levels[first]).index(level)]


def point_features(images: StudyImages, point: pd.Series, side_points: pd.DataFrame | None = None
                   ) -> tuple[dict, list[tuple[str, Stack, int, Segmentation, tuple]]]:
    """Features of one labelled point, and what was segmented (for overlays).

    ``side_points``: the study's points of the same condition on the same series (a foramen's HOG window
    turns to the spine's axis through them). A region that could not be measured (the axial sac when the
    point cannot move to an Axial T2 series) is NaN, and ``diagnostics_note`` says why."""
    cond = point["condition"]
    st, k = images.locate(point["series_id"], point["instance_number"], _sop_uid(point))
    img = st.pixels[k]
    seed = (float(point["y"]), float(point["x"]))
    ps = st.geometry.pixel_spacing_mm
    high = images.series_high(point["series_id"])
    region = "canal_sag" if cond == "spinal_canal_stenosis" else ("foramen" if "foraminal" in cond else "recess")
    side = 1.0 if cond.startswith("left") else -1.0
    axis = spine_axis_rc(side_points, point["level"], ps) if region == "foramen" else None
    feats, seg = region_features(region, img, seed, pixel_spacing_mm=ps, series_high=high, iop=st.geometry.iop,
                                 side=side, axis_rc=axis)
    regions, notes = [(region, st, k, seg, seed)], []
    if cond == "spinal_canal_stenosis":
        xyz = st.geometry.to_patient(k, seed[0], seed[1])
        axial = images.series_of("Axial T2")
        pr = {"in_image": False}
        if axial:
            try:
                ax_sid, ax, pr = project_to_series(xyz, images, axial,
                                                   frame_of_reference=st.geometry.frame_of_reference)
            except GeometryError as exc:
                notes.append(f"canal_ax not measured: {exc}")
            else:
                if not pr["in_image"]:
                    notes.append("canal_ax not measured: the point is outside every Axial T2 stack")
        if pr["in_image"]:
            sac, seg_ax = region_features("canal_ax", ax.pixels[pr["slice"]], (pr["row"], pr["col"]),
                                          pixel_spacing_mm=ax.geometry.pixel_spacing_mm,
                                          series_high=images.series_high(ax_sid), iop=ax.geometry.iop, roi=False)
            feats.update(sac)
            feats["canal_ax_offset_mm"] = float(abs(pr["distance_mm"]))
            regions.append(("canal_ax", ax, pr["slice"], seg_ax, (pr["row"], pr["col"])))
    if notes:
        feats["diagnostics_note"] = "; ".join(notes)
    return feats, regions


def _context(condition: str, level: str) -> dict[str, float]:
    side = 1.0 if condition.startswith("left") else (-1.0 if condition.startswith("right") else 0.0)
    return {"context_level_index": float(LEVELS.index(level)), "context_side": side}


def extract_study(root: Path, split: str, study_id: int, series: pd.DataFrame, points, *,
                  overlays: Path | None = None, images: StudyImages | None = None) -> pd.DataFrame:
    """25 feature rows for one study; NaN where a point or series is missing, errors recorded per row.

    ``points`` is a point table (coordinate-file columns) or a point source: a callable taking the study's
    :class:`~spinefeat.images.StudyImages` and giving ``(points, reasons)``, such as the localiser run on the
    same decoded images (:class:`spinefeat.pipeline.LocalisedPoints`); a reason a point could not be placed
    goes into its row's error. ``images`` reuses a study's decoded series.
    """
    t0 = time.perf_counter()
    images = images or StudyImages(DataFolder(root), split, study_id, series)
    why: list[str] = []
    if callable(points):
        points, why = points(images)
    pts = points[points["study_id"] == int(study_id)]
    first: dict[tuple[str, str], int] = {}         # row of the first point of each target
    for i, key in enumerate(zip(pts["condition"], pts["level"])):
        first.setdefault(key, i)
    conds, sids = pts["condition"].to_numpy(), pts["series_id"].to_numpy()   # side points picked with numpy masks
    rows = []
    for cond in CONDITIONS:
        for level in LEVELS:
            row = {"study_id": int(study_id), "condition": cond, "level": level,
                   "row_id": f"{int(study_id)}_{cond}_{level}", "split": split, **_context(cond, level),
                   "diagnostics_note": ""}
            hit = first.get((cond, level))
            err = ""
            if hit is None:
                reasons = [w for w in why if w.startswith((f"{cond} {level}:", f"{cond}:")) or not w.startswith(CONDITIONS)]
                err = "no point" + (f" ({'; '.join(reasons)})" if reasons else "")
            else:
                if "confidence" in pts:
                    row["diagnostics_point_confidence"] = float(pts["confidence"].iloc[hit])
                try:
                    p = pts.iloc[hit]
                    feats, regions = point_features(images, p, pts[(conds == cond) & (sids == p["series_id"])])
                    row.update(feats)
                    if overlays is not None:
                        _write_overlays(Path(overlays), row["row_id"], regions)
                except (SpinefeatError, OSError, ValueError) as exc:
                    err = f"{type(exc).__name__}: {exc}"
                    log.warning("study %s %s %s: %s", study_id, cond, level, err)
            row["diagnostics_error"] = err
            rows.append(row)
    df = pd.DataFrame(rows)
    df["diagnostics_skipped"] = _skipped(images)
    df["diagnostics_seconds"] = time.perf_counter() - t0
    df["diagnostics_version"] = __version__
    return df


def _write_overlays(outdir: Path, row_id: str, regions) -> None:
    """A PNG per measured region: the fixed-mm crop, the mask outline (red) and the point (green)."""
    import cv2

    outdir.mkdir(parents=True, exist_ok=True)
    tiles = [overlay_tile(st.pixels[k], seed, st.geometry.pixel_spacing_mm, seg, f"{name} {seg.quality}")
             for name, st, k, seg, seed in regions]
    ok, png = cv2.imencode(".png", np.hstack(tiles))
    if ok:
        write_bytes(inside(outdir, f"{row_id}.png"), png.tobytes())


def overlay_tile(image: np.ndarray, seed, pixel_spacing_mm, seg: Segmentation, label: str) -> np.ndarray:
    """The segmentation's fixed-mm crop of ``image`` (BGR, 240 px) with its mask outline and the point."""
    import cv2

    from .viz import window

    crop, _ = crop_mm(image, seed, pixel_spacing_mm=pixel_spacing_mm, size_mm=seg.mask.shape[0] * seg.spacing_mm,
                      spacing_mm=seg.spacing_mm)
    im = cv2.cvtColor(window(crop), cv2.COLOR_GRAY2BGR)
    contours, _ = cv2.findContours(seg.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(im, contours, -1, (0, 0, 255), 1)
    c = im.shape[0] // 2
    cv2.drawMarker(im, (c, c), (0, 255, 0), cv2.MARKER_CROSS, 9, 1)
    im = cv2.resize(im, (240, 240), interpolation=cv2.INTER_NEAREST)
    cv2.putText(im, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1)
    return im


def add_relative_features(df: pd.DataFrame) -> pd.DataFrame:
    """Ratios inside the patient: against the study's median across levels (and sides), and left/right; and
    the foramen's study context (:data:`spinefeat.features.STUDY_CONTEXT`: study median, rank of the level
    on its side, difference to the level above and below)."""
    cond = df["condition"].astype(str)
    side = np.where(cond.str.startswith("left"), "left", "right")
    cols: dict[str, np.ndarray] = {}

    def values(sel, names) -> pd.DataFrame:
        # One table of the group's measurements (all NaN where a column is absent): each pandas step below runs
        # once over every measurement of the group instead of once per measurement.
        v = np.column_stack([df[n].to_numpy(float)[sel] if n in df.columns else np.full(sel.sum(), np.nan)
                             for n in names])
        return pd.DataFrame(v, columns=names)

    def put(name, sel, v):
        col = np.full(len(df), np.nan)
        col[sel] = v
        cols[name] = col

    for group, names in RELATIVE.items():
        sel = cond.str.contains(group).to_numpy()
        study, level = df["study_id"].to_numpy()[sel], df["level"].to_numpy()[sel]
        vals = values(sel, names)
        med = vals.groupby(study).transform("median").to_numpy()
        rel_study = vals.to_numpy() / np.where(med == 0, np.nan, med)
        if group != "spinal_canal_stenosis":
            # Each row's (study, level, side) and the other side's; per measurement the other side's first
            # measured value at this level (GroupBy.first skips NaN in each column).
            keys = pd.MultiIndex.from_arrays([study, level, side[sel]])
            other_keys = pd.MultiIndex.from_arrays([study, level, np.where(side[sel] == "left", "right", "left")])
            other = vals.set_axis(keys).groupby(level=[0, 1, 2]).first().reindex(other_keys).to_numpy(float)
            rel_side = vals.to_numpy() / np.where(other == 0, np.nan, other)
        for j, n in enumerate(names):
            if n not in df.columns:
                cols[n] = np.full(len(df), np.nan)
            put(f"{n}_rel_study", sel, rel_study[:, j])
            if group != "spinal_canal_stenosis":
                put(f"{n}_rel_side", sel, rel_side[:, j])
    level_index = df["level"].map(LEVELS.index).to_numpy()
    for group, names in STUDY_CONTEXT.items():
        sel = cond.str.contains(group).to_numpy()
        study, li, sd = df["study_id"].to_numpy()[sel], level_index[sel], side[sel]
        vals = values(sel, names)
        # Per measurement, the first measured value at each (study, side, level).
        here = vals.set_axis(pd.MultiIndex.from_arrays([study, sd, li])).groupby(level=[0, 1, 2]).first()
        found = {"study_median": vals.groupby(study).transform("median").to_numpy(),
                 "study_rank": vals.groupby([study, sd]).rank(pct=True).to_numpy()}
        for name, step in (("above", -1), ("below", 1)):
            nb = here.reindex(pd.MultiIndex.from_arrays([study, sd, li + step])).to_numpy(float)
            found[f"minus_{name}"] = vals.to_numpy() - nb
        for j, n in enumerate(names):
            for suffix, v in found.items():
                put(f"{n}_{suffix}", sel, v[:, j])
    kept = df.drop(columns=[c for c in cols if c in df.columns])
    out = pd.concat([kept, pd.DataFrame(cols, index=df.index)], axis=1)
    return out[[c for c in df.columns] + [c for c in cols if c not in df.columns]]


def points_from_labels(folder: DataFolder) -> pd.DataFrame:
    """The label coordinates restricted to the series each condition is read on."""
    coords = folder.coordinates()
    ser = folder.series("train", check_planes=True)
    desc = dict(zip(zip(ser["study_id"], ser["series_id"]), ser["series_description"]))
    ok = [desc.get((s, r)) == CONDITION_SERIES[c] for s, r, c in zip(coords["study_id"], coords["series_id"],
                                                                      coords["condition"])]
    return coords[ok][POINT_COLUMNS].reset_index(drop=True)


def fingerprint(points: pd.DataFrame) -> str:
    """Stable hash of a point table (keys the cache)."""
    h = hashlib.sha256(pd.util.hash_pandas_object(points[POINT_COLUMNS].sort_values(POINT_COLUMNS),
                                                  index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def _failed_rows(study_id: int, split: str, exc: BaseException) -> pd.DataFrame:
    return pd.DataFrame([{"study_id": int(study_id), "condition": c, "level": lv,
                          "row_id": f"{int(study_id)}_{c}_{lv}", "split": split, **_context(c, lv),
                          "diagnostics_error": f"{type(exc).__name__}: {exc}"}
                         for c in CONDITIONS for lv in LEVELS])


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Hash of the package's own source files: a segmenter or feature changed without a version bump
    must not be served from a cache written by the older code."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def run_cache_key(*, split: str, points=None) -> dict:
    """What every cache entry of one run depends on besides its study: code version and source hash,
    split, and the point source's fingerprint (the localiser's hash) when the points are found per study."""
    return {"version": __version__, "code": code_fingerprint(), "split": split,
            "point_source": points.fingerprint if callable(points) else None}


def study_inputs(root: Path, split: str, study_id: int, series: pd.DataFrame) -> list[tuple]:
    """Identity of a study's input files: (series, file name, size, mtime) of every DICOM file it reads."""
    base = DataFolder(root).images_dir(split) / str(int(study_id))
    out = []
    for sid in sorted(series.loc[series["study_id"] == int(study_id), "series_id"].astype(int)):
        for f in sorted((base / str(sid)).glob("*.dcm")):
            st = f.stat()
            out.append((sid, f.name, st.st_size, st.st_mtime_ns))
    return out


def cache_entry(cache: Path, root: Path, split: str, study_id: int, series: pd.DataFrame,
                points: pd.DataFrame | None, run_key: dict) -> Path:
    """The cache file of one study, named by a hash of everything its rows depend on.

    The key holds the run's key (:func:`run_cache_key`: code version, split, localiser hash), the
    study's points and the identity (size, mtime) of its input files, so a changed point, file or
    setting is measured afresh, and two runs with different points sharing a cache never read each
    other's rows (concurrent runs with the same key write the same rows, each atomically).
    """
    pts = None
    if isinstance(points, pd.DataFrame):
        p = points[points["study_id"] == int(study_id)]
        pts = fingerprint(p) if len(p) else "none"
    key = json.dumps({**run_key, "points": pts, "inputs": study_inputs(root, split, study_id, series)},
                     sort_keys=True, default=str)
    return Path(cache) / f"{int(study_id)}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.parquet"


def extract(root: Path, points, *, split: str = "train", cache: Path, jobs: int = 1,
            overlays: Path | None = None, studies: list[int] | None = None, progress=None,
            scheduler=None) -> pd.DataFrame:
    """Feature table of every study of ``split`` (or ``studies``), using and filling ``cache``.

    ``points``: a point table, or a point source (see :func:`extract_study`) with a ``fingerprint`` that keys
    the cache. Studies run in ``jobs`` local processes or, with ``scheduler`` (a Dask scheduler address or
    client), on a Dask cluster; either way a failing study is recorded in ``diagnostics_error`` and the run goes
    on, and this process writes each finished study to the cache."""
    from .parallel import map_studies

    folder = DataFolder(root)
    series = folder.series(split, check_planes=True)
    ids = sorted(series["study_id"].unique()) if studies is None else [int(s) for s in studies]
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    run_key = run_cache_key(split=split, points=points)
    entry = {s: cache_entry(cache, root, split, s, series, points, run_key) for s in ids}
    todo = [s for s in ids if not entry[s].is_file()]
    done = len(ids) - len(todo)
    if progress is not None:
        progress(done, len(ids))

    def run(study_id):
        return extract_study(root, split, study_id, series, points, overlays=overlays)

    for study_id, df in map_studies(run, todo, jobs=jobs, scheduler=scheduler,
                                    on_error=lambda s, exc: _failed_rows(s, split, exc)):
        write_parquet(entry[study_id], df)
        done += 1
        if progress is not None:
            progress(done, len(ids))
    frames = [pd.read_parquet(entry[s]) for s in ids]
    df = pd.concat(frames, ignore_index=True).sort_values(["study_id", "condition", "level"]).reset_index(drop=True)
    return add_relative_features(df)
