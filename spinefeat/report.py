"""Pictures and reports written to disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import pandas as pd
import numpy as np

from .dataset import LEVELS, SERIES_TYPES, DataFolder
from .dicom import load_series
from .io import write_figure, write_png, write_text
from .viz import contact_sheet, window


def preview_sheet(folders: list[Path], *, studies: int = 1, tile_px: int = 256) -> np.ndarray:
    """Contact sheets of the first ``studies`` studies of each folder, grouped by series type.

    Rows come in the order of :data:`~spinefeat.dataset.SERIES_TYPES`, so a real
    and a synthetic folder given together show each series type side by side.
    """
    rows = {t: [] for t in SERIES_TYPES}
    for root in folders:
        folder = DataFolder(root)
        for split in folder.splits():
            ser = folder.series(split)
            for study_id in list(dict.fromkeys(ser["study_id"]))[:studies]:
                for rec in ser[ser["study_id"] == study_id].itertuples():
                    stacks = load_series(folder.images_dir(split) / str(study_id) / str(rec.series_id),
                                         description=rec.series_description)
                    title = f"{study_id} {rec.series_description}"
                    rows[rec.series_description].append(contact_sheet(stacks, title=title, tile_px=tile_px))
            break   # one split per folder
    return np.vstack([r for t in SERIES_TYPES for r in rows[t]])


def write_preview(folders: list[Path], out: Path, *, studies: int = 1) -> Path:
    """Write :func:`preview_sheet` as a PNG."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, preview_sheet(folders, studies=studies))
    return out


#: Tiles of a study's point sheet: (title, conditions drawn, condition and level whose slice is shown).
POINT_TILES = [("Sag T2 spinal", ("spinal_canal_stenosis",), ("spinal_canal_stenosis", "l3_l4")),
               ("Sag T1 left foramina", ("left_neural_foraminal_narrowing",), ("left_neural_foraminal_narrowing", "l3_l4")),
               ("Sag T1 right foramina", ("right_neural_foraminal_narrowing",), ("right_neural_foraminal_narrowing", "l3_l4"))] + [
    (f"Ax T2 {lv[:2].upper()}/{lv[3:].upper()} recesses", ("left_subarticular_stenosis", "right_subarticular_stenosis"),
     ("left_subarticular_stenosis", lv)) for lv in LEVELS]
PREDICTED_BGR, TRUE_BGR = (40, 40, 255), (60, 220, 60)


