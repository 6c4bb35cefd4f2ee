"""Sagittal T2, step 2: the disc detector (a LightGBM classifier on features sampled along the canal curve), the
:class:`Localizer` (detector + learned spacing and offsets, saved as LightGBM text + JSON) and its training."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..fastnp import percentile
from ..dataset import CONDITIONS, LEVELS, DataFolder
from ..dicom import Stack
from ..errors import SpinefeatError
from ..images import StudyImages
from .canal import STEP_MM, Canal, fit_canal, mid_sagittal_seeded, normalise_intensity
from .chain import DISC_RADIUS_MM, chain, disc_centre_mm
from .placement import KEYHOLE_ROOT_SHARE, RECESSES, fit_recess_rule, label_share, recess_corners_xyz

log = logging.getLogger(__name__)


#: Where the vertebral column is read, anterior to the canal along the curve's normal (mm).
ANTERIOR_MM = (8.0, 13.0, 18.0, 23.0)
#: Along the curve (mm): near (is this a disc, thin between two bodies) and far (is there a disc a level above
#: and below: the sacrum has none).
NEAR_ALONG_MM = tuple(np.arange(-32.0, 32.1, 2.0))
FAR_ALONG_MM = tuple(d for d in np.arange(-64.0, 64.1, 4.0) if abs(d) > 32)
#: Edge strength along the column (the endplates) is read here along the curve (mm).
EDGE_ALONG_MM = tuple(np.arange(-10.0, 10.1, 2.0))
#: The canal's direction is read here along the curve (mm).
ANGLE_ALONG_MM = (-60.0, -40.0, -20.0, 0.0, 20.0, 40.0, 60.0)
#: Detector classes: background, then the five lumbar discs (L1/L2 = 1 .. L5/S1 = 5).
BACKGROUND, N_LEVELS = 0, 5
DET_PARAMS = {"objective": "multiclass", "num_class": 1 + N_LEVELS, "learning_rate": 0.1, "num_leaves": 31,
              "min_data_in_leaf": 40, "feature_fraction": 0.8, "verbose": -1, "seed": 0, "deterministic": True,
              "force_col_wise": True}
#: Boosting rounds of the detector. 400 (was 200): on SPIDER's leave-patients-out folds (``spider.check_spider``)
#: discs within 5 mm 0.775 -> 0.8375, median 2.77 -> 2.72 mm, level swaps 2 -> 1 at LightGBM seed 0 (41 counted
#: right); at seeds 1 / 2 within and swaps unchanged (0.7125, 3 swaps / 0.775, 2 swaps); 60 rounds (softer
#: probabilities) was worse (0.675, 4 swaps). The check's four detector fits and predictions: 161 -> 235 CPU s.
DET_ROUNDS = 400
#: The image's own family (read along the image rows, on intensities scaled 0..1 per image): +-12 mm near, and
#: 16-64 mm along the curve at two depths.
IMAGE_ALONG_MM = tuple(np.arange(-12.0, 12.1, 2.0))
IMAGE_FAR_ANTERIOR_MM = (13.0, 18.0)
IMAGE_FAR_ALONG_MM = tuple(d for d in np.arange(-64.0, 64.1, 8.0) if abs(d) >= 16)
#: Feature layout: image intensities (flipped as 1 - x), their differences from the mean along the rows
#: (flipped as -x), width and height in the image, then the column's family whose first N_SIGNED are signed.
N_IMAGE = len(ANTERIOR_MM) * (len(IMAGE_ALONG_MM) + 1) + len(IMAGE_FAR_ANTERIOR_MM) * len(IMAGE_FAR_ALONG_MM)
N_IMAGE_REL = len(ANTERIOR_MM) * len(IMAGE_ALONG_MM)
COLUMN_START = N_IMAGE + N_IMAGE_REL + 2
N_SIGNED = len(ANTERIOR_MM) * len(NEAR_ALONG_MM) + len(FAR_ALONG_MM)


def straightened(x: np.ndarray, pixel_spacing_mm, canal: Canal, depth_mm: float = 30.0) -> np.ndarray:
    """``x`` read along the canal curve's normals, towards anterior: (samples, 0..``depth_mm`` in 1 mm steps).
    The vertebral column straightened: a disc is a band across it whatever the lordosis."""
    dr, dc = (float(v) for v in pixel_spacing_mm)
    tr, tc = np.gradient(canal.rows) * dr, np.gradient(canal.cols) * dc
    norm = np.maximum(np.hypot(tr, tc), 1e-9)
    nr, nc = -tc / norm, tr / norm
    side = np.where(nc * canal.anterior < 0, -1.0, 1.0)          # the normal that points anterior
    a = np.arange(0.0, depth_mm + 0.5, 1.0)
    rr = canal.rows[:, None] + (side * nr)[:, None] * a[None] / dr
    cc = canal.cols[:, None] + (side * nc)[:, None] * a[None] / dc
    return ndi.map_coordinates(x, [rr, cc], order=1, mode="nearest")


def _along(v: np.ndarray, d_mm: float) -> np.ndarray:
    """``v`` (one value per canal sample) read ``d_mm`` further down the curve; NaN beyond its ends."""
    j = np.arange(len(v)) + int(round(d_mm / STEP_MM))
    ok = (j >= 0) & (j < len(v))
    out = np.full(len(v), np.nan, np.float32)
    out[ok] = v[j[ok]]
    return out


def image_features(x: np.ndarray, pixel_spacing_mm, canal: Canal) -> np.ndarray:
    """The image's own family per canal sample (``x``: intensities scaled 0..1 per image): the tissue anterior
    to the canal over +-12 mm along the image rows and at 16-64 mm along the curve (NaN beyond its ends),
    the near ones less their mean along the rows, the CSF width and the height in the image (mm from its
    middle row)."""
    dr, dc = (float(v) for v in pixel_spacing_mm)
    h, w = x.shape
    n = len(canal.rows)
    near = []
    for a in ANTERIOR_MM:
        c = np.clip(np.round(canal.cols + canal.anterior * a / dc), 0, w - 1).astype(int)
        for d in IMAGE_ALONG_MM:
            near.append(x[np.clip(np.round(canal.rows + d / dr), 0, h - 1).astype(int), c])
    near = np.array(near).T                                           # (n, depths * along)
    centre = near[:, [i * len(IMAGE_ALONG_MM) + len(IMAGE_ALONG_MM) // 2 for i in range(len(ANTERIOR_MM))]]
    r_all = np.clip(np.round(canal.rows), 0, h - 1).astype(int)
    far = []
    for a in IMAGE_FAR_ANTERIOR_MM:
        v = x[r_all, np.clip(np.round(canal.cols + canal.anterior * a / dc), 0, w - 1).astype(int)]
        far += [_along(v, d) for d in IMAGE_FAR_ALONG_MM]
    rel = near - near.reshape(n, len(ANTERIOR_MM), -1).mean(axis=2).repeat(len(IMAGE_ALONG_MM), 1)
    return np.concatenate([near, centre, np.array(far).T, rel,
                           np.stack([canal.width_mm, (canal.rows - (h - 1) / 2) * dr], 1)], axis=1)


def sample_features(img: np.ndarray, pixel_spacing_mm, canal: Canal) -> np.ndarray:
    """Per canal sample, two families. The image's own (:func:`image_features`: intensities scaled per image,
    which serve the phantoms and SPIDER), and the vertebral column's own: the column anterior to the canal
    (:func:`straightened`) over +-32 mm along the curve and, further, +-36..64 mm (NaN beyond its ends),
    its edge strength (the endplates), the distance to the end of the CSF, the CSF width and the canal's
    direction.

    The column's intensities are each image's straightened column less its median, over its interquartile
    range, so no scanner, sequence or brightest tissue sets the scale (what makes the detector fire on real
    STIR). Discs are bright on a healthy T2, dark on a degenerated one or on T1: :func:`flip_contrast`
    trains the detector for both.
    """
    dr, dc = (float(v) for v in pixel_spacing_mm)
    x = ndi.uniform_filter(normalise_intensity(img), size=max(3, int(round(2.0 / dr))))
    col = straightened(x, pixel_spacing_mm, canal)
    band = col[:, 6:27]
    lo, med, hi = percentile(band, [25, 50, 75])
    z = ndi.uniform_filter1d((col - med) / max(hi - lo, 1e-3), 3, axis=0)
    depth = [z[:, int(a)] for a in ANTERIOR_MM]
    feats = [_along(v, d) for v in depth for d in NEAR_ALONG_MM]
    far = np.mean(depth[1:3], axis=0)
    feats += [_along(far, d) for d in FAR_ALONG_MM]
    edge = np.abs(np.gradient(np.mean(depth, axis=0)))
    feats += [_along(edge, d) for d in EDGE_ALONG_MM]
    angle = np.degrees(np.arctan2(canal.anterior * np.gradient(canal.cols) * dc, np.gradient(canal.rows) * dr))
    feats += [canal.end_mm - canal.s_mm, canal.width_mm] + [_along(angle, d) for d in ANGLE_ALONG_MM]
    return np.concatenate([image_features(x, pixel_spacing_mm, canal), np.stack(feats, axis=1)],
                          axis=1).astype(np.float32)


def flip_contrast(x: np.ndarray) -> np.ndarray:
    """Features of the same samples with the contrast inverted (bright discs dark, dark bodies bright)."""
    out = x.copy()
    out[:, :N_IMAGE] = 1.0 - out[:, :N_IMAGE]
    out[:, N_IMAGE:N_IMAGE + N_IMAGE_REL] *= -1.0
    out[:, COLUMN_START:COLUMN_START + N_SIGNED] *= -1.0
    return out


# ---------------------------------------------------------------------------
# The model: training and use
# ---------------------------------------------------------------------------

@dataclass
class Localizer:
    detector: lgb.Booster
    gaps: np.ndarray                         # (4, 2) mm
    offsets: dict = field(default_factory=dict)   # condition -> level -> [dx, dy, dz] from the spinal point
    sac_offsets: dict = field(default_factory=dict)  # recess condition -> placement.fit_recess_rule's rule
    trained_on: dict = field(default_factory=dict)   # what the detector learnt from (studies, SPIDER patients)
    keyhole_share: float = KEYHOLE_ROOT_SHARE   # where foramen labels sit down their keyhole (placement.label_share)

    def save(self, out: Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        from ..io import write_json, write_text

        write_text(out / "localizer.txt", self.detector.model_to_string())
        write_json(out / "localizer.json", {"gaps_mm": self.gaps.tolist(), "offsets_mm": self.offsets,
                                            "recess_rules": self.sac_offsets, "keyhole_share": self.keyhole_share,
                                            "step_mm": STEP_MM,
                                            "trained_on": self.trained_on})

    @property
    def fingerprint(self) -> str:
        """Hash of the detector and the learned geometry (cache keys of features at localised points)."""
        import hashlib

        meta = json.dumps({"gaps": self.gaps.tolist(), "offsets": self.offsets, "sac": self.sac_offsets,
                           "keyhole": self.keyhole_share}, sort_keys=True)
        return hashlib.sha256(self.detector.model_to_string().encode() + meta.encode()).hexdigest()[:16]

    @classmethod
    def load(cls, models: Path) -> "Localizer":
        from ..models import load_localizer_files

        detector, meta = load_localizer_files(models)   # hashes checked against manifest.json
        return cls(detector, np.array(meta["gaps_mm"]), meta["offsets_mm"], meta.get("recess_rules", {}),
                   meta.get("trained_on", {}), meta.get("keyhole_share", KEYHOLE_ROOT_SHARE))

    def find_discs(self, stack: Stack, *, mid: tuple[int, float] | None = None
                   ) -> tuple[int, float, np.ndarray, np.ndarray, list[str]]:
        """Mid-sagittal slice, the midline's offset from it (mm), the five disc (row, col) on it, a confidence
        per level, and why the count from the sacrum is doubtful (empty when it is not; see :func:`count_discs`).
        ``mid``: the slice and offset when :func:`mid_sagittal` already picked them."""
        k, shift_mm, seed = (*mid, None) if mid is not None else mid_sagittal_seeded(stack)
        img = stack.pixels[k]
        canal = fit_canal(img, stack.geometry.pixel_spacing_mm, stack.geometry.iop, seed=seed)
        if canal is None:
            raise SpinefeatError(f"study {stack.study_id} series {stack.series_id}: no CSF column found")
        p = self.detector.predict(sample_features(img, stack.geometry.pixel_spacing_mm, canal))
        s_mm, conf, flags = count_discs(p, canal.s_mm, self.gaps)
        rc = np.stack([np.interp(s_mm, canal.s_mm, canal.rows), np.interp(s_mm, canal.s_mm, canal.cols)], axis=1)
        return k, shift_mm, rc, conf, [f"levels: {f}" for f in flags]


#: The canal must go on this far (mm) below L5/S1 inside the image for the sacrum to be in the field of view.
SACRUM_VIEW_MM = 20.0
#: A disc is seen above this detector probability.
SEEN_P = 0.5
#: The confidence of every level of a study whose count from the sacrum is doubtful.
DOUBTFUL_CONFIDENCE = 0.25


def count_discs(p: np.ndarray, s_mm: np.ndarray, gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The five lumbar discs: arc positions (mm), a confidence each, and why the count is doubtful.

    ``p`` (samples, 6): the detector's probabilities at each canal sample (arc positions ``s_mm``) of
    background and of each level, L1/L2 to L5/S1; ``gaps``: the learnt (mean, sd) of the four disc spacings.
    The chain (:func:`~spinefeat.localize.chain.chain`) picks one sample per level, ordered and spaced as
    learnt; each disc sits at the centre of the plateau of p(any disc) around its sample
    (:func:`disc_centre_mm`: a disc's probability is often split between two levels' classes); a level's
    confidence is its probability there. Flagged (every confidence capped at :data:`DOUBTFUL_CONFIDENCE`,
    ``predict`` then lists the points) when the image ends less than :data:`SACRUM_VIEW_MM` below L5/S1
    (the sacrum is not in the field of view: the lowest disc seen may be L4/L5), when L5/S1 is not clearly
    seen, or when a disc of any level is seen more than half a level below it (a sixth lumbar disc:
    transitional anatomy).
    """
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    idx, _ = chain(np.log(p[:, 1:]), s_mm, gaps)
    # The level classes decide which disc is which; where the disc is, p(any disc) says: a disc's probability is
    # often split between two neighbouring levels' classes, and their sum is its whole plateau.
    any_disc = 1.0 - p[:, BACKGROUND]
    disc_s = np.array([disc_centre_mm(any_disc, s_mm, i) for i in idx])
    conf = p[idx, np.arange(1, N_LEVELS + 1)]
    # The largest probability of any disc more than half a level below L5/S1.
    below = 1.0 - p[s_mm > s_mm[idx[-1]] + 0.5 * float(gaps[:, 0].min()), BACKGROUND]
    flags = []
    view = float(s_mm[-1] - disc_s[-1])
    if view < SACRUM_VIEW_MM:
        flags.append(f"the field of view ends {view:.0f} mm below L5/S1: sacrum not in view, the count may be off")
    if conf[-1] < SEEN_P:
        flags.append(f"L5/S1 not clearly seen (detector {conf[-1]:.2f}): doubtful count from the sacrum")
    if len(below) and below.max() > SEEN_P:
        flags.append(f"a disc below L5/S1 (detector {below.max():.2f}; transitional anatomy?): doubtful count")
    if flags:
        conf = np.minimum(conf, DOUBTFUL_CONFIDENCE)
    return disc_s, conf, flags


