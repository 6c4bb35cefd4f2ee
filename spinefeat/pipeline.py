"""The pipeline: where points come from (labels or the localiser), and training for `train` and `demo`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .dataset import DataFolder
from .extract import extract, points_from_labels
from .io import write_csv, write_parquet
from .localize import COORD_COLUMNS, Localizer, localize, localize_study, train_localizer
from .models import fit, save, staged_models_dir


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
    reports CV at the localised points. ``step(name, done, total)`` reports
    progress. Feature tables are cached under ``out``. With ``scheduler`` (a Dask scheduler address) the
    extractions and the localisation of the training studies run on that cluster. With ``spider`` (a
    SPIDER folder) the localiser's disc detector also learns from its real sagittal T2 and disc masks.
    """
    out = Path(out)
    # Everything is built in a staging folder and swapped in at the end: a killed run leaves the old
    # models folder intact; the per-study caches (content-keyed) stay under OUT so a rerun resumes.
    with staged_models_dir(out) as work:
        folder = DataFolder(data)
        report = step or (lambda *a: None)
        labels = points_from_labels(folder)
        if label_features is None:
            label_features = extract(data, labels, split="train", cache=out / "features.cache", jobs=jobs,
                                     scheduler=scheduler, progress=lambda n, t: report("extracting at the label points", n, t))
        write_parquet(work / "train_features.parquet", label_features)
        loc = train_localizer(data, labels, spider=spider, jobs=jobs,
                              progress=lambda n, t: report("learning the localiser", n, t))
        loc.save(work)
        augment = None
        features = label_features
        if points == "both":
            found, _ = localize(loc, data, split="train", jobs=jobs, scheduler=scheduler,
                                progress=lambda n, t: report("localising the training studies", n, t))
            write_csv(work / "train_points_localised.csv", found)
            features = extract(data, found, split="train", cache=out / "features_localised.cache", jobs=jobs,
                               scheduler=scheduler, progress=lambda n, t: report("extracting at the localised points", n, t))
            write_parquet(work / "train_features_localised.parquet", features)
            augment = label_features
        result = fit(features, folder.train(), folds=folds, jobs=jobs, seed=seed, augment=augment,
                     progress=lambda n, t: report("fitting graders", n, t))
        result["cv"]["points"] = points
        save(result, work)
    return result
