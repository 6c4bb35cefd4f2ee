"""Per-condition LightGBM graders: grouped CV, calibration aimed at the metric, text models + JSON manifest.

One multiclass model per condition (the spinal canal, the neural foramina, the
subarticular recesses), level and side as features. Trained unweighted, the
metric's weights 1/2/4 added to the raw scores as their log (:data:`SCORE_OFFSET`),
in study-grouped folds stratified on each study's worst grade,
early stopping on the (unweighted) log loss of an inner split of each fold's training
studies (never on the fold itself). That inner split also fits the fold's
temperature per condition and its sharpening of each study's largest spinal
severe probability (the any_severe_spinal term): the calibration is nested, and
the deployed one is refitted on all out-of-fold rows. A grader may average its trees over several LightGBM
seeds (:data:`BAG`, :class:`Bag`: the mean raw score). Models are LightGBM text files; the manifest holds
feature lists, class order, parameters, versions, file hashes and the
training-table fingerprint. No pickle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from . import __version__
from .dataset import CLASS_COLUMNS, SEVERITY_WEIGHTS, TARGETS, labels_long
from .errors import SpinefeatError
from .metric import score_joined

log = logging.getLogger(__name__)

MODEL_GROUPS = {
    "spinal": ("spinal_canal_stenosis",),
    "foraminal": ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"),
    "subarticular": ("left_subarticular_stenosis", "right_subarticular_stenosis"),
}
NON_FEATURES = ("study_id", "condition", "level", "row_id", "split")
#: The graders' LightGBM settings. Small, strongly regularised trees learned slowly: a few thousand noisy
#: grades (reader agreement is moderate) of ~100 correlated features. Chosen on the development half of the
#: real foramina only (see :func:`spinefeat.realcheck.development_half`; the former 0.1 / 15 leaves /
#: min 20 / feature share 0.8 / L2 1 overfitted there).
PARAMS = {
    "objective": "multiclass", "num_class": 3, "learning_rate": 0.03, "num_leaves": 7, "min_data_in_leaf": 40,
    "max_bin": 63,
    "feature_fraction": 0.5, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 10.0, "verbose": -1,
    "seed": 0, "deterministic": True, "force_col_wise": True,
}
#: Per grader, what differs from :data:`PARAMS` (:func:`grader_params`). The foraminal grader reads ~210
#: columns (96 of them the foramen's HOG cells): random split points (extra trees) and 30 % of the columns per
#: tree average over many weak, decorrelated trees. Chosen on the development half of the real foramina (mean
#: of LightGBM seeds 0-3): 0.586 with PARAMS, 0.578 with extra trees, 0.576 with extra trees and 0.3 of the
#: columns (0.2: 0.576; 0.4: 0.580, seeds 2 and 3; 15 or 4 leaves, 20 or 60 rows a leaf, L2 3 or 30, learning
#: rate 0.05 or bagging 0.6 with them: no better, seeds 0 and 1). The same on the development half of the real
#: recesses (subarticular): 0.613 -> 0.594 (seeds 0-3); on the real spinal rows it loses (0.432 -> 0.435,
#: seeds 0 and 1): the spinal grader keeps PARAMS.
GRADER_PARAMS = {group: {"extra_trees": True, "feature_fraction": 0.3} for group in ("foraminal", "subarticular")}
MAX_ROUNDS = 1000
EARLY_STOP = 30
#: What the graders add to LightGBM's raw scores (per class, before the temperature): the log of the metric's
#: weights 1/2/4. The boosters fit the grades unweighted (the class posteriors); for the weighted log loss the
#: best prediction is the posterior times the weights, renormalised, which this offset gives. Fitting with
#: the weights as sample weights aims at the same target with each rare Severe row counted four times, a
#: noisier fit: on the development half of the real foramina 0.619 -> 0.608 (LightGBM seeds 0 and 1).
SCORE_OFFSET = tuple(float(v) for v in np.log(SEVERITY_WEIGHTS))


#: Per grader, how many LightGBM seeds its trees are averaged over (no entry: 1). Each seed is a whole fit of its
#: own (:func:`bag_seeds`: seeds ``seed``, ``seed + 1``, ...): in every fold its own early stop, in the final fit
#: its own round count (its folds' mean best iteration, :func:`final_rounds`). The grader's raw score is the mean of
#: the seeds' raw scores (before the offset's addition, the temperature and the softmax; :class:`Bag`), so the
#: seeds' mean ``pred_contrib`` adds up to it. ``train`` saves one LightGBM text file per seed, each hashed in the
#: manifest; the appearance stage is fitted once and shared by the seeds.
#: Measured in real-check's own CV on each half of the real rows (fold and LightGBM seeds 0-2; README, Graders):
#: foraminal, 2 seeds: development 0.5426 -> 0.5417, held-out 0.4973 -> 0.4961 (every seed gains on the held-out
#: half; 3 or 4 seeds no better: 0.5420 / 0.4960, 0.5419 / 0.4960); subarticular, 4 seeds: development 0.5730 ->
#: 0.5701, held-out 0.5473 -> 0.5462 (every seed gains on both; 2 and 3 seeds lose on a held-out seed); spinal:
#: no entry (3 or 4 seeds lose on the development half: 0.3920 -> 0.3922).
BAG = {"foraminal": 2, "subarticular": 4}


def grader_params(group: str, **extra) -> dict:
    """The LightGBM settings of one grader: :data:`PARAMS` with its :data:`GRADER_PARAMS` (and ``extra``)."""
    return dict(PARAMS, **GRADER_PARAMS.get(group, {}), **extra)


def bag_seeds(group: str | None, seed: int, bag: int | None = None) -> list[int]:
    """The LightGBM seeds of a grader's fits: ``bag`` (default :data:`BAG` of ``group``, else 1) seeds from ``seed``."""
    n = BAG.get(group, 1) if bag is None else int(bag)
    if n < 1:
        raise ValueError(f"a grader needs at least one LightGBM seed, not {n}")
    return [int(seed) + i for i in range(n)]


class Bag:
    """A grader's boosters, one per LightGBM seed (:data:`BAG`), read as one model: :meth:`predict` gives the mean
    over the boosters of their raw scores (``raw_score=True``) or of their per-feature contributions
    (``pred_contrib=True``), so contributions still add up to the raw score. A bag of one is its booster."""

    def __init__(self, boosters, seeds=None):
        self.boosters = list(boosters)
        if not self.boosters:
            raise ValueError("a bag needs at least one booster")
        self.seeds = list(seeds) if seeds is not None else [None] * len(self.boosters)
        if len(self.seeds) != len(self.boosters):
            raise ValueError(f"a bag of {len(self.boosters)} boosters with {len(self.seeds)} seeds")
        names = self.boosters[0].feature_name()
        if any(b.feature_name() != names for b in self.boosters[1:]):
            raise ValueError("the boosters of a bag read different features")

    def __len__(self) -> int:
        return len(self.boosters)

    def predict(self, x, *, raw_score: bool = False, pred_contrib: bool = False, num_iteration=None):
        if not (raw_score or pred_contrib):
            raise ValueError("a bag averages raw scores or contributions; softmax after the mean")
        kw = {"raw_score": raw_score, "pred_contrib": pred_contrib, "num_iteration": num_iteration}
        return np.mean([np.asarray(b.predict(x, **kw)) for b in self.boosters], axis=0)

    def feature_name(self) -> list[str]:
        return self.boosters[0].feature_name()

    def feature_importance(self, importance_type: str = "split") -> np.ndarray:
        """The mean over the boosters (gain or split counts)."""
        return np.mean([b.feature_importance(importance_type) for b in self.boosters], axis=0)

    def model_to_string(self) -> str:
        """The boosters' model texts, one after the other (for comparing bags; each is saved in its own file)."""
        return "\n".join(b.model_to_string() for b in self.boosters)


# ---------------------------------------------------------------- the in-fold appearance stage

#: Per grader, its fitted appearance stage (:class:`Appearance`; no entry: none): the columns starting with
#: ``inputs`` (the aligned windows' pixels, :data:`spinefeat.features.texture.WINDOW_NAMES`; the foramen's 32 and
#: 48 mm and 64 mm windows) feed a multinomial
#: logistic regression (L2, inverse strength ``C``, on the standardised values) whose 3 centred log-odds
#: (:data:`APPEARANCE_COLUMNS`) join the grader's columns in their place: the trees read the score, not the
#: pixels. Fitted inside every training fold with its training rows' scores out of inner study-grouped folds
#: (:func:`appearance_scores`), so the trees never see a score fitted on their own rows' grades.
#: Chosen on the development halves of the real rows (README, Graders): each gained there and on the held-out half.
#: C was varied on the foraminal stage only (0.001 / 0.003 / 0.01 / 0.03: development half 0.567 / 0.565 / 0.563 /
#: 0.564, held-out half 0.516 / 0.514 / 0.517 / 0.517, seeds 0 and 1): no clear gain, 0.003 kept for all three.
#: ``window_z``: the stage also reads each window standardised over itself (:func:`with_window_z`; foraminal,
#: development half 0.5598 -> 0.5534, held-out 0.5050 -> 0.5018, seeds 0-4; not tried on the axial stages).
#: The foramen's 64 mm window (:data:`spinefeat.features.texture.WINDOWS_MM`): development half 0.5525 -> 0.5460,
#: held-out 0.5063 -> 0.4981 (seeds 0-2, every seed gains on both); with ``context`` 0.5428 / 0.4969.
#: ``context``: the trees also read the stage's scores of the same study's other foramina
#: (:data:`APPEARANCE_CONTEXT_COLUMNS`; foraminal, development half 0.5525 -> 0.5494, held-out 0.5063 -> 0.5051,
#: fold and LightGBM seeds 0-2; the severe-minus-normal log-odds alone of the same neighbours and the study's
#: largest: 0.5512 / 0.5043).
#: ``components`` (speed, issue 14): the foraminal stage fitted on its training rows' top 96 principal components
#: (:meth:`Appearance.fit`; the same pixel-space model and JSON): stage CPU about half (14.5-15.5 against
#: 28.8-32.7 s per half and seed), real-check CV weighted log loss seeds 0 / 1 / 2 development half
#: 0.5447 / 0.5400 / 0.5433 -> 0.5439 / 0.5388 / 0.5441, held-out 0.4932 / 0.4984 / 0.5004 -> 0.4948 / 0.4962 /
#: 0.4997 (means 0.5426 -> 0.5423, 0.4973 -> 0.4969). The axial stages cost ~0.5 s: left plain.
APPEARANCE = {"foraminal": {"inputs": "foramen_window_", "C": 0.003, "window_z": True, "context": True,
                            "components": 96},
              "subarticular": {"inputs": "recess_window_", "C": 0.003},
              "spinal": {"inputs": "canal_ax_window_", "C": 0.003}}
