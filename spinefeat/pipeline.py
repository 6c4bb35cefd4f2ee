"""The pipeline the commands run: where points come from (labels, a CSV or the localiser), the features at
them, training (cross-fitted localiser and graders), prediction, explanation, scoring, the localisation
check, the cohort report and the demo, which goes through the same functions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .dataset import DataFolder
from .errors import SpinefeatError
from .extract import extract, points_from_labels
from .io import write_parquet
from .localize import COORD_COLUMNS, Localizer, localize_study, train_localizers
from .models import fit, save, staged_models_dir, stratified_folds, worst_grades


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
        extra = None
        if spider is not None:
            from .spider import spider_training

            extra = spider_training(spider)
        loc, fold_locs = train_localizers(data, labels, folds=fold_of if points == "both" else None, extra=extra,
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


def load_localizer(models: Path | None) -> Localizer:
    """The localiser saved with the models; a usage error when no models folder was given."""
    if models is None:
        from .errors import UsageError

        raise UsageError("finding the points needs the localiser: give --models (or --coords FILE)")
    return Localizer.load(models)


def given_points(data: Path, coords: str, split: str) -> pd.DataFrame:
    """Points given, not found: ``labels`` (the train split's label coordinates) or a coordinate-file CSV."""
    from .dataset import read_coordinates

    if coords == "labels":
        if split != "train":
            from .errors import UsageError

            raise UsageError("only the train split has label coordinates: give --coords FILE or use the "
                             "localiser (--coords predicted with --models)")
        return points_from_labels(DataFolder(data))
    return read_coordinates(Path(coords))


def points_at(data: Path, coords: str | None, split: str, *, models: Path | None = None, jobs: int = 1,
              scheduler=None, progress=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The points ``coords`` names and the points that could not be placed: ``labels``, a points CSV (none
    missing), or ``predicted``/None (the localiser saved in ``models`` run on every study of the split;
    ``progress(done, total)``)."""
    if coords in (None, "predicted"):
        from .localize import localize

        return localize(load_localizer(models), data, split=split, jobs=jobs, scheduler=scheduler, progress=progress)
    return given_points(data, coords, split), pd.DataFrame(columns=["study_id", "reason"])


def features_at(data: Path, coords: str | None, split: str, *, models: Path | None, cache: Path, jobs: int = 1,
                overlays: Path | None = None, studies: list[int] | None = None, scheduler=None,
                progress=None) -> pd.DataFrame:
    """Feature rows at the points ``coords`` names (:func:`point_source`)."""
    return extract(data, point_source(data, coords, split, models=models), split=split, cache=cache, jobs=jobs,
                   overlays=overlays, studies=studies, scheduler=scheduler, progress=progress)


def predict(data: Path, models: Path, *, split: str = "test", coords: str | None = None, cache: Path,
            jobs: int = 1, overlays: Path | None = None, scheduler=None,
            progress=None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The submission of a split graded by the models in ``models`` at the points ``coords`` names
    (:func:`features_at`): ``(submission, fallback, features)``; ``fallback`` lists the rows graded by the
    priors or at low-confidence points, with the reason."""
    from .models import load

    graders = load(models)
    feats = features_at(data, coords, split, models=models, cache=cache, jobs=jobs, overlays=overlays,
                        scheduler=scheduler, progress=progress)
    sub, fallback = graders.predict(feats)
    return sub, fallback, feats


def point_source(data: Path, coords: str | None, split: str, *, models: Path | None):
    """What extraction measures at: ``labels`` or a points CSV (a point table), or ``predicted``/None (the
    localiser saved in ``models``, run on each study's own decoding: :class:`LocalisedPoints`)."""
    if coords in (None, "predicted"):
        return LocalisedPoints(load_localizer(models))
    return given_points(data, coords, split)


def explain(data: Path, models: Path, study: int, *, split: str = "test", coords: str | None = None,
            overlays: Path | None = None, top: int = 3) -> pd.DataFrame:
    """One study's grades with the features that drove them (:func:`spinefeat.explain.explain_study`), measured
    at the points ``coords`` names (:func:`point_source`; the localiser runs on this study only); the
    measured regions drawn under ``overlays``."""
    from .explain import explain_study
    from .extract import add_relative_features, extract_study
    from .models import load

    graders = load(models)
    points = point_source(data, coords, split, models=models)
    feats = add_relative_features(extract_study(data, split, study, DataFolder(data).series(split), points,
                                                overlays=overlays))
    return explain_study(graders, feats, study, top=top)


def evaluate(submission: Path, labels: Path, *, by: str | None = None,
             allow_missing: bool = False) -> tuple[dict, pd.DataFrame | None]:
    """A submission CSV scored against a train.csv with the challenge metric: the terms (and counts of
    scored and skipped rows), and with ``by`` (``level`` or ``condition``) the log loss broken down."""
    from .dataset import read_submission, read_train
    from .metric import breakdown, score

    train, sub = read_train(labels), read_submission(submission)
    res = score(train, sub, allow_missing=allow_missing)
    return res, (breakdown(train, sub, by) if by is not None else None)


def check_localisation(data: Path, predicted: Path, truth: Path, *, split: str = "test") -> dict:
    """Localisation error of the points in ``predicted`` against those in ``truth`` (coordinate-file CSVs of
    studies of ``data``): ``errors`` (one row per true point with a prediction), ``summary`` (per condition),
    ``overall`` (fractions within 5 and 6 mm, on a wrong level, study counts, the confidence's AUC for an
    error over 6 mm), ``worst_studies`` (by largest error, worst first), and the two point tables read."""
    from .dataset import read_coordinates
    from .errors import DataError
    from .localize import confidence_auc, point_errors, summarize_errors

    pred, true = read_coordinates(predicted), read_coordinates(truth)
    err = point_errors(data, pred, true, split=split)
    if err.empty:
        raise DataError(f"{predicted} and {truth}: no true point has a predicted point of the same study and target "
                        f"in the {split} split (check the files and --split)")
    overall = {"within_5_mm": float((err.error_mm <= 5).mean()), "within_6_mm": float((err.error_mm <= 6).mean()),
               "wrong_level": float(err.wrong_level.mean()), "studies": int(err.study_id.nunique()),
               "studies_with_a_wrong_level": int(err.groupby("study_id")["wrong_level"].any().sum()),
               "confidence_auc_over_6_mm": confidence_auc(err), "points_over_6_mm": int((err.error_mm > 6).sum())}
    worst = err.groupby("study_id")["error_mm"].max().sort_values(ascending=False).index
    return {"errors": err, "summary": summarize_errors(err), "overall": overall,
            "worst_studies": [int(s) for s in worst], "predicted": pred, "truth": true}


def read_parquet_table(path: Path) -> pd.DataFrame:
    """A parquet table (a feature table ...), or a :class:`DataError` naming the file."""
    from .errors import DataError

    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable parquet table ({type(exc).__name__})") from None


def read_csv_table(path: Path, what: str) -> pd.DataFrame:
    """A CSV the code wrote itself (oof.csv ...), or a :class:`DataError` naming it and what to do."""
    from .errors import DataError

    if not Path(path).is_file():
        raise DataError(f"{path}: no {what} (train with `spinefeat train`)")
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable {what} ({type(exc).__name__})") from None


def write_cohort_report(models: Path, data: Path, out: Path, *, features: pd.DataFrame | None = None,
                        studies: int = 3, overlays: Path | None = None, test_scores: dict | None = None,
                        test_scores_true: dict | None = None, title: str = "spinefeat report") -> Path:
    """The HTML report of trained models: their out-of-fold CV on ``data`` and a page for each of the first
    ``studies`` studies of ``features`` (default: the models' training table at the label points)."""
    from .explain import explain_study, global_importance
    from .models import load
    from .report import write_report

    graders = load(models)
    oof = read_csv_table(Path(models) / "oof.csv", "out-of-fold predictions (oof.csv)")
    path = Path(models) / "train_features.parquet"
    if features is None and path.is_file():
        features = read_parquet_table(path)
    pages = {}
    if features is not None:
        for sid in list(dict.fromkeys(features["study_id"]))[:studies]:
            pages[int(sid)] = explain_study(graders, features, sid)
    return write_report(out, manifest=graders.manifest, oof=oof, train=DataFolder(data).train(),
                        importance=global_importance(graders), studies=pages, overlays=overlays,
                        test_scores=test_scores, test_scores_true=test_scores_true, title=title)


def demo(out: Path, report_dir: Path, *, studies: int = 50, test_studies: int = 20, jobs: int = 2, seed: int = 0,
         folds: int = 5, step=None) -> dict:
    """The whole path on a synthetic cohort through the functions the commands run: synth, train_all,
    features at the localiser's points (one decoding per study, as `predict`) and at the true points,
    grading, the metric and write_cohort_report.

    ``out/cohort`` must be new or empty. Writes the cohort, models, ``submission.csv`` and ``demo.json``
    under ``out`` and the report under ``report_dir``; returns the summary with the CV table under ``cv``.
    """
    import time

    from .dataset import read_train
    from .io import write_csv, write_json
    from .metric import score
    from .synth import synth_cohort

    report = step or (lambda *a: None)
    t0 = time.perf_counter()
    out = Path(out)
    cohort, models = out / "cohort", out / "models"
    synth_cohort(cohort, studies=studies, test_studies=test_studies, seed=seed, jobs=jobs,
                 progress=lambda n: report("1/5 synthesising studies", n, studies + test_studies))
    result = train_all(cohort, models, folds=folds, jobs=jobs, seed=seed,
                       step=lambda name, n, t: report(f"2/5 training: {name}", n, t))
    test_labels = read_train(cohort / "truth" / "test_labels.csv")
    overlays = out / "overlays"
    sub, _, feats = predict(cohort, models, split="test", cache=out / "test_features.cache", jobs=jobs,
                            overlays=overlays, progress=lambda n, t: report("3/5 localising and grading the "
                                                                             "held-out studies", n, t))
    write_csv(out / "submission.csv", sub)
    scores = score(test_labels, sub)
    sub_true, _, _ = predict(cohort, models, split="test", coords=str(cohort / "truth" / "test_label_coordinates.csv"),
                             cache=out / "test_true_points.cache", jobs=jobs,
                             progress=lambda n, t: report("4/5 grading them at their true points", n, t))
    scores_true = score(test_labels, sub_true)
    report("5/5 explaining and writing the report", 0, 1)
    index = write_cohort_report(models, cohort, report_dir, features=feats, overlays=overlays,
                                test_scores={"points": "predicted", **{k: float(v) for k, v in scores.items()}},
                                test_scores_true={"points": "true", **{k: float(v) for k, v in scores_true.items()}},
                                title="spinefeat demo (synthetic cohort)")
    cv = result["cv"]
    summary = {"cv_score": cv["sharpened"]["score"], "cv_constant_in_sample": cv["constant_in_sample"]["score"],
               "test_score_predicted_points": scores["score"], "test_score_true_points": scores_true["score"],
               "test_studies": len(sub) // 25, "wall_seconds": time.perf_counter() - t0, "report": str(index)}
    write_json(out / "demo.json", summary)
    return {**summary, "cv": cv}