def disc_samples(img: np.ndarray, pixel_spacing_mm, iop, disc_rc) -> tuple[np.ndarray, np.ndarray] | None:
    """Detector training samples of one sagittal slice: the features of every canal sample and its class.

    ``disc_rc`` (row, col), top to bottom: the disc points, the lowest being L5/S1 (five lumbar points, or
    every disc of a segmentation: those above L1/L2 are then background). The samples within
    :data:`DISC_RADIUS_MM` along the curve of the sample nearest a point (when the curve passes within
    10 mm of it) are of its level (1 = L1/L2 .. 5 = L5/S1), the rest :data:`BACKGROUND` (the sacrum below
    L5/S1 too). None when no canal is found.
    """
    canal = fit_canal(img, pixel_spacing_mm, iop)
    if canal is None:
        return None
    dr, dc = (float(v) for v in pixel_spacing_mm)
    y = np.full(len(canal.rows), BACKGROUND)
    lowest = disc_rc[-N_LEVELS:]
    for li, (r, c) in enumerate(lowest):
        # The disc's place on the curve: its nearest sample, when the curve passes within 10 mm of the point.
        d = np.hypot((canal.rows - r) * dr, (canal.cols - c) * dc)
        if d.min() <= 10.0:
            y[np.abs(canal.s_mm - canal.s_mm[np.argmin(d)]) <= DISC_RADIUS_MM] = N_LEVELS - len(lowest) + li + 1
    return sample_features(img, pixel_spacing_mm, canal), y