APPEARANCE_COLUMNS = tuple(f"appearance_logodds_{c}" for c in CLASS_COLUMNS)
#: With ``context`` in :data:`APPEARANCE`, the trees also read each row's stage scores against its study's other
#: rows, as a reader compares the levels (each row is graded alone): per neighbour (:func:`appearance_context`),
#: the 3 log-odds of the mean over the study's other foramina, of the other side at the same level and of the level
#: above and below on the same side.
APPEARANCE_NEIGHBOURS = {"study_others": "the mean over the study's other foramina",
                         "other_side": "the foramen of the other side at the same level",
                         "above": "the foramen one level up on the same side",
                         "below": "the foramen one level down on the same side"}
APPEARANCE_CONTEXT_COLUMNS = tuple(f"appearance_logodds_{c}_{k}" for k in APPEARANCE_NEIGHBOURS for c in CLASS_COLUMNS)
#: Inner folds of the appearance stage (by study).
APPEARANCE_FOLDS = 5


def _register_appearance() -> None:
    from .features import register

    for c in CLASS_COLUMNS:
        register(f"appearance_logodds_{c}", f"log-odds of {c} (centred over the 3 grades) of the grader's appearance "
                 "stage: a logistic regression on the aligned window's pixels fitted inside the training fold, "
                 "out of inner folds on the training rows", "1")
        for k, what in APPEARANCE_NEIGHBOURS.items():
            register(f"appearance_logodds_{c}_{k}", f"appearance_logodds_{c} of {what} (missing where the study has "
                     "none)", "1")


_register_appearance()


def stage_options(group: str) -> dict:
    """The fit settings of ``group``'s appearance stage (:data:`APPEARANCE`): ``C``, ``window_z`` and, where set,
    ``components`` (:meth:`Appearance.fit`)."""
    opts = {"C": APPEARANCE[group]["C"], "window_z": APPEARANCE[group].get("window_z", False)}
    if APPEARANCE[group].get("components"):
        opts["components"] = int(APPEARANCE[group]["components"])
    return opts


