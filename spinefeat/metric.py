"""The RSNA 2024 lumbar spine challenge metric.

For each group (spinal, foraminal, subarticular): a log loss over the group's
scored rows with one-hot truth and sample weight 1, 2, 4 for a true
Normal/Mild, Moderate, Severe, ``sum(w * -log p_true) / sum(w)``. A fourth
term, ``any_severe_spinal``: per study, truth = any scored spinal level
Severe, prediction = the largest submitted severe probability over its spinal
rows, weight = the largest spinal sample weight of the study; binary log loss.
The score is the plain mean of the four terms. Probabilities are normalised
per row and clipped to ``[EPS, 1 - EPS]`` before the log.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .dataset import CLASS_COLUMNS, SEVERITY_WEIGHTS, labels_long
from .errors import DataError

EPS = 1e-15
GROUPS = ("spinal", "foraminal", "subarticular")
TERMS = GROUPS + ("any_severe_spinal",)


def condition_group(condition: str) -> str:
    """``spinal``, ``foraminal`` or ``subarticular`` for a condition key."""
    for g in GROUPS:
        if g in condition:
            return g
    raise ValueError(condition)


def _normalise(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    s = p.sum(axis=1, keepdims=True)
    if np.any(s <= 0):
        raise DataError("a submission row has probabilities summing to zero")
    return np.clip(p / s, EPS, 1 - EPS)


def weighted_log_loss(severity: np.ndarray, proba: np.ndarray) -> float:
    """Challenge log loss of integer grades (0/1/2) against (n, 3) probabilities."""
    severity = np.asarray(severity, dtype=int)
    p = _normalise(proba)
    w = np.asarray(SEVERITY_WEIGHTS)[severity]
    return float(np.sum(w * -np.log(p[np.arange(len(p)), severity])) / np.sum(w))


def join(labels: pd.DataFrame, submission: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Scored rows with their predictions.

    ``labels`` is :func:`spinefeat.dataset.labels_long` output; ``submission``
    has ``row_id`` and the three class columns. Returns the joined frame and
    the number of scored rows that have no prediction (left out).
    """
    scored = labels[labels["severity"] >= 0]
    merged = scored.merge(submission[["row_id", *CLASS_COLUMNS]], on="row_id", how="left")
    missing = int(merged["normal_mild"].isna().sum())
    merged = merged.dropna(subset=list(CLASS_COLUMNS)).reset_index(drop=True)
    merged["group"] = merged["condition"].map(condition_group)
    return merged, missing


def score_joined(df: pd.DataFrame) -> dict[str, float]:
    """The four terms and ``score`` for joined rows (see :func:`join`)."""
    out: dict[str, float] = {}
    for g in GROUPS:
        sub = df[df["group"] == g]
        out[g] = weighted_log_loss(sub["severity"].to_numpy(), sub[list(CLASS_COLUMNS)].to_numpy()) if len(sub) \
            else float("nan")
    sp = df[df["group"] == "spinal"].copy()
    if len(sp):
        sp["p_severe"] = _normalise(sp[list(CLASS_COLUMNS)].to_numpy())[:, 2]
        sp["w"] = np.asarray(SEVERITY_WEIGHTS)[sp["severity"].to_numpy()]
        per = sp.groupby("study_id").agg(truth=("severity", lambda s: int((s == 2).any())),
                                          pred=("p_severe", "max"), w=("w", "max"))
        p = np.clip(per["pred"].to_numpy(), EPS, 1 - EPS)
        y = per["truth"].to_numpy()
        w = per["w"].to_numpy()
        out["any_severe_spinal"] = float(np.sum(w * -(y * np.log(p) + (1 - y) * np.log(1 - p))) / np.sum(w))
    else:
        out["any_severe_spinal"] = float("nan")
    out["score"] = float(np.nanmean([out[t] for t in TERMS]))
    return out


def score(train: pd.DataFrame, submission: pd.DataFrame, *, allow_missing: bool = False) -> dict[str, float]:
    """Score a submission against wide train labels (``read_train`` output).

    Raises :class:`DataError` when scored rows have no prediction, unless
    ``allow_missing`` (then they are left out and counted in ``n_missing``).
    """
    df, missing = join(labels_long(train), submission)
    if missing and not allow_missing:
        raise DataError(f"{missing} scored rows have no prediction in the submission (allow_missing to skip them)")
    out = score_joined(df)
    out["n_scored"] = len(df)
    out["n_missing"] = missing
    return out


def breakdown(train: pd.DataFrame, submission: pd.DataFrame, by: str) -> pd.DataFrame:
    """Weighted log loss per ``level`` or per ``condition`` (rows, loss)."""
    if by not in ("level", "condition"):
        raise ValueError("by must be 'level' or 'condition'")
    df, _ = join(labels_long(train), submission)
    rows = []
    for key, sub in df.groupby(by, sort=False):
        rows.append({by: key, "rows": len(sub),
                     "log_loss": weighted_log_loss(sub["severity"].to_numpy(), sub[list(CLASS_COLUMNS)].to_numpy())})
    return pd.DataFrame(rows)


def constant_submission(train: pd.DataFrame, study_ids, *, weighted: bool = True) -> pd.DataFrame:
    """Per-target class frequencies of ``train`` (times the weights 1/2/4 when ``weighted``) for every study.

    With ``weighted`` this is the best constant predictor of the metric.
    """
    long = labels_long(train)
    long = long[long["severity"] >= 0]
    freq = long.groupby("target")["severity"].apply(lambda s: np.bincount(s, minlength=3) / len(s))
    rows = []
    for study in study_ids:
        for target, p in freq.items():
            q = p * np.asarray(SEVERITY_WEIGHTS) if weighted else p
            q = q / q.sum()
            rows.append({"row_id": f"{int(study)}_{target}", **dict(zip(CLASS_COLUMNS, q))})
    return pd.DataFrame(rows)
