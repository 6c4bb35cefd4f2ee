"""Why a grade: global gain importance and per-prediction LightGBM contributions, in the registry's units."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .dataset import CLASS_COLUMNS
from .features import REGISTRY
from .features import texture  # noqa: F401  (registers the texture family)
from .models import MODEL_GROUPS, Graders, _softmax, score_offset


def _describe(name: str) -> tuple[str, str]:
    f = REGISTRY.get(name)
    return (f.definition, f.unit) if f else ("", "")


def global_importance(graders: Graders, *, top: int | None = None) -> pd.DataFrame:
    """Gain importance per model, normalised to sum to 1, with definitions and units."""
    rows = []
    for group, b in graders.boosters.items():
        gain = b.feature_importance("gain")
        total = gain.sum() or 1.0
        for name, g in sorted(zip(b.feature_name(), gain), key=lambda t: -t[1])[:top]:
            d, u = _describe(name)
            rows.append({"group": group, "feature": name, "gain_share": float(g / total), "unit": u, "definition": d})
    return pd.DataFrame(rows)


def contributions(graders: Graders, rows: pd.DataFrame, group: str) -> tuple[np.ndarray, list[str]]:
    """Per-prediction contributions, shape ``(n, 3, features + 1)``; the last column is the expected value.

    For each row and class, the contributions plus the expected value sum to
    LightGBM's raw score (pre-softmax, pre-temperature; the grader adds its
    :func:`~spinefeat.models.score_offset`). A grader averaged over LightGBM seeds
    (:class:`~spinefeat.models.Bag`) gives the mean of its boosters' contributions, which sum to the mean
    raw score it grades with.
    """
    b = graders.boosters[group]
    cols = graders.manifest["columns"][group]
    c = b.predict(graders.design(rows, group), pred_contrib=True)
    return np.asarray(c).reshape(len(rows), 3, len(cols) + 1), cols


def explain_study(graders: Graders, features: pd.DataFrame, study_id: int, *, top: int = 3) -> pd.DataFrame:
    """Each target of a study: probabilities, the grade, and the top features pushing towards that grade.

    ``drivers`` lists ``(feature, value, unit, contribution)`` sorted by the
    size of the contribution to the predicted class's raw score (positive =
    towards that grade).
    """
    f = features[features["study_id"] == int(study_id)]
    err = f.get("diagnostics_error", pd.Series("", index=f.index)).fillna("")
    out = []
    for group in graders.boosters:
        g = f[f["condition"].isin(MODEL_GROUPS[group]) & (err == "")]
        if g.empty:
            continue
        contrib, cols = contributions(graders, g, group)
        values = graders.design(g, group)      # the appearance stage's scores among them
        raw = contrib.sum(axis=2) + np.asarray(score_offset(graders.manifest, group))
        proba = _softmax(raw / graders.manifest["temperature"][group])
        for i, (_, rec) in enumerate(g.iterrows()):
            k = int(np.argmax(proba[i]))
            c = contrib[i, k, :-1]
            order = np.argsort(-np.abs(c))[:top]
            drivers = [(cols[j], float(values[i, j]), _describe(cols[j])[1], float(c[j])) for j in order]
            out.append({"row_id": rec["row_id"], "condition": rec["condition"], "level": rec["level"],
                        **dict(zip(CLASS_COLUMNS, proba[i])), "grade": CLASS_COLUMNS[k], "drivers": drivers})
    return pd.DataFrame(out)