def fit_detector(xs: list[np.ndarray], ys: list[np.ndarray], *, jobs: int = 1) -> lgb.Booster:
    """The disc detector on the samples of many slices, each also with its contrast flipped
    (:func:`flip_contrast`); every disc sample weighs as ten background ones."""
    x, y = np.concatenate(xs), np.concatenate(ys)
    x, y = np.concatenate([x, flip_contrast(x)]), np.tile(y, 2)
    return lgb.train(dict(DET_PARAMS, num_threads=jobs), lgb.Dataset(x, y, weight=np.where(y > 0, 10.0, 1.0)),
                     DET_ROUNDS)


def gap_stats(gaps: list[np.ndarray]) -> np.ndarray:
    """(4, 2) mean and sd (mm, at least 2) of the distances between neighbouring discs."""
    g = np.array(gaps)
    return np.stack([g.mean(axis=0), np.maximum(g.std(axis=0), 2.0)], axis=1)


def rsna_samples(root: Path, points: pd.DataFrame, *, progress=None) -> dict:
    """Everything the localiser learns from a labelled Kaggle-layout folder: detector samples (``x``, ``y``
    lists, with the study of each in ``owner``), disc gaps (mm), offsets of the other points from the spinal
    point (condition -> level -> list of (study, [dx, dy, dz])) and of the recesses from the axial sac's centre with
    its corner's (recess condition -> level -> list of (study, (label - centre, corner - centre))).""" 
    folder = DataFolder(root)
    ser = folder.series("train")
    out = {"x": [], "y": [], "gaps": [], "owner": [], "studies": 0,
           "offsets": {c: {lv: [] for lv in LEVELS} for c in CONDITIONS[1:]},
           "sac_offsets": {c: {lv: [] for lv in LEVELS} for c in RECESSES}, "keyhole_shares": []}
    study_ids = sorted(points["study_id"].unique())
    for n, sid in enumerate(study_ids):
        if progress is not None:
            progress(n, len(study_ids))
        pts = points[points["study_id"] == sid]
        sp = pts[pts["condition"] == "spinal_canal_stenosis"].set_index("level")
        if len(sp) < 5 or sp["series_id"].nunique() != 1:
            continue
        images = StudyImages(folder, "train", sid, ser)
        try:
            (stack,) = images.stacks(int(sp["series_id"].iloc[0]))[:1]
            spine_xyz = {lv: images.label_xyz(sp.loc[lv]) for lv in LEVELS}
            k = stack.slice_of_instance(int(sp["instance_number"].iloc[0]))
            got = disc_samples(stack.pixels[k], stack.geometry.pixel_spacing_mm, stack.geometry.iop,
                               [(sp.loc[lv, "y"], sp.loc[lv, "x"]) for lv in LEVELS])
        except (SpinefeatError, ValueError, KeyError) as exc:
            log.warning("study %s skipped for the localiser: %s", sid, exc)
            continue
        if got is None:
            continue
        out["x"].append(got[0])
        out["y"].append(got[1])
        out["owner"].append(int(sid))
        out["studies"] += 1
        z = np.array([spine_xyz[lv] for lv in LEVELS])
        out["gaps"].append(np.linalg.norm(np.diff(z, axis=0), axis=1))
        for cond in CONDITIONS[1:]:
            for _, p in pts[pts["condition"] == cond].iterrows():
                try:
                    xyz = images.label_xyz(p)
                    out["offsets"][cond][p["level"]].append((int(sid), (xyz - spine_xyz[p["level"]]).tolist()))
                    if cond in RECESSES:
                        _, centre, corners = recess_corners_xyz(*images.locate(p["series_id"], p["instance_number"]),
                                                                spine_xyz[p["level"]])
                        if corners:
                            out["sac_offsets"][cond][p["level"]].append(
                                (int(sid), ((xyz - centre).tolist(), (corners[cond] - centre).tolist())))
                    elif "foraminal" in cond:
                        st, j = images.locate(p["series_id"], p["instance_number"])
                        t = label_share(st.pixels[j], (p["y"], p["x"]), pixel_spacing_mm=st.geometry.pixel_spacing_mm,
                                        iop=st.geometry.iop)
                        if t is not None:
                            out["keyhole_shares"].append((int(sid), t))
                except (SpinefeatError, KeyError):
                    pass
    if progress is not None:
        progress(len(study_ids), len(study_ids))
    return out