def appearance_context(scores: np.ndarray, study, level_index, side) -> np.ndarray:
    """The (n, 12) :data:`APPEARANCE_CONTEXT_COLUMNS` of the rows with stage ``scores`` (n, 3): for each
    neighbour of :data:`APPEARANCE_NEIGHBOURS`, its scores (NaN where the study has none). ``study``,
    ``level_index`` (0 = L1/L2 .. 4 = L5/S1) and ``side`` (+1 left, -1 right) name each row's foramen; rows
    naming the same foramen (a point found and a labelled one) count as one, with their mean scores."""
    keys = list(zip(np.asarray(study).tolist(), np.asarray(level_index, float).tolist(),
                    np.asarray(side, float).tolist()))
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}           # one per foramen
    row = np.array([ids[k] for k in keys], int)
    per = np.zeros((len(ids), 3))
    np.add.at(per, row, np.asarray(scores, float))
    per /= np.bincount(row, minlength=len(ids))[:, None]
    studies = {s: i for i, s in enumerate(dict.fromkeys(k[0] for k in ids))}
    of = np.array([studies[k[0]] for k in ids], int)                  # each foramen's study
    total = np.zeros((len(studies), 3))
    np.add.at(total, of, per)
    count = np.bincount(of)[of[row]][:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        others = np.where(count > 1, (total[of[row]] - per[row]) / (count - 1), np.nan)

    def at(dlevel, dside):
        i = np.array([ids.get((s, lv + dlevel, sd * dside), -1) for s, lv, sd in keys], int)
        return np.where(i[:, None] >= 0, per[i], np.nan)

    return np.hstack([others, at(0, -1), at(-1, 1), at(1, 1)])


def with_window_z(x: np.ndarray, inputs: list[str]) -> np.ndarray:
    """``x`` (columns ``inputs``) as float64 with each window's pixels appended standardised over that window in
    the row (minus its mean, over its sd): the window's pattern whatever its brightness and contrast. A window is
    the columns whose names agree up to the last ``_`` (``foramen_window_48mm_r00c00`` -> ``foramen_window_48mm``).
    Written into one array (a float64 copy of ``x``, the windows and their concatenation held 1.8 times it)."""
    keys = [c.rsplit("_", 1)[0] for c in inputs]
    windows = [[i for i, kk in enumerate(keys) if kk == k] for k in dict.fromkeys(keys)]
    out = np.empty((x.shape[0], x.shape[1] + sum(map(len, windows))))
    out[:, :x.shape[1]] = x
    j = x.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # a row without the window stays NaN
        for idx in windows:
            w = out[:, idx]                                  # a copy, standardised in place
            m, sd = np.nanmean(w, axis=1, keepdims=True), np.nanstd(w, axis=1, keepdims=True)
            w -= m
            w /= np.clip(sd, 1e-6, None)
            out[:, j:j + len(idx)] = w
            j += len(idx)
    return out


def stage_matrix(x: np.ndarray, inputs: list[str], window_z: bool) -> np.ndarray:
    """The matrix an appearance stage reads of the rows ``x`` (columns ``inputs``): float64, with
    :func:`with_window_z` appended when ``window_z``. Row by row, so one matrix of all rows serves every fit."""
    return with_window_z(x, list(inputs)) if window_z else np.asarray(x, float)


def _standardised(z: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``nan_to_num((z - mean) / scale)``, computed in place in ``z`` (a copy of the caller's rows)."""
    z -= mean
    z /= scale
    return np.nan_to_num(z, copy=False)


@dataclass
class Appearance:
    """A fitted appearance stage: ``score(x) = centred(((x - mean) / scale) @ coef.T + intercept)``.

    ``inputs``: the columns it reads, in order; ``coef`` (3, inputs), ``intercept`` (3); with ``window_z``,
    ``x`` is :func:`with_window_z` of the inputs (``mean``, ``scale``, ``coef`` twice as wide). Stored as JSON
    (:meth:`to_json`), never pickled.
    """

    inputs: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    C: float
    window_z: bool = False

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, *, inputs: list[str], C: float, window_z: bool = False,
            components: int | None = None) -> "Appearance":
        """Multinomial logistic regression of the grades ``y`` (0/1/2) on the standardised ``x``: the unweighted
        log loss summed over rows plus ``|coef|^2 / (2 C)`` (scikit-learn's convention), L-BFGS from zero.
        A class missing from ``y`` gets a low but finite score; missing values count as the mean.

        With ``components`` k, the regression is fitted on the standardised rows' top k principal components
        (of these training rows only, no grades) and its coefficients mapped back to the inputs
        (``coef = W_k @ V_k.T``): the same pixel-space model and JSON, the penalty the same (``V_k``
        orthonormal), restricted to the k directions: with k = all the inputs, the plain fit rotated (the same
        scores); with more, the plain fit."""
        m = stage_matrix(x, inputs, window_z)
        return cls.fit_rows(m, np.arange(len(m)), y, inputs=inputs, C=C, window_z=window_z, components=components)

    @classmethod
    def fit_rows(cls, m: np.ndarray, rows: np.ndarray, y: np.ndarray, *, inputs: list[str], C: float,
                 window_z: bool = False, components: int | None = None) -> "Appearance":
        """:meth:`fit` on the rows ``rows`` (indices) of ``m``, the matrix the stage reads (:func:`stage_matrix`
        of all rows, computed once for many fits); ``y``: the grades of those rows. The fit is the same."""
        from scipy.linalg import eigh
        from scipy.optimize import minimize
        from threadpoolctl import threadpool_limits

        z = m[rows]                                         # a copy, standardised in place
        mean = np.nanmean(z, axis=0) if len(z) else np.zeros(z.shape[1])
        mean = np.where(np.isfinite(mean), mean, 0.0)
        scale = np.nanstd(z, axis=0) if len(z) else np.ones(z.shape[1])
        scale = np.where(np.isfinite(scale) & (scale > 1e-6), scale, 1.0)
        z = _standardised(z, mean, scale)
        basis = None
        if components and 0 < components <= z.shape[1] and len(z):
            with threadpool_limits(1):
                # The top right singular vectors of z: eigenvectors of z.T z (ascending eigenvalues, so reversed).
                full = z.shape[1]
                _, basis = eigh(z.T @ z, subset_by_index=[full - components, full - 1])
            basis = basis[:, ::-1]
            z = z @ basis
        d = z.shape[1]
        onehot = np.eye(3)[np.asarray(y, int)]

        def loss(w):
            coef, b = w[:3 * d].reshape(3, d), w[3 * d:]
            s = z @ coef.T + b
            s -= s.max(axis=1, keepdims=True)
            lse = np.log(np.exp(s).sum(axis=1, keepdims=True))
            p = np.exp(s - lse)
            g = p - onehot
            val = float(-(onehot * (s - lse)).sum() + (coef ** 2).sum() / (2 * C))
            return val, np.concatenate([(g.T @ z + coef / C).ravel(), g.sum(axis=0)])

        # One BLAS thread: these small products gain nothing from more, and spinning threads on a busy machine
        # cost 50x the CPU (0.08 against 4.2 CPU s for 2,400 rows of 256 values).
        with threadpool_limits(1):
            res = minimize(loss, np.zeros(3 * d + 3), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
        coef = res.x[:3 * d].reshape(3, d)
        if basis is not None:
            coef = coef @ basis.T                           # back to the inputs: the same scores of the rows
        return cls(list(inputs), mean, scale, coef, res.x[3 * d:], float(C), bool(window_z))

    def score(self, x: np.ndarray) -> np.ndarray:
        """The (n, 3) centred log-odds of the rows ``x`` (columns :attr:`inputs`)."""
        m = stage_matrix(x, self.inputs, self.window_z)
        return self.score_rows(m, np.arange(len(m)))

    def score_rows(self, m: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """:meth:`score` of the rows ``rows`` of ``m`` (:func:`stage_matrix` of all rows)."""
        s = _standardised(m[rows], self.mean, self.scale) @ self.coef.T + self.intercept
        return s - s.mean(axis=1, keepdims=True)

    def to_json(self) -> dict:
        return {"kind": "multinomial logistic regression on standardised inputs", "C": self.C,
                "window_z": self.window_z,
                "inputs": self.inputs, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept.tolist(), "outputs": list(APPEARANCE_COLUMNS)}

    @classmethod
    def from_json(cls, d: dict) -> "Appearance":
        a = cls(list(d["inputs"]), np.asarray(d["mean"], float), np.asarray(d["scale"], float),
                np.asarray(d["coef"], float), np.asarray(d["intercept"], float), float(d["C"]),
                bool(d.get("window_z", False)))
        n = len(a.inputs) * (2 if a.window_z else 1)
        if a.mean.shape != (n,) or a.scale.shape != (n,) or a.coef.shape != (3, n) or a.intercept.shape != (3,):
            raise ValueError(f"appearance stage of {n} inputs with arrays of shapes {a.mean.shape}, {a.scale.shape}, "
                             f"{a.coef.shape}, {a.intercept.shape}")
        return a


def split_appearance(group: str, cols: list[str]) -> tuple[list[str], list[str]]:
    """``cols`` parted into the trees' own columns and the appearance stage's inputs (:data:`APPEARANCE`; none
    for a grader without a stage)."""
    spec = APPEARANCE.get(group)
    inputs = [c for c in cols if spec and c.startswith(spec["inputs"])]
    return [c for c in cols if c not in set(inputs)], inputs


def appearance_scores(x: np.ndarray, y: np.ndarray, fold: np.ndarray, study: np.ndarray, *, folds: int,
                      inputs: list[str], C: float, window_z: bool = False, seed: int = 0, jobs: int = 1,
                      deploy: bool = False, components: int | None = None) -> tuple[np.ndarray, Appearance | None]:
    """The appearance stage's scores each fit of a grader sees, and (``deploy``) the deployed stage, fitted on
    all rows (else None).

    The scores are ``(folds + 1, n, 3)``. Index k (fold k's fit): the rows outside fold k scored out of
    :data:`APPEARANCE_FOLDS` inner folds of their studies (each by the stage fitted on the others),
    the rows of fold k by the stage fitted on all rows outside it. Index ``folds`` (the final fit): each row
    scored by the stage fitted outside its fold, as :meth:`Graders.predict` scores new rows by the stage fitted on
    all of them. No row's score ever comes from a stage fitted on its own grade, and no fit's training
    rows' scores from a stage fitted on the rows it is scored on.

    The stage's matrix (:func:`stage_matrix`) is computed once for all the fits; with ``jobs`` > 1 the fits run
    in that many worker processes, each the same function of the same rows as in this one (the same scores).
    """
    n = len(y)
    out = np.zeros((folds + 1, n, 3))
    fits = []                                               # (training rows, scored rows, where the scores go)
    for k in range(folds):
        tr = fold != k
        # Inner folds dealt round the training studies in a seeded order, not stratified: a study's own grades
        # then do not even choose the studies it is scored with.
        part = np.random.default_rng(seed + 100 + k).permutation(np.unique(study[tr]))
        inner = {s: i % APPEARANCE_FOLDS for i, s in enumerate(part)}
        ifold = np.array([inner.get(s, -1) for s in study])
        for j in range(min(APPEARANCE_FOLDS, len(part))):
            fits.append((tr & (ifold != j), tr & (ifold == j), k))
        fits.append((tr, ~tr, k))
    if deploy:
        fits.append((np.ones(n, bool), None, None))
    opts = {"inputs": list(inputs), "C": C, "window_z": window_z}
    if components:
        opts["components"] = int(components)
    m = stage_matrix(x, inputs, window_z)
    args = [(np.flatnonzero(train), None if score is None else np.flatnonzero(score)) for train, score, _ in fits]
    if jobs <= 1:
        res = [_stage_fit(m, y, train, score, opts) for train, score in args]
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="spinefeat-stage-") as tmp:
            path = Path(tmp) / "stage.npy"
            np.save(path, m)
            del m
            # The largest fits first; each worker maps the one matrix file and copies its fit's rows. The pool
            # is the trees' (:func:`_pool`): one pool for every stage and fit of a training run.
            order = sorted(range(len(args)), key=lambda i: -len(args[i][0]))
            pool = _pool(jobs)
            futures = {i: pool.submit(_stage_fit, path, y, *args[i], opts) for i in order}
            try:
                res = [futures[i].result() for i in range(len(args))]
            except BaseException:
                for f in futures.values():
                    f.cancel()
                raise
    deployed = None
    for (train, score, k), r in zip(fits, res):
        if score is None:
            deployed = Appearance.from_json(r)
        else:
            out[k, score] = r
    for k in range(folds):
        out[folds, fold == k] = out[k, fold == k]
    return out, deployed


def _pool(jobs: int):
    """The worker pool of the graders' fits (the appearance stages' and the trees'): joblib's reusable loky
    executor of ``jobs`` workers, asked for with the same arguments every time, so one pool serves every fit of a
    training run. (joblib shuts its reusable pool down and starts a new one whenever it is asked for with other
    arguments: a ``Parallel`` call passes the thread-limit variables as ``env``, and the stages' ``Parallel``
    between the trees' executors respawned the workers at every switch. A plain loky executor in its place would
    break the next ``Parallel`` call of this process, which reuses joblib's.)"""
    from joblib.executor import get_memmapping_executor

    return get_memmapping_executor(jobs)


def _stage_fit(m: np.ndarray | Path, y: np.ndarray, train: np.ndarray, score: np.ndarray | None,
               opts: dict) -> np.ndarray | dict:
    """One fit of :func:`appearance_scores`: the stage fitted on the ``train`` rows of ``m`` (or of the matrix in
    the file ``m``), and the scores of its ``score`` rows; without ``score``, the stage itself as JSON."""
    if not isinstance(m, np.ndarray):
        m = np.load(m, mmap_mode="r")
    if not len(train):
        return np.zeros((len(score), 3))
    stage = Appearance.fit_rows(m, train, y[train], **opts)
    return stage.to_json() if score is None else stage.score_rows(m, score)


def group_of(condition: str) -> str:
    for g, conds in MODEL_GROUPS.items():
        if condition in conds:
            return g
    raise KeyError(condition)


def feature_columns(features: pd.DataFrame, group: str) -> list[str]:
    """Numeric feature columns with any value for this group's rows."""
    mine = features["condition"].isin(MODEL_GROUPS[group]).to_numpy()      # column by column: no copy of the rows
    cols = [c for c in features.columns if c not in NON_FEATURES and not c.startswith("diagnostics_")]
    return [c for c in cols if pd.api.types.is_numeric_dtype(features[c]) and features[c].notna().to_numpy()[mine].any()]


#: The columns of a training row that are not features (:func:`fit` keeps these of every row, the features as arrays).
ROW_KEYS = ("study_id", "condition", "level", "row_id", "severity")


def labelled_rows(features: pd.DataFrame, train: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The positions in ``features`` of the rows with a scored label, in :func:`training_rows` order, and their
    grades: the join on the keys alone, so no copy of the feature values is made."""
    lab = labels_long(train)
    lab = lab[lab["severity"] >= 0][["study_id", "condition", "level", "severity"]]
    keys = features[["study_id", "condition", "level"]].assign(_position=np.arange(len(features)))
    joined = keys.merge(lab, on=["study_id", "condition", "level"], how="inner")
    return joined["_position"].to_numpy(), joined["severity"].to_numpy()


def training_rows(features: pd.DataFrame, train: pd.DataFrame, *, part=slice(None), columns=None,
                  labelled: tuple[np.ndarray, np.ndarray] | None = None) -> pd.DataFrame:
    """Feature rows joined to their labels (scored rows only; ``severity`` last), as ``features.merge`` of the
    labels would give them; ``part``: only those of these rows (a slice or positions), ``columns``: only those
    columns of ``features``; ``labelled``: :func:`labelled_rows` of the two when already known."""
    at, severity = labelled_rows(features, train) if labelled is None else labelled
    # The columns first: taking every column's rows for a few keys copied the whole table (2,000 studies: 0.6 GB).
    src = features if columns is None else features[[c for c in columns if c in features.columns]]
    return src.iloc[at[part]].reset_index(drop=True).assign(severity=severity[part])


#: Columns converted at a time by :func:`float32_block`.
BLOCK_COLUMNS = 128


def float32_block(features: pd.DataFrame, positions: np.ndarray, cols: list[str]) -> np.ndarray:
    """``features.iloc[positions].reindex(columns=cols).to_numpy(np.float32)`` (NaN in a column ``features`` lacks),
    filled :data:`BLOCK_COLUMNS` columns at a time: the rows' float64 copy of all the columns at once held twice the
    array."""
    idx = features.columns.get_indexer(cols)
    out = np.full((len(positions), len(cols)), np.nan, np.float32)     # NaN: a column ``features`` lacks
    for j in range(0, len(cols), BLOCK_COLUMNS):
        have = np.flatnonzero(idx[j:j + BLOCK_COLUMNS] >= 0)
        out[:, j + have] = features.iloc[positions, idx[j + have]].to_numpy(np.float32)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _wll(y: np.ndarray, p: np.ndarray) -> float:
    w = np.asarray(SEVERITY_WEIGHTS)[y]
    return float(np.sum(w * -np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1))) / w.sum())


#: Bounds of the temperature search (a temperature outside them means the model is badly off, not a fit).
TEMPERATURE_BOUNDS = (0.2, 5.0)
#: Bounds of the any-severe sharpening (log odds added to each study's largest spinal severe probability).
BETA_BOUNDS = (0.0, 3.0)


def _bounded_min(loss, lo: float, hi: float, what: str, *, warn_low: bool = True, shown=float) -> float:
    """Minimiser of a scalar ``loss`` on ``[lo, hi]`` (scipy's bounded Brent); a warning when it sits on a bound
    (values in the warning through ``shown``)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    x = float(res.x)
    tol = 1e-3 * (hi - lo)
    if x >= hi - tol or (warn_low and x <= lo + tol):
        log.warning("%s sits on the bound of its search [%g, %g]: %g", what, shown(lo), shown(hi), shown(x))
    return x


def fit_temperature(y: np.ndarray, raw: np.ndarray, *, what: str = "temperature") -> float:
    """Temperature T minimising the weighted log loss of ``softmax(raw / T)`` (searched on log T, bounded)."""
    lo, hi = np.log(TEMPERATURE_BOUNDS)
    return float(np.exp(_bounded_min(lambda lt: _wll(y, _softmax(raw / np.exp(lt))), lo, hi, what, shown=np.exp)))


def fit_sharpening(rows: pd.DataFrame, proba: np.ndarray, *, what: str = "any-severe sharpening") -> float:
    """The sharpening ``beta`` (see :func:`sharpen_any_severe`) minimising the spinal and any_severe_spinal terms.

    ``rows``: spinal rows with ``study_id, condition, level, row_id, severity``; ``proba`` their (n, 3)
    probabilities. No spinal row: 0.
    """
    if rows.empty:
        return 0.0
    return _bounded_min(sharpening_loss(rows, proba), *BETA_BOUNDS, what, warn_low=False)


def sharpening_loss(rows: pd.DataFrame, proba: np.ndarray):
    """``beta -> `` the metric's score (spinal and any_severe_spinal terms) of the spinal ``rows`` with
    probabilities ``proba`` after :func:`sharpen_any_severe` by ``beta``.

    The same number as scoring the sharpened submission with :func:`~spinefeat.metric.score_joined`, in
    arrays: the minimiser calls it some 25 times, and the table route costs a second on 2,000 studies.
    """
    from .metric import EPS, _normalise, weighted_log_loss

    study, sev = rows["study_id"].to_numpy(), rows["severity"].to_numpy(int)
    p = np.asarray(proba, float)
    # The row sharpening changes in each study: its largest severe probability (the first on ties).
    top = pd.Series(p[:, 2]).groupby(study).idxmax().to_numpy()
    order = np.argsort(study, kind="stable")
    starts = np.flatnonzero(np.r_[True, study[order][1:] != study[order][:-1]])
    truth = np.maximum.reduceat((sev[order] == 2).astype(float), starts)
    weight = np.maximum.reduceat(np.asarray(SEVERITY_WEIGHTS, float)[sev[order]], starts)
    p_top = p[top, 2]
    rest = np.clip(1 - p_top, 1e-12, None)

    def loss(beta: float) -> float:
        q = p.copy()
        if beta != 0:
            odds = p_top / rest * np.exp(beta)
            new = odds / (1 + odds)
            q[top, :2] *= ((1 - new) / rest)[:, None]
            q[top, 2] = new
        pred = np.clip(np.maximum.reduceat(_normalise(q)[order, 2], starts), EPS, 1 - EPS)
        any_severe = np.sum(weight * -(truth * np.log(pred) + (1 - truth) * np.log(1 - pred))) / weight.sum()
        return (weighted_log_loss(sev, q) + float(any_severe)) / 2

    return loss


def worst_grades(train: pd.DataFrame) -> pd.Series:
    """Each study's worst scored grade (0/1/2; -1 when nothing is scored), indexed by study id."""
    long = labels_long(train)
    return long.groupby("study_id")["severity"].max()


def stratified_folds(studies, worst: pd.Series, folds: int, seed: int, *,
                     groups: dict[int, int] | None = None) -> dict[int, int]:
    """Fold of each study: ``StratifiedGroupKFold`` on the study's worst grade, the study as the group.

    Stratifying keeps the rare Severe studies (and so the any_severe_spinal term) spread over the folds.
    When no grade has ``folds`` studies (a handful of studies) there is nothing to stratify: the studies
    are dealt round the folds in a seeded random order. ``groups`` (study -> group) keeps the studies of a
    group in one fold (copies of one study, as the benchmark's bootstrap makes).
    """
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    studies = np.asarray(sorted(int(s) for s in studies))
    group = studies if groups is None else np.array([groups.get(int(s), int(s)) for s in studies])
    y = worst.reindex(studies).fillna(-1).to_numpy(int)
    if np.bincount(y + 1).max() < folds:
        order = np.random.default_rng(seed).permutation(np.unique(group))
        fold_of_group = {g: i % folds for i, g in enumerate(order)}
        return {int(s): fold_of_group[g] for s, g in zip(studies, group)}
    out = {}
    with warnings.catch_warnings():
        # "the least populated class has fewer members than folds": expected on small cohorts.
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        for k, (_, test) in enumerate(splitter.split(studies, y, groups=group)):
            out.update({int(s): k for s in studies[test]})
    return out


def sharpen_any_severe(sub: pd.DataFrame, beta: float) -> pd.DataFrame:
    """Multiply the odds of each study's largest spinal severe probability by ``exp(beta)``.

    Only that row changes; its other two classes shrink in proportion.
    """
    if beta == 0:
        return sub
    sub = sub.copy()
    sp = sub["row_id"].str.contains("_spinal_canal_stenosis_")
    if not sp.any():
        return sub
    study = sub.loc[sp, "row_id"].str.split("_").str[0]
    idx = sub.loc[sp, "severe"].groupby(study).idxmax().to_numpy()
    p = sub.loc[idx, "severe"].to_numpy()
    odds = p / np.clip(1 - p, 1e-12, None) * np.exp(beta)
    new = odds / (1 + odds)
    rest = np.clip(1 - p, 1e-12, None)
    for col in ("normal_mild", "moderate"):
        sub.loc[idx, col] = sub.loc[idx, col].to_numpy() * (1 - new) / rest
    sub.loc[idx, "severe"] = new
    return sub


def to_submission(rows: pd.DataFrame, proba: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"row_id": rows["row_id"].to_numpy(), **dict(zip(CLASS_COLUMNS, proba.T))})


def fingerprint_frame(df) -> str:
    """Hash of a table's values, timing columns (``*_seconds``) left out so a rerun gives the same one. ``df`` may
    also be its row blocks in order (an iterable of frames; the same hash): the table is then never whole in memory."""
    parts = [df] if isinstance(df, pd.DataFrame) else df
    h = [pd.util.hash_pandas_object(part.drop(columns=[c for c in part.columns if str(c).endswith("_seconds")]),
                                    index=False).to_numpy() for part in parts]
    return hashlib.sha256(np.concatenate(h or [np.zeros(0, np.uint64)]).tobytes()).hexdigest()[:16]


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def early_stopping_studies(studies, fold_of: dict[int, int], worst: pd.Series, folds: int,
                           seed: int, *, groups: dict[int, int] | None = None) -> dict[int, np.ndarray]:
    """Per fold ``k``, the training studies that stop its boosting early and fit its calibration: a
    stratified 1/``folds`` share of the ``studies`` outside fold ``k`` (:func:`stratified_folds` with seed
    ``seed + 1 + k``, ``groups`` kept together). The scored fold itself chooses nothing."""
    held = {}
    for k in range(folds):
        part = [int(s) for s in studies if fold_of[int(s)] != k]
        inner = stratified_folds(part, worst, min(folds, len(part)), seed + 1 + k, groups=groups)
        held[k] = np.array([s for s in part if inner[s] == 0])
    return held


class _Problem:
    """One grader's training rows and folds. Every fit of it (each fold's, the final one) trains on subsets of one
    LightGBM Dataset binned once, on all rows' feature values (never their labels), in the process that fits.

    ``stage`` (optional, ``(folds + 1, n, 3)``): the appearance stage's scores (:func:`appearance_scores`) that
    fold k's fit (index k) and the final fit (index ``folds``) see as the last columns of ``x``: each fit's
    Dataset is binned on its own.

    ``seeds`` (default ``[params["seed"]]``): the LightGBM seeds of its bag (:func:`bag_seeds`); every fit (each
    fold's, the final one) is made once per seed, on the same binned Dataset."""

    def __init__(self, x: np.ndarray, y: np.ndarray, fold: np.ndarray, stops, *, cols: list[str], params: dict,
                 folds: int, scored: np.ndarray | None = None, stage: np.ndarray | None = None,
                 seeds: list[int] | None = None):
        self.x, self.y, self.fold, self.folds, self.params, self.cols = x, y, fold, folds, params, cols
        self.scored = np.ones(len(y), bool) if scored is None else scored
        self.stops = stops
        self.stage = stage
        self.seeds = [int(params.get("seed", 0))] if seeds is None else [int(v) for v in seeds]
        self.final_seconds = 0.0

    def masks(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fold k's training, early-stopping and scored rows."""
        stops = self.stops(k)
        return (self.fold != k) & ~stops, (self.fold != k) & stops & self.scored, (self.fold == k) & self.scored

    def rows(self, key: str, folder: Path | None) -> _Rows:
        """What a fit needs of this problem: its arrays here, or (``folder``) a file a worker process reads."""
        return _Rows(key, self.x, self.y, self.cols, self.params, folder, self.stage)


class _Rows:
    """A grader's rows as its fits need them. Pickled (to a worker process), it carries the name of a file
    holding the arrays, written once, instead of the arrays; each process bins them once (:func:`_binned`)."""

    def __init__(self, key: str, x, y, cols, params, folder: Path | None, stage=None):
        self.key, self.x, self.y, self.cols, self.params, self.path = key, x, y, cols, params, None
        self.stage, self.staged = stage, stage is not None
        if folder is not None:
            self.path = Path(folder) / f"{key}.npz"
            np.savez(self.path, x=x, y=y, **({"stage": stage} if self.staged else {}))

    def __getstate__(self) -> dict:
        return {"key": self.key, "cols": self.cols, "params": self.params, "path": self.path, "staged": self.staged}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, x=None, y=None, stage=None)

    def arrays(self, part: int) -> tuple[np.ndarray, np.ndarray]:
        """The feature values and grades of fit ``part`` (fold k, or ``folds`` for the final fit)."""
        if self.x is None:
            with np.load(self.path) as f:
                self.x, self.y = f["x"], f["y"]
                self.stage = f["stage"] if self.staged else None
        if self.stage is None:
            return self.x, self.y
        return np.hstack([self.x, self.stage[part].astype(self.x.dtype)]), self.y


#: Per process: the binned Dataset of each grader fitted here in the current training run (key -> Dataset).
_BINNED: dict[str, lgb.Dataset] = {}


def _binned(rows: _Rows, part: int) -> tuple[lgb.Dataset, np.ndarray]:
    """The Dataset of fit ``part`` of ``rows`` (binned on its first fit in this process; one for all parts
    without an appearance stage) and its feature values."""
    key = f"{rows.key}:{part}" if rows.staged else rows.key
    if key not in _BINNED:
        run = rows.key.split(":")[0]
        for old in [k for k in _BINNED if not k.startswith(run + ":")]:     # another training run's
            del _BINNED[old]
        x, y = rows.arrays(part)
        # Unweighted: the metric's weights enter through SCORE_OFFSET.
        _BINNED[key] = lgb.Dataset(x, y, feature_name=rows.cols, params=rows.params, free_raw_data=False).construct()
    data = _BINNED[key]
    return data, data.get_data()


def _fit(rows: _Rows, part: int, train: np.ndarray | None, stop: np.ndarray | None, score: np.ndarray | None,
         rounds: int = MAX_ROUNDS, seed: int | None = None):
    """One fit on one LightGBM thread (a pure function of its arguments: where it runs changes nothing).

    ``part``: the fold (or the number of folds for the final fit), which picks the appearance stage's scores.
    With ``stop`` (row indices): a fold's fit on ``train`` rows, early stopping on ``stop``; returns the best
    iteration and the raw scores of the ``score`` rows and of the ``stop`` rows. Without: the fit on all rows
    for ``rounds`` rounds; returns its model text and seconds. ``seed``: LightGBM's seed (default the rows'
    params'); the Dataset is binned once for all seeds (binning draws no sample at these sizes).
    """
    data, x = _binned(rows, part)
    params = rows.params if seed is None else dict(rows.params, seed=int(seed))
    if stop is None:
        t0 = time.perf_counter()
        b = lgb.train(params, data, rounds)
        return b.model_to_string(), time.perf_counter() - t0
    dtr, des = data.subset(train).construct(), data.subset(stop).construct()
    b = lgb.train(params, dtr, MAX_ROUNDS, valid_sets=[des],
                  callbacks=[lgb.early_stopping(EARLY_STOP, verbose=False)])
    it = b.best_iteration
    return it, raw_scores(b, x[score], num_iteration=it), raw_scores(b, x[stop], num_iteration=it)


def raw_scores(booster: lgb.Booster, x: np.ndarray, *, num_iteration: int | None = None,
               offset=SCORE_OFFSET) -> np.ndarray:
    """A grader's raw scores: LightGBM's plus ``offset`` (:data:`SCORE_OFFSET`; a model's manifest keeps its own)."""
    return booster.predict(x, num_iteration=num_iteration, raw_score=True) + np.asarray(offset, float)


def final_rounds(best: list[int]) -> int:
    """Rounds of the fit on all rows: the folds' mean best iteration plus 10 % (it has more rows)."""
    return max(int(np.mean(best) * 1.1), 10)


def _cross_fit(problems: dict, *, final: bool, jobs: int = 1, on_fold=None) -> tuple[dict, dict]:
    """Every fold of every problem, then (with ``final``) each problem's fit on all rows, each once per seed of the
    problem's bag (``problem.seeds``).

    Each fit runs on one LightGBM thread: with ``jobs`` > 1 in ``jobs`` worker processes (joblib's loky), the
    largest problems first and a problem's final fit of a seed as soon as that seed's folds are done; the models
    come back as text. Every fit is the same function of the same arrays wherever it runs, so the models are byte
    for byte the same whatever ``jobs`` is. (Fits at once in threads of one process gave different models in 3 of
    12 repeats.) Returns ``{name: {k: [(best, raw_va, raw_es) per seed]}}`` and ``{name: Bag}`` (its boosters in
    the order of the seeds); ``on_fold(name, k)`` is called as each fold's fits of every seed have finished and as
    the final fits have (``k`` None).
    """
    import tempfile
    import uuid

    run = uuid.uuid4().hex
    folds_done: dict = {name: {} for name in problems}
    texts: dict = {}

    def fold_args(p, rows, k, i):
        tr, es, va = (np.flatnonzero(m) for m in p.masks(k))
        return rows, k, tr, es, va, MAX_ROUNDS, p.seeds[i]

    def final_args(name, rows, i):
        p = problems[name]
        return (rows, p.folds, None, None, None, final_rounds([folds_done[name][(k, i)][0] for k in range(p.folds)]),
                p.seeds[i])

    def seed_done(name, i):
        return all((k, i) in folds_done[name] for k in range(problems[name].folds))

    def done(name, k, i, res):
        n = len(problems[name].seeds)
        if k is None:
            texts[(name, i)] = res
            finished = all((name, j) in texts for j in range(n))
        else:
            folds_done[name][(k, i)] = res
            finished = all((k, j) in folds_done[name] for j in range(n))
        if on_fold is not None and finished:
            on_fold(name, k)

    if jobs <= 1:
        for name, p in problems.items():
            rows = p.rows(f"{run}:{name}", None)
            for i in range(len(p.seeds)):
                for k in range(p.folds):
                    done(name, k, i, _fit(*fold_args(p, rows, k, i)))
                if final:
                    done(name, None, i, _fit(*final_args(name, rows, i)))
        for key in [key for key in _BINNED if key.startswith(run)]:
            del _BINNED[key]
    else:
        from concurrent.futures import FIRST_COMPLETED, wait

        with tempfile.TemporaryDirectory(prefix="spinefeat-fit-") as tmp:
            rows = {name: p.rows(f"{run}:{name}", Path(tmp)) for name, p in problems.items()}
            executor = _pool(jobs)
            pending = {}
            try:
                for name in sorted(problems, key=lambda n: -len(problems[n].y)):
                    for i in range(len(problems[name].seeds)):
                        for k in range(problems[name].folds):
                            fut = executor.submit(_fit, *fold_args(problems[name], rows[name], k, i))
                            pending[fut] = (name, k, i)
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        name, k, i = pending.pop(fut)
                        done(name, k, i, fut.result())
                        if final and k is not None and seed_done(name, i):
                            pending[executor.submit(_fit, *final_args(name, rows[name], i))] = (name, None, i)
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
    boosters: dict = {}
    for name, p in problems.items():
        if (name, 0) not in texts:
            continue
        fits = [texts[(name, i)] for i in range(len(p.seeds))]
        boosters[name] = Bag([lgb.Booster(model_str=text) for text, _ in fits], p.seeds)
        p.final_seconds = sum(seconds for _, seconds in fits)
    per_fold = {name: {k: [d[(k, i)] for i in range(len(problems[name].seeds))] for k in range(problems[name].folds)}
                for name, d in folds_done.items()}
    return per_fold, boosters


def bag_mean(fits: list) -> tuple[list[int], np.ndarray, np.ndarray]:
    """One fold's fits of a bag (``[(best, raw_va, raw_es)]`` per seed, :func:`_cross_fit`) as one grader: each
    seed's best iteration, and the mean over the seeds of the raw scores of the scored and the early-stopping rows."""
    return ([f[0] for f in fits], np.mean([f[1] for f in fits], axis=0), np.mean([f[2] for f in fits], axis=0))


def staged_columns(group: str | None, x: np.ndarray, cols: list[str], y: np.ndarray, fold: np.ndarray, study, *,
                   folds: int, seed: int = 0, jobs: int = 1,
                   deploy: bool = False) -> tuple[np.ndarray, list[str], np.ndarray | None, Appearance | None]:
    """A grader's rows as its trees read them: ``x`` without the appearance stage's inputs (:func:`split_appearance`),
    the trees' column names (with :data:`APPEARANCE_COLUMNS` last when there is a stage, then with ``context``
    :data:`APPEARANCE_CONTEXT_COLUMNS`), the stage's scores of each fit (with their :func:`appearance_context`)
    and, with ``deploy``, the stage fitted on all rows (:func:`appearance_scores`, its fits in ``jobs``
    processes; None without a stage). The one path of ``train`` (:func:`fit`) and ``real-check``
    (:func:`grouped_cv`)."""
    trees, inputs = split_appearance(group, list(cols)) if group else (list(cols), [])
    if not inputs:
        return x, list(cols), None, None
    at = {c: i for i, c in enumerate(cols)}
    stage, deployed = appearance_scores(x[:, [at[c] for c in inputs]], y, fold, np.asarray(study), folds=folds,
                                        inputs=inputs, **stage_options(group), seed=seed, jobs=jobs, deploy=deploy)
    names = trees + list(APPEARANCE_COLUMNS)
    if APPEARANCE[group].get("context"):
        # Each fit's context from its own scores: a study's rows share their fold and inner fold, so their
        # neighbours' scores come from the same stage, fitted without the study.
        where = (x[:, at["context_level_index"]], x[:, at["context_side"]])
        stage = np.stack([np.hstack([s, appearance_context(s, study, *where)]) for s in stage])
        names += APPEARANCE_CONTEXT_COLUMNS
    return x[:, [at[c] for c in trees]], names, stage, deployed


def grouped_cv(x: np.ndarray, y: np.ndarray, fold: np.ndarray, inner, *, cols: list[str], params: dict,
               folds: int, scored: np.ndarray | None = None, group: str | None = None,
               study=None, jobs: int = 1, bag: int | None = None) -> tuple[np.ndarray, list[list[int]]]:
    """Out-of-fold raw scores of the grader (LightGBM, :data:`SCORE_OFFSET` added) in study-grouped folds.

    ``fold`` gives each row's scored fold; ``inner(k)`` the mask of the training rows that stop fold k's
    boosting early (rows of :func:`early_stopping_studies`). Rows with ``scored`` False only ever train.
    The held-out fold is never used to choose anything, so its predictions are honest.
    ``group`` (with ``study``, each row's study): the grader whose appearance stage (:data:`APPEARANCE`) is
    fitted inside each fold when ``cols`` hold its inputs, as :func:`fit` does.
    The trees are averaged over the LightGBM seeds of ``group``'s bag (:data:`BAG`; ``bag`` seeds if given; from
    ``params["seed"]``), as :func:`fit` does: each seed stops early on its own and the fold's raw scores are the
    seeds' mean. Each fold is fitted on one LightGBM thread, the appearance stage's fits in ``jobs`` processes.
    Returns the raw scores (zero on rows never scored) and each fold's best iterations (one per seed).
    """
    seed = params.get("seed", 0)
    x, cols, stage, _ = staged_columns(group, x, cols, y, fold, study, folds=folds, seed=seed, jobs=jobs)
    p = _Problem(x, y, fold, inner, cols=cols, params=dict(params, num_threads=1), folds=folds, scored=scored,
                 stage=stage, seeds=bag_seeds(group, seed, bag))
    res, _ = _cross_fit({"cv": p}, final=False)
    raw = np.zeros((len(y), 3))
    best = []
    for k in range(folds):
        its, raw[p.masks(k)[2]], _ = bag_mean(res["cv"][k])
        best.append(its)
    return raw, best


def fit(features: pd.DataFrame, train: pd.DataFrame, *, folds: int = 5, jobs: int = 1, seed: int = 0,
        augment: pd.DataFrame | None = None, fold_of: dict[int, int] | None = None,
        groups: dict[int, int] | None = None, progress=None) -> dict:
    """Cross-validate and fit the three graders.

    Folds are :func:`stratified_folds` (``StratifiedGroupKFold`` on each study's
    worst grade) unless ``fold_of`` (study -> fold) is given, as the pipeline
    does when it cross-fits the localiser on the same folds. In each fold a
    stratified share of the training studies stops the boosting early and fits
    that fold's temperature and any-severe sharpening; the scored fold chooses
    nothing, so every CV number is one nobody tuned on. The deployed
    temperature and sharpening are fitted on all out-of-fold rows.

    ``augment`` (optional) holds more feature rows of the same studies (for
    example at the label points when ``features`` are at the localiser's
    points): they join the training folds of their studies, never the scored
    out-of-fold rows, so the CV score stays that of ``features``.

    ``groups`` (optional, study -> group): the studies of a group stay on one side of every split (the folds
    and each fold's early-stopping share), as copies of one study must. ``jobs``: fits run at once in that
    many worker processes (the same models for any ``jobs``).

    Returns a dict with ``boosters`` (group -> :class:`Bag` of the boosters fitted on all rows, one per LightGBM
    seed of ``seeds[group]``, :data:`BAG`),
    ``columns``, ``temperature``, ``beta`` (deployed), ``oof`` (nested-calibrated
    submission rows with their ``fold``), ``cv`` (scores per step and how they were obtained) and
    ``priors`` (per-target class frequencies times the weights, the fallback).
    """
    # The rows' keys and grades as a table, their features taken group by group as arrays (a labelled copy of the
    # whole feature table and the groups' copies of it held three times the table).
    labelled = labelled_rows(features, train)
    at = labelled[0]
    rows = training_rows(features, train, columns=ROW_KEYS, labelled=labelled)
    # The augmentation rows take the same route: their keys as a table, their features as arrays by position.
    extra_at = labelled_rows(augment, train) if augment is not None else None
    extra = (training_rows(augment, train, columns=ROW_KEYS, labelled=extra_at) if augment is not None
             else rows.iloc[:0])
    if rows.empty:
        raise SpinefeatError("no feature row has a label: check that the features come from the labelled folder")
    studies = np.array(sorted(rows["study_id"].unique()))
    if len(studies) < folds:
        raise SpinefeatError(f"{len(studies)} labelled studies: need at least {folds} for {folds}-fold CV")
    worst = worst_grades(train)
    given_folds = fold_of is not None
    if fold_of is None:
        fold_of = stratified_folds(studies, worst, folds, seed, groups=groups)
    lost = [int(s) for s in studies if int(s) not in fold_of]
    if lost:
        raise SpinefeatError(f"study {lost[0]} has feature rows but no fold")
    held = early_stopping_studies(studies, fold_of, worst, folds, seed, groups=groups)
    # One LightGBM thread a fit (see _cross_fit): the same models whatever ``jobs`` is.
    out = {"boosters": {}, "columns": {}, "temperature": {}, "rounds": {}, "appearance": {},
           "params": {group: grader_params(group, num_threads=1, seed=seed) for group in MODEL_GROUPS},
           "seeds": {group: bag_seeds(group, seed) for group in MODEL_GROUPS}}
    fold_temperature: dict[str, list[float]] = {}
    oof_parts, spinal_held = [], {}
    t0 = time.perf_counter()
    problems, tables = {}, {}
    for group in MODEL_GROUPS:
        mine = rows["condition"].isin(MODEL_GROUPS[group]).to_numpy()
        g = rows[mine].reset_index(drop=True)
        extra_mine = (extra["condition"].isin(MODEL_GROUPS[group]) & extra["study_id"].isin(fold_of)).to_numpy()
        ga = extra[extra_mine]
        cols = feature_columns(features, group)
        both = pd.concat([g, ga.reindex(columns=g.columns)], ignore_index=True)
        study = both["study_id"].to_numpy()
        y, fold = both["severity"].to_numpy(int), both["study_id"].map(fold_of).to_numpy()
        xg = float32_block(features, at[mine], cols)
        if len(ga):
            xg = np.concatenate([xg, float32_block(augment, extra_at[0][extra_mine], cols)])
        # The deployed stage: fitted on all rows, as each fold's on its training rows.
        x, cols, stage, deployed = staged_columns(group, xg, cols, y, fold, study,
                                                  folds=folds, seed=seed, jobs=jobs, deploy=True)
        del xg
        if deployed is not None:
            out["appearance"][group] = deployed
        problems[group] = _Problem(x, y, fold, lambda k, study=study: np.isin(study, held[k]), cols=cols,
                                   params=out["params"][group], folds=folds, scored=np.arange(len(both)) < len(g),
                                   stage=stage, seeds=out["seeds"][group])
        tables[group] = (g, both)
        out["columns"][group] = cols
    n_steps = len(MODEL_GROUPS) * (folds + 1)
    steps = iter(range(1, n_steps + 1))
    res, boosters = _cross_fit(problems, final=True, jobs=jobs,
                               on_fold=None if progress is None else lambda *_: progress(next(steps), n_steps))
    for group, p in problems.items():
        g, both = tables[group]
        y, main = p.y, p.scored
        raw, temps = np.zeros((len(y), 3)), []
        for k in range(folds):
            # Nested calibration: the fold's temperature from its held-out training studies only.
            _, es, va = p.masks(k)
            _, raw[va], raw_es = bag_mean(res[group][k])
            temps.append(fit_temperature(y[es], raw_es, what=f"{group} temperature (fold {k})"))
            if group == "spinal":
                spinal_held[k] = (both[es], _softmax(raw_es / temps[-1]))
        cal = _softmax(raw / np.asarray(temps)[p.fold][:, None])
        out["boosters"][group] = boosters[group]
        # Each seed's final fit runs its own folds' mean best iteration plus 10 %.
        rounds = [final_rounds([res[group][k][i][0] for k in range(folds)]) for i in range(len(p.seeds))]
        out["rounds"][group] = rounds[0] if len(rounds) == 1 else rounds
        out["temperature"][group] = fit_temperature(y[main], raw[main], what=f"{group} temperature (deployed)")
        fold_temperature[group] = temps
        oof_parts.append((g, raw[main], cal[main], group))
    final_seconds = sum(p.final_seconds for p in problems.values())
    raw_sub = pd.concat([to_submission(g, _softmax(r)) for g, r, _, _ in oof_parts], ignore_index=True)
    cal_sub = pd.concat([to_submission(g, c) for g, _, c, _ in oof_parts], ignore_index=True)
    joined_rows = pd.concat([g[["study_id", "condition", "level", "row_id", "severity"]] for g, *_ in oof_parts],
                            ignore_index=True)
    # Nested sharpening: each fold's studies sharpened with the beta fitted on that fold's held-out training studies.
    fold_beta = [fit_sharpening(*spinal_held[k], what=f"any-severe sharpening (fold {k})") if k in spinal_held
                 else 0.0 for k in range(folds)]
    study_fold = cal_sub["row_id"].str.split("_").str[0].astype(int).map(fold_of).to_numpy()
    final = pd.concat([sharpen_any_severe(cal_sub[study_fold == k], fold_beta[k]) for k in range(folds)])
    final = final.loc[cal_sub.index]
    sp = next(((g, r) for g, r, _, grp in oof_parts if grp == "spinal"), None)
    out["beta"] = fit_sharpening(sp[0], _softmax(sp[1] / out["temperature"]["spinal"]),
                                 what="any-severe sharpening (deployed)") if sp is not None else 0.0

    def scored(sub):
        from .metric import condition_group

        df = joined_rows.merge(sub, on="row_id")
        df["group"] = df["condition"].map(condition_group)
        return score_joined(df)

    priors = _priors(train)
    const = pd.DataFrame([{"row_id": r, **dict(zip(CLASS_COLUMNS, priors[r.split("_", 1)[1]]))}
                          for r in joined_rows["row_id"]])
    out["cv"] = {"raw": scored(raw_sub), "temperature": scored(cal_sub), "sharpened": scored(final),
                 "constant_in_sample": scored(const), "folds": folds, "seconds": time.perf_counter() - t0,
                 "seconds_final_fit": final_seconds,
                 "rows": int(len(joined_rows)), "studies": int(len(studies)),
                 "method": {
                     "folds": (f"{folds} folds given by the caller" if given_folds else
                               f"{folds} folds: StratifiedGroupKFold on each study's worst grade, grouped by study"),
                     "fold_seed": seed, "lightgbm_seed": seed, "lightgbm_seeds": out["seeds"],
                     "seed_averaging": "per grader, one whole fit per LightGBM seed (each fold's own early stop, "
                                       "the final fit's own round count); the grader's raw score is the mean of "
                                       "the seeds' raw scores, before the temperature",
                     "early_stopping": "per fold, a stratified 1/folds share of its training studies "
                                       "(StratifiedGroupKFold, seed fold_seed + 1 + fold); the scored fold chooses "
                                       "nothing",
                     "calibration": "nested: per fold, a temperature per condition group (bounded scalar minimiser "
                                    f"on log T, T in {list(TEMPERATURE_BOUNDS)}) and the any-severe sharpening "
                                    f"(beta in {list(BETA_BOUNDS)}) fitted on that fold's early-stopping studies, "
                                    "then applied to the fold",
                     "deployed_calibration": "temperature and sharpening refitted on all out-of-fold rows",
                     "constant_in_sample": "per-target class frequencies times 1/2/4 of all labelled studies",
                     "fold_temperature": fold_temperature, "fold_beta": fold_beta,
                 }}
    out["oof"] = final.assign(fold=study_fold)
    out["priors"] = priors
    out["fingerprint"] = fingerprint_frame(training_rows(features, train, part=slice(i, i + 4096), labelled=labelled)
                                           for i in range(0, len(at), 4096))
    return out


def _priors(train: pd.DataFrame) -> dict[str, list[float]]:
    """Per-target class frequencies times the weights 1/2/4, normalised (the best constant)."""
    long = labels_long(train)
    long = long[long["severity"] >= 0]
    out = {}
    for t in TARGETS:
        out[t] = prior_proba(long.loc[long["target"] == t, "severity"]).tolist()
    return out


def prior_proba(severity) -> np.ndarray:
    """Class frequencies (add-one) times the weights 1/2/4, normalised: the best constant for these grades."""
    s = np.asarray(severity, dtype=int)
    q = (np.bincount(s, minlength=3) + 1.0) / (len(s) + 3.0) * np.asarray(SEVERITY_WEIGHTS)
    return q / q.sum()


def score_offset(manifest: dict, group: str) -> tuple[float, ...]:
    """The offset a model's raw scores take (:data:`SCORE_OFFSET` at training; none for models trained
    with the weights as sample weights, before it was kept in the manifest)."""
    return tuple(manifest.get("score_offset", {}).get(group, (0.0, 0.0, 0.0)))


@dataclass
class Graders:
    """Loaded, verified models. ``boosters``: each grader's :class:`Bag` (its boosters, one per LightGBM seed; the
    grader's raw score is their mean)."""

    boosters: dict[str, Bag]
    manifest: dict
    #: Each grader's appearance stage (:class:`Appearance`), when it has one.
    appearance: dict[str, Appearance] = field(default_factory=dict)

    def design(self, rows: pd.DataFrame, group: str) -> np.ndarray:
        """The values the ``group`` grader's trees read of ``rows``: its manifest columns, the appearance stage's
        scores (of its input columns) in place of :data:`APPEARANCE_COLUMNS`."""
        cols = self.manifest["columns"][group]
        x = rows.reindex(columns=cols).to_numpy(np.float32)
        stage = self.appearance.get(group)
        if stage is not None:
            at = [cols.index(c) for c in APPEARANCE_COLUMNS]
            x[:, at] = s = stage.score(rows.reindex(columns=stage.inputs).to_numpy(np.float32))
            if APPEARANCE_CONTEXT_COLUMNS[0] in cols:
                at = [cols.index(c) for c in APPEARANCE_CONTEXT_COLUMNS]
                x[:, at] = appearance_context(s, rows["study_id"], rows["context_level_index"], rows["context_side"])
        return x

    def predict(self, features: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """25 rows per study of ``features`` (submission order) and the fallback log.

        Rows without a measured point (``diagnostics_error`` set) fall back to
        the trained priors; the log says which and why, and lists the graded rows whose localised
        point has a confidence under :data:`LOW_POINT_CONFIDENCE`.
        """
        man = self.manifest
        parts, fallback = [], []
        err = features.get("diagnostics_error", pd.Series("", index=features.index)).fillna("")
        for group, booster in self.boosters.items():
            g = features[features["condition"].isin(MODEL_GROUPS[group]) & (err == "")]
            if len(g):
                raw = raw_scores(booster, self.design(g, group), offset=score_offset(man, group))
                parts.append(to_submission(g, _softmax(raw / man["temperature"][group])))
        pred = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["row_id", *CLASS_COLUMNS])
        have = set(pred["row_id"])
        rows = []
        why = dict(zip(features["row_id"], err))
        for study in pd.unique(features["study_id"]):
            for t in TARGETS:
                rid = f"{int(study)}_{t}"
                if rid not in have:
                    rows.append({"row_id": rid, **dict(zip(CLASS_COLUMNS, man["priors"][t]))})
                    fallback.append({"row_id": rid, "reason": why.get(rid) or "no feature row"})
        # Graded rows whose point the localiser placed with little confidence are listed too: their grade
        # may be read at the wrong place.
        conf = features.get("diagnostics_point_confidence", pd.Series(np.nan, index=features.index))
        for rid, c in zip(features["row_id"], conf):
            if rid in have and c < LOW_POINT_CONFIDENCE:
                fallback.append({"row_id": rid, "reason": f"{LOW_CONFIDENCE_REASON} ({c:.2f} < {LOW_POINT_CONFIDENCE})"})
        sub = pd.concat([pred, pd.DataFrame(rows)], ignore_index=True) if rows else pred
        sub = sharpen_any_severe(sub, man["beta"])
        order = [f"{int(s)}_{t}" for s in pd.unique(features["study_id"]) for t in TARGETS]
        sub = sub.set_index("row_id").loc[order].reset_index()
        return sub, pd.DataFrame(fallback, columns=["row_id", "reason"])


#: A localised point under this confidence is listed in predict's fallback log (graded, not replaced).
LOW_POINT_CONFIDENCE = 0.5
LOW_CONFIDENCE_REASON = "graded at a low-confidence point"
#: Files a models folder needs besides the graders, hashed in the manifest when present.
LOCALIZER_FILES = ("localizer.txt", "localizer.json")
#: Fields of the CV summary that are timings: kept out of the manifest (and its fingerprint) in timings.json.
TIMING_FIELDS = ("seconds", "seconds_final_fit")


def _file_entry(path: Path) -> dict:
    return {"file": path.name, "sha256": _sha(path), "bytes": path.stat().st_size}


def save(result: dict, out: Path) -> Path:
    """Write text models, ``manifest.json``, ``oof.csv``, ``cv.json`` and ``timings.json`` into ``out``.

    Each file is written atomically. The manifest hashes every file loading needs: the three
    graders (``models[group]``: one entry for a grader of one booster, ``<group>.txt``; a list of entries, one per
    LightGBM seed, ``<group>_seed<seed>.txt``, for a :class:`Bag`), their appearance stages (``<group>_appearance.json``) and, when they are in ``out``, the
    localiser's ``localizer.txt`` and ``localizer.json``.
    Timings go to ``timings.json`` only, so two runs on the same data write identical models files.
    """
    from .io import write_csv, write_json, write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files, seeds = {}, {}
    for group, b in result["boosters"].items():
        bag = b if isinstance(b, Bag) else Bag([b], [result.get("seeds", {}).get(group, [None])[0]])
        if len(bag) == 1:                   # one booster: <group>.txt, one entry (the layout before bags)
            files[group] = _file_entry(write_text(out / f"{group}.txt", bag.boosters[0].model_to_string()))
        else:                               # a bag: <group>_seed<seed>.txt, a list of entries in the seeds' order
            files[group] = [_file_entry(write_text(out / f"{group}_seed{s}.txt", m.model_to_string()))
                            for s, m in zip(bag.seeds, bag.boosters)]
        seeds[group] = bag.seeds
    stages = {}
    for group, stage in result.get("appearance", {}).items():
        stages[group] = _file_entry(write_json(out / f"{group}_appearance.json", stage.to_json()))
    extra = {name: _file_entry(out / name) for name in LOCALIZER_FILES if (out / name).is_file()}
    cv = {k: v for k, v in result["cv"].items() if k not in TIMING_FIELDS}
    manifest = {
        "spinefeat_version": __version__, "lightgbm_version": lgb.__version__, "classes": list(CLASS_COLUMNS),
        "groups": {g: list(c) for g, c in MODEL_GROUPS.items()}, "columns": result["columns"],
        "models": files, "lightgbm_seeds": seeds, "files": extra, "appearance": stages, "params": result["params"],
        "rounds": result["rounds"],
        "temperature": result["temperature"], "beta": result["beta"], "priors": result["priors"],
        "score_offset": {g: list(SCORE_OFFSET) for g in result["boosters"]},
        "training_fingerprint": result["fingerprint"], "cv": cv,
    }
    write_csv(out / "oof.csv", result["oof"])
    write_json(out / "cv.json", cv)
    write_json(out / "timings.json", {k: result["cv"][k] for k in TIMING_FIELDS if k in result["cv"]})
    # The manifest last: a folder without it is never loaded.
    write_json(out / "manifest.json", manifest)
    return out / "manifest.json"


#: Cache folders kept under a models folder across training runs (their entries are content-keyed).
CACHE_DIRS = ("features.cache", "features_crossfit.cache")


@contextlib.contextmanager
def staged_models_dir(out: Path):
    """Yield a fresh staging folder for a training run; on success swap it in at ``out`` whole.

    A run that fails (or is killed) leaves the old ``out`` as it was; its staging folder is removed
    (a killed run's, by the next run). The per-study caches under ``out`` carry over.
    """
    import os
    import shutil

    from .io import check_output_dir, recover_dir, replace_dir, staging_dir

    out = Path(out)
    check_output_dir(out)
    recover_dir(out)
    for old in out.parent.glob(f".{out.name}.partial-*"):
        try:
            os.kill(int(old.name.split("-")[-2]), 0)     # a run still going: leave its folder alone
        except (ValueError, ProcessLookupError):
            shutil.rmtree(old, ignore_errors=True)
        except PermissionError:
            pass
    work = staging_dir(out)
    try:
        yield work
        for name in CACHE_DIRS:
            if (out / name).is_dir() and not (work / name).exists():
                os.replace(out / name, work / name)
        replace_dir(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


MANIFEST_KEYS = ("models", "columns", "temperature", "beta", "priors", "classes")


def read_manifest(models: Path) -> dict:
    """The parsed ``manifest.json`` of a models folder, with its required keys checked.

    Raises :class:`~spinefeat.errors.ModelError` (never a raw traceback) when it is
    missing, truncated or incomplete.
    """
    from .errors import ModelError

    models = Path(models)
    mpath = models / "manifest.json"
    if not mpath.is_file():
        raise ModelError(f"{models}: no manifest.json (train with `spinefeat train`)")
    try:
        man = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{mpath}: not valid JSON ({type(exc).__name__}: the file is damaged or truncated); "
                         "retrain with `spinefeat train`") from None
    missing = [k for k in MANIFEST_KEYS if not isinstance(man, dict) or k not in man]
    if missing:
        raise ModelError(f"{mpath}: missing {', '.join(missing)}; the folder is from another version or damaged; "
                         "retrain with `spinefeat train`")
    return man


def verified_file(models: Path, info: dict) -> Path:
    """The path of a manifest entry ``{file, sha256[, bytes]}`` after checking it exists and matches."""
    from .errors import ModelError

    models = Path(models)
    name = str(info.get("file", "")) if isinstance(info, dict) else ""
    if not name or Path(name).name != name:
        raise ModelError(f"{models}/manifest.json: bad file entry {name!r}")
    path = models / name
    if not path.is_file():
        raise ModelError(f"{path}: model file missing; retrain with `spinefeat train`")
    if "bytes" in info and path.stat().st_size != info["bytes"]:
        raise ModelError(f"{path}: {path.stat().st_size} bytes, manifest.json says {info['bytes']}: truncated or "
                         "changed after training (file hash does not match); refusing to load")
    if _sha(path) != info.get("sha256"):
        raise ModelError(f"{path}: file hash does not match manifest.json; refusing to load")
    return path


def check_lightgbm_text(path: Path) -> str:
    """The text of a LightGBM model file after checking its structure (header, every tree, the end marker).

    LightGBM trusts ``tree_sizes`` when parsing and can crash the process on a truncated file, so the
    layout is checked here first. Raises :class:`~spinefeat.errors.ModelError`.
    """
    import re

    from .errors import ModelError

    path = Path(path)

    def bad(why: str) -> ModelError:
        return ModelError(f"{path}: not a complete LightGBM text model ({why}); retrain with `spinefeat train`")

    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise bad("not UTF-8 text") from None
    if not text.startswith("tree\n"):
        raise bad("no 'tree' header")
    m = re.search(r"^tree_sizes=([0-9 ]*)$", text, flags=re.M)
    if m is None:
        raise bad("no tree_sizes line")
    sizes = [int(v) for v in m.group(1).split()]
    pos = text.find("Tree=0\n") if sizes else text.find("end of trees")
    if pos < 0:
        raise bad("no trees")
    raw = text.encode("utf-8")
    pos = len(text[:pos].encode("utf-8"))
    for i, n in enumerate(sizes):
        if not raw.startswith(f"Tree={i}\n".encode(), pos):
            raise bad(f"tree {i} is not where tree_sizes says")
        pos += n
    if raw.find(b"end of trees", pos) < 0 or b"end of parameters" not in raw[pos:]:
        raise bad("it ends early")
    return text


def load_booster(path: Path) -> lgb.Booster:
    """A LightGBM booster from a checked text model file (see :func:`check_lightgbm_text`)."""
    return lgb.Booster(model_str=check_lightgbm_text(path))


def load_localizer_files(models: Path) -> tuple[lgb.Booster, dict]:
    """The localiser's detector and its JSON, both checked against the hashes in ``manifest.json``.

    A localiser is only loaded beside the graders it was trained with: a folder whose
    manifest does not hash ``localizer.txt`` and ``localizer.json`` is refused.
    """
    from .errors import ModelError

    models = Path(models)
    if not (models / "localizer.txt").is_file():
        raise ModelError(f"{models}: no localizer (train with `spinefeat train`)")
    files = read_manifest(models).get("files", {})
    missing = [n for n in LOCALIZER_FILES if n not in files]
    if missing:
        raise ModelError(f"{models}/manifest.json does not hash {', '.join(missing)} (an older or unfinished "
                         "training run); retrain with `spinefeat train`")
    detector = load_booster(verified_file(models, files["localizer.txt"]))
    jpath = verified_file(models, files["localizer.json"])
    try:
        meta = json.loads(jpath.read_text(encoding="utf-8"))
        np.asarray(meta["gaps_mm"], float).reshape(-1, 2)
        dict(meta["offsets_mm"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{jpath}: not a localiser description ({type(exc).__name__}); retrain with "
                         "`spinefeat train`") from None
    return detector, meta


def load(models: Path) -> Graders:
    """Load models, refusing any whose file size, hash, structure or feature list disagrees with the manifest.

    Only the manifest's LightGBM text files and JSON are read; nothing else in the folder (a
    pickle, say) is ever opened.
    """
    from .errors import ModelError

    models = Path(models)
    man = read_manifest(models)
    boosters = {}
    for group, info in man["models"].items():
        # One entry (a grader of one booster; every folder before seed averaging) or a list, one per seed.
        entries = info if isinstance(info, list) else [info]
        if not entries:
            raise ModelError(f"{models}/manifest.json: the {group} grader lists no model file; retrain with "
                             "`spinefeat train`")
        bag = []
        for entry in entries:
            path = verified_file(models, entry)
            b = load_booster(path)
            if b.feature_name() != man["columns"].get(group):
                raise ModelError(f"{path}: feature list differs from manifest.json; refusing to load")
            bag.append(b)
        seeds = (man.get("lightgbm_seeds") or {}).get(group)
        if seeds is not None and len(seeds) != len(bag):
            raise ModelError(f"{models}/manifest.json: the {group} grader has {len(bag)} model files and "
                             f"{len(seeds)} LightGBM seeds; refusing to load")
        boosters[group] = Bag(bag, seeds)
    missing = sorted(set(MODEL_GROUPS) - set(boosters))
    if missing:
        raise ModelError(f"{models}/manifest.json: no {', '.join(missing)} model; retrain with `spinefeat train`")
    stages = {}
    for group, info in (man.get("appearance") or {}).items():
        path = verified_file(models, info)
        try:
            stages[group] = Appearance.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{path}: not an appearance stage ({type(exc).__name__}); retrain with "
                             "`spinefeat train`") from None
        if group not in boosters or not set(APPEARANCE_COLUMNS) <= set(man["columns"][group]):
            raise ModelError(f"{path}: the {group} grader does not read an appearance stage; refusing to load")
    for group, cols in man["columns"].items():
        if group in boosters and group not in stages and set(APPEARANCE_COLUMNS) & set(cols):
            raise ModelError(f"{models}/manifest.json: the {group} grader reads an appearance stage the manifest "
                             "does not list; retrain with `spinefeat train`")
    return Graders(boosters, man, stages)
