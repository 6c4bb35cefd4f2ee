"""The pipeline: where points come from (labels or the localiser), and training for `train` and `demo`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .dataset import DataFolder
from .extract import extract, points_from_labels
from .io import write_parquet
from .errors import SpinefeatError
from .localize import COORD_COLUMNS, Localizer, localize_study, train_localizers
from .models import fit, save, staged_models_dir, stratified_folds, worst_grades


_LOADED: dict[str, Localizer] = {}      # per worker process: the localiser last received


_LOADED: dict[str, Localizer] = {}      # per worker process: the localiser last received


class LocalisedPoints:
    """A point source for extraction: the localiser run on each study's own decoded images.

    ``extract(root, LocalisedPoints(loc), ...)`` localises and measures every study on one decoding of its
    series (the predict path); ``fingerprint`` keys the feature cache by the localiser.
    """

    def __init__(self, localizer: Localizer):
        self.localizer = localizer
        self.fingerprint = f"localizer {localizer.fingerprint}"
        self._state = None

    # Sent to a worker with every study: the detector's text is made once here and parsed once per worker
    # process (pickling a Booster would rebuild its text for each study, 3 MB and tens of ms each time).
    def __getstate__(self) -> dict:
        if self._state is None:
            loc = self.localizer
            self._state = {"fingerprint": self.fingerprint, "detector": loc.detector.model_to_string(),
                           "rest": {k: v for k, v in vars(loc).items() if k != "detector"}}
        return self._state

    def __setstate__(self, state: dict) -> None:
        import lightgbm as lgb

        self.fingerprint, self._state = state["fingerprint"], None
        if state["fingerprint"] not in _LOADED:
            _LOADED.clear()
            _LOADED[state["fingerprint"]] = Localizer(detector=lgb.Booster(model_str=state["detector"]),
                                                      **state["rest"])
        self.localizer = _LOADED[state["fingerprint"]]

    def __call__(self, images) -> tuple[pd.DataFrame, list[str]]:
        rows, why = localize_study(self.localizer, images.folder.root, images.split, images.study_id, images.series,
                                   images=images)
        return pd.DataFrame(rows, columns=COORD_COLUMNS), why


def train_all(data: Path, out: Path, *, folds: int = 5, jobs: int = 1, seed: int = 0, points: str = "both",
              label_features: pd.DataFrame | None = None, step=None, scheduler=None, spider: Path | None = None) -> dict:
    """Learn the localiser and the graders from a labelled folder; write them to ``out``.

    ``points``: ``labels`` fits the graders at the label points; ``both``
    (default) fits them at the points the localiser finds on the training
    studies, as at test time, with the label-point rows as augmentation, and
    reports CV at the localised points. Those points are cross-fitted: each
    fold's studies are localised (and measured, on one decoding) by a localiser
    learnt on the other folds, the graders' CV folds; the saved localiser learns
    from every study. ``step(name, done, total)`` reports progress. Feature
    tables are cached under ``out``. With ``scheduler`` (a Dask scheduler address)
    the extractions run on that cluster. With ``spider`` (a SPIDER folder) the
    localisers' disc detector also learns from its real sagittal T2 and disc masks.
    """
    out = Path(out)
    # Everything is built in a staging folder and swapped in at the end: a killed run leaves the old
    # models folder intact; the per-study caches (content-keyed) stay under OUT so a rerun resumes.
    with staged_models_dir(out) as work:
        folder = DataFolder(data)
        report = step or (lambda *a: None)
        train = folder.train()
        labels = points_from_labels(folder)
        if label_features is None:
            label_features = extract(data, labels, split="train", cache=out / "features.cache", jobs=jobs,
                                     scheduler=scheduler, progress=lambda n, t: report("extracting at the label points", n, t))
        write_parquet(work / "train_features.parquet", label_features)
        labelled = sorted(int(s) for s in set(label_features["study_id"]) & set(train.index))
        if len(labelled) < folds:
            raise SpinefeatError(f"{len(labelled)} labelled studies: need at least {folds} for {folds}-fold CV")
        fold_of = stratified_folds(labelled, worst_grades(train), folds, seed)
        loc, fold_locs = train_localizers(data, labels, folds=fold_of if points == "both" else None, spider=spider,
                                          jobs=jobs, progress=lambda n, t: report("learning the localisers", n, t))
        loc.save(work)
        augment = None
        features = label_features
        if points == "both":
            parts = []
            for k, loc_k in fold_locs.items():
                ids = [s for s in labelled if fold_of[s] == k]
                what = f"localising and extracting fold {k + 1}/{folds} with the other folds' localiser"
                parts.append(extract(data, LocalisedPoints(loc_k), split="train", studies=ids,
                                     cache=out / "features_crossfit.cache" / str(k), jobs=jobs, scheduler=scheduler,
                                     progress=lambda n, t, what=what: report(what, n, t)))
            features = pd.concat(parts, ignore_index=True).sort_values(["study_id", "condition", "level"])
            write_parquet(work / "train_features_localised.parquet", features)
            augment = label_features
        result = fit(features, train, folds=folds, jobs=jobs, seed=seed, augment=augment, fold_of=fold_of,
                     progress=lambda n, t: report("fitting graders", n, t))
        method = result["cv"]["method"]
        method["folds"] = (f"{folds} folds: StratifiedGroupKFold on each study's worst grade, grouped by study "
                           "(shared by the localisers and the graders)")
        method["points"] = ("localised: each fold's studies localised and measured by a localiser learnt on the "
                            "other folds (cross-fitted); label-point rows of the training folds as augmentation"
                            if points == "both" else "the label points")
        result["cv"]["points"] = points
        save(result, work)
    return result