def point_sheet(images, predicted: pd.DataFrame, truth: pd.DataFrame | None = None, *, tile_px: int = 320) -> np.ndarray:
    """One study's points drawn on its slices: a sagittal T2 tile (spinal), one sagittal T1 tile per side
    (foramina) and one axial tile per level (recesses).

    Each tile shows the slice of the predicted point named in :data:`POINT_TILES`
    (the true one where none was predicted); every point of the tile's
    conditions on the same series is drawn, filled on that slice, hollow (with
    its slice offset) on another. Predicted points are red, true points green,
    labelled by level.
    """
    tiles = []
    both = [(predicted, PREDICTED_BGR)] + ([(truth, TRUE_BGR)] if truth is not None else [])
    for title, conds, (c0, lv0) in POINT_TILES:
        anchor = None
        for df, _ in both:
            hit = df[(df["condition"] == c0) & (df["level"] == lv0)]
            if len(hit):
                anchor = hit.iloc[0]
                break
        if anchor is None:
            tile = np.zeros((tile_px, tile_px, 3), np.uint8)
            cv2.putText(tile, f"{title}: no point", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (200, 200, 200), 1)
            tiles.append(tile)
            continue
        st, k = images.locate(anchor["series_id"], anchor["instance_number"])
        img = window(st.pixels[k])
        scale = tile_px / max(img.shape)
        tile = cv2.cvtColor(cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)),
                                       interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR)
        tile = cv2.copyMakeBorder(tile, 0, tile_px - tile.shape[0], 0, tile_px - tile.shape[1], cv2.BORDER_CONSTANT)
        for df, colour in both:
            sub = df[df["condition"].isin(conds) & (df["series_id"].astype(int) == int(anchor["series_id"]))]
            for r in sub.itertuples():
                st2, k2 = images.locate(r.series_id, r.instance_number)
                if st2 is not st or (len(conds) > 1 and r.level != lv0):
                    continue
                xy = (int(round(r.x * scale)), int(round(r.y * scale)))
                cv2.circle(tile, xy, 4, colour, -1 if k2 == k else 1)
                text = r.level[:2].upper() + ("" if k2 == k else f" {k2 - k:+d}")
                cv2.putText(tile, text, (xy[0] + 6, xy[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1)
        cv2.putText(tile, f"{title} #{int(anchor['instance_number'])}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1)
        tiles.append(tile)
    return np.vstack([np.hstack(tiles[:4]), np.hstack(tiles[4:])])


def write_point_sheets(root: Path, predicted: pd.DataFrame, out: Path, *, split: str = "test",
                       truth: pd.DataFrame | None = None, studies: int | None = None) -> list[Path]:
    """:func:`point_sheet` of each study (the first ``studies``) as ``out/<study_id>_points.png``."""
    from .images import StudyImages

    folder = DataFolder(root)
    series = folder.series(split)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for sid in sorted(predicted["study_id"].unique())[:studies]:
        images = StudyImages(folder, split, int(sid), series)
        t = truth[truth["study_id"] == sid] if truth is not None else None
        path = out / f"{int(sid)}_points.png"
        write_png(path, point_sheet(images, predicted[predicted["study_id"] == sid], t))
        written.append(path)
    return written


#: (feature column, truth column, error kind) of the main measurement per condition group.
MAIN_MEASUREMENTS = {
    "spinal_canal_stenosis": [("canal_ax_shape_area_mm2", "canal_area_mm2", "relative"),
                              ("canal_ax_shape_ap_diameter_mm", "canal_ap_mm", "absolute")],
    "neural_foraminal_narrowing": [("foramen_shape_area_mm2", "foramen_area_mm2", "relative"),
                                   ("foramen_shape_height_mm", "foramen_height_mm", "absolute")],
    "subarticular_stenosis": [("recess_shape_depth_mm", "recess_depth_mm", "absolute"),
                              # the truth's recess area is the lobe alone, the measurement the open space: no error
                              ("recess_shape_area_mm2", None, None)],
}


def synth_accuracy(features: pd.DataFrame, truth: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Measurements against a synthetic cohort's truth sidecar (``truth/targets.csv``).

    Returns ``(errors, separation)``: per measurement the median absolute
    error (in % for areas, mm for lengths) and the share of failed
    segmentations; per measurement the Spearman correlation with the rendered
    grade and with the written label, and its median per grade.
    """
    m = features.merge(truth, on=["study_id", "condition", "level"])
    errs, seps = [], []
    for group, items in MAIN_MEASUREMENTS.items():
        sub = m[m["condition"].str.contains(group)]
        for feat, true, kind in items:
            est = sub[feat].astype(float)
            if true is not None:
                ref = sub[true].astype(float)
                ok = est.notna() & ref.notna()
                e = (est[ok] / ref[ok] - 1).abs() * 100 if kind == "relative" else (est[ok] - ref[ok]).abs()
                errs.append({"group": group, "measurement": feat, "points": int(len(sub)), "measured": int(ok.sum()),
                             "median_abs_error": float(e.median()), "unit": "%" if kind == "relative" else "mm"})
            lab = sub["label"].where(sub["label"] >= 0)
            seps.append({"group": group, "measurement": feat,
                         "spearman_grade": float(est.corr(sub["true_grade"], method="spearman")),
                         "spearman_label": float(est.corr(lab, method="spearman")),
                         **{f"median_{g}": float(est[sub["true_grade"] == i].median())
                            for i, g in enumerate(("normal_mild", "moderate", "severe"))}})
    return pd.DataFrame(errs), pd.DataFrame(seps)


# ---------------------------------------------------------------------------
# HTML report: a cohort page and a page per study (static, opens from disk)
# ---------------------------------------------------------------------------

def _templates():
    """The report's jinja2 environment: templates shipped in ``spinefeat/templates``, every value autoescaped."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(loader=PackageLoader("spinefeat", "templates"), autoescape=select_autoescape(default=True),
                       undefined=StrictUndefined)


def _cells(df: pd.DataFrame, *, floats: str = "{:.4f}") -> dict:
    """A frame as a template table: column names and rows of ``(text, is_number)``."""
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for v in rec:
            if isinstance(v, float) and float(v).is_integer() and abs(v) > 10:
                cells.append((str(int(v)), True))
            elif isinstance(v, float):
                cells.append((floats.format(v), True))
            else:
                cells.append((str(v), False))
        rows.append(cells)
    return {"columns": [str(c) for c in df.columns], "rows": rows}


def _plots_cohort(outdir: Path, joined: pd.DataFrame, importance: pd.DataFrame) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .metric import GROUPS

    names = []
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, g in zip(axes, GROUPS):
        sub = joined[joined["group"] == g]
        cm = np.zeros((3, 3))
        if len(sub):
            pred = sub[["normal_mild", "moderate", "severe"]].to_numpy().argmax(axis=1)
            for t, p in zip(sub["severity"], pred):
                cm[t, p] += 1
        ax.imshow(cm, cmap="Blues")
        for i in range(3):
            for j in range(3):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center")
        ax.set_xticks(range(3), ["N/M", "Mod", "Sev"])
        ax.set_yticks(range(3), ["N/M", "Mod", "Sev"])
        ax.set_xlabel("predicted (argmax)")
        ax.set_ylabel("label")
        ax.set_title(g)
    fig.tight_layout()
    write_figure(outdir / "confusion.png", fig, dpi=90)
    plt.close(fig)
    names.append("confusion.png")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    bins = np.linspace(0, 1, 11)
    for ax, g in zip(axes, GROUPS):
        sub = joined[joined["group"] == g]
        for k, (col, colour) in enumerate(zip(("normal_mild", "moderate", "severe"), ("tab:green", "tab:orange", "tab:red"))):
            if not len(sub):
                continue
            p = sub[col].to_numpy()
            y = (sub["severity"].to_numpy() == k).astype(float)
            idx = np.clip(np.digitize(p, bins) - 1, 0, 9)
            xs = [p[idx == b].mean() for b in range(10) if (idx == b).sum() >= 5]
            ys = [y[idx == b].mean() for b in range(10) if (idx == b).sum() >= 5]
            ax.plot(xs, ys, "o-", color=colour, label=col)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_title(f"{g}: reliability")
        ax.set_xlabel("predicted probability")
        ax.set_ylabel("observed frequency")
        ax.legend(fontsize=7)
    fig.tight_layout()
    write_figure(outdir / "calibration.png", fig, dpi=90)
    plt.close(fig)
    names.append("calibration.png")
    groups = list(dict.fromkeys(importance["group"]))
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(14, 4))
    for ax, g in zip(np.atleast_1d(axes), groups):
        sub = importance[importance["group"] == g].head(10)[::-1]
        ax.barh(sub["feature"], sub["gain_share"], color="tab:blue")
        ax.set_title(f"{g}: gain share")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    write_figure(outdir / "importance.png", fig, dpi=90)
    plt.close(fig)
    names.append("importance.png")
    return names


def _severity_colour(p) -> str:
    """Green (Normal/Mild) through orange (Moderate) to red (Severe) by the expected grade."""
    e = float(p[1] + 2 * p[2])
    stops = np.array([[60, 180, 75], [245, 160, 40], [220, 50, 40]], float)
    lo = min(int(e), 1)
    rgb = stops[lo] + (stops[lo + 1] - stops[lo]) * (e - lo)
    return "rgb({},{},{})".format(*rgb.astype(int))


def drivers_text(drivers) -> str:
    """``name = value unit (+push)``; dimensionless values carry no unit."""
    return "; ".join(f"{n} = {v:.3g}{'' if u in ('1', '') else ' ' + u} ({'+' if c > 0 else '-'}{abs(c):.2f})"
                     for n, v, u, c in drivers)


def write_report(out: Path, *, manifest: dict, oof: pd.DataFrame, train: pd.DataFrame, importance: pd.DataFrame,
                 studies: dict[int, pd.DataFrame] | None = None, overlays: Path | None = None,
                 test_scores: dict | None = None, test_scores_true: dict | None = None,
                 title: str = "spinefeat report") -> Path:
    """Write ``out/index.html`` (cohort) and ``out/study_<id>.html`` pages; images alongside.

    ``oof`` is an out-of-fold submission scored against ``train``; ``studies``
    maps study ids to :func:`spinefeat.explain.explain_study` tables;
    ``overlays`` is the folder of per-point PNGs written by ``extract``. Pages
    are rendered from the templates in ``spinefeat/templates`` with every value
    escaped.
    """
    import shutil

    from .dataset import CONDITIONS, LEVELS, labels_long
    from .metric import TERMS, breakdown, join

    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    env = _templates()
    joined, _ = join(labels_long(train), oof)
    cv = manifest["cv"]
    terms = pd.DataFrame([{"step": s, **{t: cv[s][t] for t in (*TERMS, "score")}}
                          for s in ("constant_in_sample", "raw", "temperature", "sharpened")])
    const = pd.DataFrame([{"row_id": r, **dict(zip(("normal_mild", "moderate", "severe"),
                                                    manifest["priors"][r.split("_", 1)[1]]))} for r in oof["row_id"]])
    breakdowns = []
    for by in ("level", "condition"):
        table = breakdown(train, oof, by).merge(
            breakdown(train, const, by)[[by, "log_loss"]].rename(columns={"log_loss": "constant_log_loss"}), on=by)
        breakdowns.append((by, _cells(table)))
    tests = [t for t in (test_scores, test_scores_true) if t]
    method = [(k, v) for k, v in cv.get("method", {}).items() if isinstance(v, str)]
    write_text(out / "index.html", env.get_template("cohort.html").render(
        title=title, cv=cv, method=method, terms=_cells(terms), test=_cells(pd.DataFrame(tests)) if tests else None,
        breakdowns=breakdowns, plots=_plots_cohort(out / "img", joined, importance),
        features=_cells(importance.groupby("group").head(8)[["group", "feature", "gain_share", "unit", "definition"]]),
        studies=list(studies or {})))
    for sid, table in (studies or {}).items():
        by_row = table.set_index("row_id")
        grid = []
        for cond in CONDITIONS:
            cells = []
            for lv in LEVELS:
                rid = f"{sid}_{cond}_{lv}"
                if rid in by_row.index:
                    p = by_row.loc[rid, ["normal_mild", "moderate", "severe"]].to_numpy(float)
                    cells.append({"colour": _severity_colour(p), "title": str(p.round(2)),
                                  "grade": by_row.loc[rid, "grade"].replace("_", "/"),
                                  "probs": f"{p[0]:.2f}/{p[1]:.2f}/{p[2]:.2f}"})
                else:
                    cells.append(None)
            grid.append((cond, cells))
        rows = []
        for rec in table.itertuples():
            image = None
            if overlays is not None and (Path(overlays) / f"{rec.row_id}.png").is_file():
                image = f"{rec.row_id}.png"
                shutil.copy(Path(overlays) / image, out / "img" / image)
            rows.append({"target": f"{rec.condition} {rec.level}", "grade": rec.grade, "row_id": rec.row_id,
                         "drivers": drivers_text(rec.drivers), "image": image})
        write_text(out / f"study_{sid}.html", env.get_template("study.html").render(
            title=f"study {sid}", levels=LEVELS, grid=grid, rows=rows))
    return out / "index.html"


#: The measurements drawn side by side on real images and on phantoms: (term, column).
REAL_VS_PHANTOM = (
    ("foraminal", "foramen_shape_fat_area_mm2"), ("foraminal", "foramen_shape_area_mm2"),
    ("foraminal", "foramen_shape_height_mm"), ("foraminal", "foramen_shape_fat_level"),
    ("foraminal", "foramen_profile_peak_to_local"), ("foraminal", "foramen_profile_centre_to_peak"),
    ("foraminal", "roi_intensity_p50"), ("foraminal", "roi_texture_glcm_contrast"),
    ("subarticular", "recess_shape_depth_mm"), ("subarticular", "recess_shape_area_mm2"),
    ("spinal", "canal_ax_shape_area_mm2"), ("spinal", "canal_ax_shape_csf_fraction"),
    ("subarticular", "recess_profile_point"), ("subarticular", "recess_profile_peak_3mm"),
    ("subarticular", "recess_profile_lateral_4mm"), ("subarticular", "roi_texture_glcm_contrast"),
    ("spinal", "canal_ax_profile_peak_4mm"), ("spinal", "canal_ax_profile_sac_mean"),
    ("spinal", "canal_ax_profile_ap_6mm"), ("spinal", "canal_ax_shape_transverse_diameter_mm"),
    ("foraminal", "roi_intensity_p10"), ("foraminal", "roi_intensity_p90"),
    ("foraminal", "roi_texture_glcm_homogeneity"), ("foraminal", "roi_texture_lbp_flat"),
    ("subarticular", "roi_intensity_p50"), ("subarticular", "roi_intensity_p90"),
    ("subarticular", "roi_texture_glcm_homogeneity"), ("subarticular", "roi_texture_lbp_flat"),
)
_TERM_CONDITIONS = {"foraminal": "neural_foraminal_narrowing", "subarticular": "subarticular_stenosis",
                    "spinal": "spinal_canal_stenosis"}


def _phantom_values(phantom: pd.DataFrame, term: str, col: str) -> np.ndarray:
    if col not in phantom:
        return np.array([])
    return phantom.loc[phantom["condition"].str.contains(_TERM_CONDITIONS[term]), col].dropna().to_numpy(float)


def real_vs_phantom_gaps(real: dict[str, pd.DataFrame], phantom: pd.DataFrame) -> pd.DataFrame:
    """Per measurement of :data:`REAL_VS_PHANTOM`: rows and median on real images and on phantoms, the ratio
    of the medians (phantom over real) and the two-sample Kolmogorov-Smirnov statistic (0: the same
    distribution, 1: no overlap)."""
    from scipy.stats import ks_2samp

    rows = []
    for term, col in REAL_VS_PHANTOM:
        if term not in real or col not in real[term]:
            continue
        r, ph = real[term][col].dropna().to_numpy(float), _phantom_values(phantom, term, col)
        both = len(r) and len(ph)
        med_r = float(np.median(r)) if len(r) else float("nan")
        med_p = float(np.median(ph)) if len(ph) else float("nan")
        rows.append({"term": term, "measurement": col, "real_rows": len(r), "real_median": med_r,
                     "phantom_rows": len(ph), "phantom_median": med_p,
                     "median_ratio": med_p / med_r if both and med_r != 0 else float("nan"),
                     "ks": float(ks_2samp(r, ph).statistic) if both else float("nan")})
    return pd.DataFrame(rows, columns=["term", "measurement", "real_rows", "real_median", "phantom_rows",
                                       "phantom_median", "median_ratio", "ks"])


def write_real_vs_phantom(real: dict[str, pd.DataFrame], phantom: pd.DataFrame, out: Path) -> Path:
    """Histograms of the same measurements on real images (``real``: term -> real-check table) and on
    phantoms (an ``extract`` table), one panel each, with both medians and the KS statistic; the gaps
    (:func:`real_vs_phantom_gaps`) also as a markdown table beside the PNG (same name, ``.md``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gaps = real_vs_phantom_gaps(real, phantom).set_index(["term", "measurement"])
    panels = [(t, c) for t, c in REAL_VS_PHANTOM if t in real and c in real[t]]
    cols = 4
    fig, axes = plt.subplots((len(panels) + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.0 * ((len(panels) + cols - 1) // cols)),
                             squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (term, col) in zip(axes.ravel(), panels):
        r, ph = real[term][col].dropna().to_numpy(float), _phantom_values(phantom, term, col)
        both = np.concatenate([r, ph]) if len(ph) else r
        if not len(both):
            ax.set_title(f"{col}\n(no values)", fontsize=8)
            continue
        lo, hi = np.percentile(both, [1, 99])
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
        ax.hist(np.clip(r, lo, hi), bins=bins, density=True, alpha=0.55, color="tab:blue",
                label=f"real n={len(r)} med {np.median(r):.2f}")
        if len(ph):
            ax.hist(np.clip(ph, lo, hi), bins=bins, density=True, alpha=0.55, color="tab:orange",
                    label=f"phantom n={len(ph)} med {np.median(ph):.2f}")
        ks = gaps.loc[(term, col), "ks"]
        ax.set_title(f"{term}: {col}" + (f" (KS {ks:.2f})" if np.isfinite(ks) else ""), fontsize=8)
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=6)
    fig.suptitle("The same measurements on real RSNA images (real-check) and on phantoms (extract)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))     # room for the title above the first row's
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_figure(out, fig, dpi=110)
    plt.close(fig)
    table = gaps.reset_index()
    lines = ["| term | measurement | real rows | real median | phantom rows | phantom median | phantom / real | KS |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {g.term} | {g.measurement} | {g.real_rows} | {g.real_median:.3g} | {g.phantom_rows} | "
              f"{g.phantom_median:.3g} | {g.median_ratio:.2f} | {g.ks:.2f} |" for g in table.itertuples()]
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    return out