def train_localizer(root: Path, points: pd.DataFrame, *, extra: dict | None = None, jobs: int = 1,
                    progress=None) -> Localizer:
    """Learn the detector, the level spacing and the offsets of the other points from labelled studies,
    and with ``extra`` (e.g. :func:`spinefeat.spider.spider_training`: real sagittal T2 with disc masks) the
    detector and the spacing also from those samples."""
    return train_localizers(root, points, extra=extra, jobs=jobs, progress=progress)[0]


def train_localizers(root: Path, points: pd.DataFrame, *, folds: dict[int, int] | None = None,
                     extra: dict | None = None, jobs: int = 1,
                     progress=None) -> tuple[Localizer, dict[int, Localizer]]:
    """:func:`train_localizer` on all studies, and with ``folds`` (study -> fold) one localiser per fold
    learnt without that fold's studies (to cross-fit: each study localised by a localiser that never saw
    it; SPIDER patients, never scored, serve every fold). Each study is read once."""
    got = rsna_samples(root, points, progress=progress)
    owner = list(got["owner"])
    trained_on = {"studies": got["studies"]}
    if extra is not None:                 # real material besides the studies (SPIDER), never scored
        got["x"] += extra["x"]
        got["y"] += extra["y"]
        got["gaps"] += extra["gaps"]
        owner += [None] * len(extra["x"])
        trained_on.update(extra["trained_on"])
    # A SPIDER slice may carry no gap (gaps and samples are then not one to one): gaps keep their own owners.
    gap_owner = list(got["owner"]) + [None] * (len(got["gaps"]) - len(got["owner"]))

    def fit(keep) -> Localizer:
        use = [i for i, sid in enumerate(owner) if sid is None or keep(sid)]
        if not use:
            raise SpinefeatError("no study could train the localiser (need five spinal points on one sagittal slice)")

        def medians(table):
            return {c: {lv: np.median(np.array([o for sid, o in v if keep(sid)]), axis=0).tolist()
                        for lv, v in d.items() if any(keep(sid) for sid, _ in v)} for c, d in table.items()}

        gaps = [g for g, sid in zip(got["gaps"], gap_owner) if sid is None or keep(sid)]
        return Localizer(fit_detector([got["x"][i] for i in use], [got["y"][i] for i in use], jobs=jobs),
                         gap_stats(gaps), medians(got["offsets"]),
                         {c: fit_recess_rule({lv: [o for sid, o in v if keep(sid)] for lv, v in d.items()})
                          for c, d in got["sac_offsets"].items()},
                         dict(trained_on, studies=sum(1 for sid in got["owner"] if keep(sid))),
                         float(np.median([t for sid, t in got["keyhole_shares"] if keep(sid)] or [KEYHOLE_ROOT_SHARE])))

    by_fold = {k: fit(lambda sid, k=k: folds.get(sid) != k) for k in sorted(set((folds or {}).values()))}
    return fit(lambda sid: True), by_fold
