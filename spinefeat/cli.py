"""The `spinefeat` command line: one command per stage; parsing, progress and exit codes only."""

from __future__ import annotations

import logging
from enum import Enum
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from . import __version__
from .errors import SpinefeatError

# Tracebacks with local variables could print pixel data or header values.
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False, no_args_is_help=True,
                  help="Grade lumbar spine MRI (RSNA 2024 layout) with classical features and LightGBM.")
console = Console(stderr=True)

#: Exit codes (README "Exit codes").
EXIT_OK = 0
EXIT_FAILED_STUDIES = 1     # a batch finished but some studies failed, and --strict was given
EXIT_USAGE = 2              # bad option value, missing option, output path that cannot be written
EXIT_DATA = 3               # bad input data or models, or an output that could not be written
EXIT_INTERNAL = 4           # a bug: an error spinefeat does not expect
EXIT_INTERRUPTED = 130      # Ctrl-C
SPLITS = ("train", "test")
_state = {"verbose": False}


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def _exit_code(exc: Exception) -> int:
    from .errors import UsageError

    return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_DATA


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
    raise typer.Exit(_exit_code(exc))


def _stop_workers() -> None:
    """Kill the joblib/loky worker processes (Ctrl-C would otherwise leave them running their tasks)."""
    try:
        from joblib.externals.loky import reusable_executor
    except ImportError:
        return
    executor = reusable_executor._executor
    if executor is not None:
        executor.shutdown(wait=False, kill_workers=True)


def _guarded(fn):
    """Run a command with every failure turned into a one-line message and its exit code (no traceback:
    locals could hold patient data)."""
    import functools

    from typer.exceptions import TyperException

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except SpinefeatError as exc:
            _fail(exc)
        except KeyboardInterrupt:
            _stop_workers()
            console.print("[yellow]interrupted[/yellow]: finished studies are kept in the cache; rerun to resume")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except OSError as exc:
            from .io import describe_os_error

            where = f" {exc.filename}" if exc.filename else ""
            _fail(SpinefeatError(f"cannot read or write{where}: {describe_os_error(exc)}"))
        except MemoryError:
            _fail(SpinefeatError("out of memory; use fewer --jobs or a smaller input"))
        except Exception as exc:  # noqa: BLE001  (a bug: say so, briefly)
            if _state["verbose"]:
                console.print_exception(show_locals=False)
            console.print(f"[red]internal error:[/red] {type(exc).__name__}: {exc} (a bug in spinefeat; rerun with "
                          "--verbose for where it happened)", highlight=False)
            raise typer.Exit(EXIT_INTERNAL) from None

    return run


def command(*args, **kwargs):
    """``app.command`` for a command whose failures end in a clear message and exit code."""
    def deco(fn):
        return app.command(*args, **kwargs)(_guarded(fn))
    return deco


def _split(value: str) -> str:
    if value not in SPLITS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(SPLITS)}")
    return value


def _failed_studies(df) -> list[int]:
    """Studies with a row whose error is more than a missing label point."""
    err = df["diagnostics_error"].fillna("")
    bad = (err != "") & (err != "no point")
    return sorted(int(s) for s in df.loc[bad, "study_id"].unique())


def _batch_exit(failed: int, total: int, strict: bool, what: str = "studies") -> None:
    if failed:
        console.print(f"[yellow]{failed} of {total} {what} failed[/yellow] (see diagnostics_error)"
                      + ("" if strict else "; --strict makes this exit 1"))
        if strict:
            raise typer.Exit(EXIT_FAILED_STUDIES)


class Points(str, Enum):
    labels = "labels"
    both = "both"


class By(str, Enum):
    level = "level"
    condition = "condition"


#: ``--scheduler``: the same option on every batch command.
Scheduler = Annotated[Optional[str], typer.Option(
    help="Address of a Dask scheduler (tcp://host:8786): run the per-study work on its cluster (needs "
         "spinefeat[dask]; workers read DATA by the same path).")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"spinefeat {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log library messages.")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """spinefeat: CPU-only grading of degenerative lumbar spine conditions."""
    _state["verbose"] = verbose
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the cohort into (Kaggle layout).")],
    studies: Annotated[int, typer.Option(min=1, help="Labelled (train) studies.")] = 20,
    test_studies: Annotated[int, typer.Option(min=0, help="Unlabelled (test) studies; truth goes to truth/.")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same cohort.")] = 0,
    jobs: Annotated[int, typer.Option(min=1, help="Studies rendered in parallel.")] = 1,
    previews: Annotated[int, typer.Option(min=0, help="Write a PNG of the first N studies to OUT/preview.png.")] = 0,
) -> None:
    """Write a synthetic cohort of phantom studies as real DICOM files, with labels and a truth sidecar."""
    from .io import check_output_dir
    from .synth import synth_cohort

    check_output_dir(out)
    if out.exists() and any(out.iterdir()):
        console.print(f"[red]error:[/red] {out} exists and is not empty; choose a new folder")
        raise typer.Exit(EXIT_USAGE)
    t0 = time.perf_counter()
    total = studies + test_studies
    with _progress() as prog:
        task = prog.add_task("synthesising studies", total=total)
        summary = synth_cohort(out, studies=studies, test_studies=test_studies, seed=seed, jobs=jobs,
                               progress=lambda n: prog.update(task, completed=n))
    if previews:
        from .report import write_preview

        console.print(f"preview: {write_preview([out], out / 'preview.png', studies=previews)}")
    wall = time.perf_counter() - t0
    console.print(f"wrote {total} studies to {out} in {wall:.1f} s "
                  f"({summary['seconds_per_study_mean']:.2f} s per study on one core, jobs={jobs})")


@command()
def index(
    data: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Folder in the Kaggle layout.")],
    out: Annotated[Optional[Path], typer.Option(help="Instance table (parquet); default DATA/index.parquet.")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Series scanned in parallel.")] = 1,
    strict: Annotated[bool, typer.Option(help="Exit 1 when any file could not be read.")] = False,
) -> None:
    """Scan every DICOM header (no pixels) into an instance table and a per-series summary."""
    from .dataset import index_folder
    from .io import check_output_file, write_csv, write_parquet

    out = check_output_file(out or data / "index.parquet")
    series_out = check_output_file(out.with_name(out.stem + "_series.csv"))
    with _progress() as prog:
        task = prog.add_task("scanning headers", total=None)
        inst, series = index_folder(data, jobs=jobs, progress=lambda n: prog.update(task, completed=n))
    write_parquet(out, inst)
    write_csv(series_out, series)
    n_err = int((inst["error"] != "").sum())
    console.print(f"{len(inst)} instances in {len(series)} series of {series['study_id'].nunique()} studies "
                  f"-> {out}, {series_out}" + (f"; [yellow]{n_err} unreadable files[/yellow]" if n_err else ""))
    planes = series.groupby(["series_description", "plane"]).size().reset_index(name="series")
    console.print(planes.to_string(index=False))
    irregular = series[~series["spacing_regular"].astype(bool)] if "spacing_regular" in series else series.iloc[:0]
    if len(irregular):
        console.print(f"[yellow]{len(irregular)} series with irregular spacing, missing or duplicate slices[/yellow]")
    _batch_exit(n_err, len(inst), strict, "files")


@command()
def preview(
    data: Annotated[list[Path], typer.Argument(exists=True, file_okay=False, help="One or more Kaggle-layout folders.")],
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("reports/preview.png"),
    studies: Annotated[int, typer.Option(min=1, help="Studies per folder.")] = 1,
) -> None:
    """Write slices of each series type of the first studies of each folder into one PNG (rows by series type)."""
    from .io import check_output_file
    from .report import write_preview

    check_output_file(out)
    console.print(f"wrote {write_preview(data, out, studies=studies)}")


@command()
def extract(
    data: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Folder in the Kaggle layout.")],
    out: Annotated[Path, typer.Option(help="Feature table (parquet).")] = Path("features.parquet"),
    coords: Annotated[str, typer.Option(help="'labels' (train_label_coordinates.csv), 'predicted' (the localiser, "
                                              "with --models) or a CSV of the same columns.")] = "labels",
    models_dir: Annotated[Optional[Path], typer.Option("--models", exists=True, file_okay=False,
                                                       help="Models folder holding the localiser.")] = None,
    split: Annotated[str, typer.Option(callback=_split, help="Which split's studies: train or test.")] = "train",
    jobs: Annotated[int, typer.Option(min=1, help="Studies in parallel.")] = 1,
    cache: Annotated[Optional[Path], typer.Option(help="Per-study cache folder; default OUT.cache/.")] = None,
    overlays: Annotated[Optional[Path], typer.Option(help="Write a PNG per point with the measured regions here.")] = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 when any study failed (errors other than a missing label).")] = False,
    scheduler: Scheduler = None,
) -> None:
    """Segment the regions around every point and write one feature row per (study, condition, level)."""
    from .io import check_output_dir, check_output_file, write_parquet

    check_output_file(out)
    cache = check_output_dir(cache or out.with_suffix(".cache"))
    if overlays is not None:
        check_output_dir(overlays)
    df = _features(data, coords, split, models=models_dir, cache=cache, jobs=jobs, overlays=overlays,
                   scheduler=scheduler)
    write_parquet(out, df)
    errors = df["diagnostics_error"].fillna("")
    no_point = errors.str.startswith("no point")
    console.print(f"{len(df)} rows of {df['study_id'].nunique()} studies -> {out}; "
                  f"{int(no_point.sum())} without a point, "
                  f"{int(((errors != '') & ~no_point).sum())} with errors; "
                  f"{df.groupby('study_id')['diagnostics_seconds'].first().mean():.2f} s per study")
    _batch_exit(len(_failed_studies(df)), df["study_id"].nunique(), strict)


def _points(data: Path, coords: Optional[str], split: str, *, models: Optional[Path] = None, jobs: int = 1,
            scheduler: Optional[str] = None):
    """:func:`spinefeat.pipeline.points_at` with a progress bar while the localiser runs, and a word on the
    points it could not place."""
    from .pipeline import points_at

    if coords not in (None, "predicted"):
        return points_at(data, coords, split)[0]
    with _progress() as prog:
        task = prog.add_task(f"localising {split} studies", total=None)
        pts, missing = points_at(data, coords, split, models=models, jobs=jobs, scheduler=scheduler,
                                 progress=lambda n, t: prog.update(task, completed=n, total=t))
    doubtful = missing.reason.astype(str).str.startswith("levels: ")     # placed, but counted from a doubtful sacrum
    if (~doubtful).any():
        console.print(f"[yellow]{int((~doubtful).sum())} points could not be placed[/yellow] "
                      f"(e.g. {missing.reason[~doubtful].iloc[0]})")
    if doubtful.any():
        console.print(f"[yellow]{missing.study_id[doubtful].nunique()} studies with a doubtful level count[/yellow], "
                      f"their points at low confidence (e.g. {missing.reason[doubtful].iloc[0]})")
    return pts


def _extracting(coords: Optional[str], split: str) -> str:
    return f"{'localising and ' if coords in (None, 'predicted') else ''}extracting {split} studies"


def _features(data: Path, coords: Optional[str], split: str, *, models: Optional[Path], cache: Path, jobs: int,
              overlays=None, scheduler: Optional[str] = None):
    """:func:`spinefeat.pipeline.features_at` with a progress bar."""
    from .pipeline import features_at

    with _progress() as prog:
        task = prog.add_task(_extracting(coords, split), total=None)
        return features_at(data, coords, split, models=models, cache=cache, jobs=jobs, overlays=overlays,
                           scheduler=scheduler, progress=lambda n, t: prog.update(task, completed=n, total=t))


def _print_cv(cv: dict) -> None:
    from rich.table import Table

    from .metric import TERMS

    t = Table("step", *TERMS, "score", title=f"{cv['folds']}-fold CV over {cv['studies']} studies ({cv['rows']} rows)")
    for step in ("constant_in_sample", "raw", "temperature", "sharpened"):
        t.add_row(step, *(f"{cv[step][k]:.4f}" for k in (*TERMS, "score")))
    console.print(t)


@command()
def train(
    data: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Labelled folder in the Kaggle layout.")],
    out: Annotated[Path, typer.Option(help="Models folder to write.")] = Path("models"),
    folds: Annotated[int, typer.Option(min=2, help="Study-grouped CV folds.")] = 5,
    jobs: Annotated[int, typer.Option(min=1, help="Studies extracted in parallel; graders fitted in parallel.")] = 1,
    features_path: Annotated[Optional[Path], typer.Option("--features", exists=True, dir_okay=False,
                                                          help="Feature table at the label points (skips that extraction).")] = None,
    seed: Annotated[int, typer.Option(help="Fold assignment and LightGBM seed.")] = 0,
    points: Annotated[Points, typer.Option(help="Fit the graders at the label points only, or also at the points the "
                                                "localiser finds (as at test time; CV is then scored there).")] = "both",
    scheduler: Scheduler = None,
    spider: Annotated[Optional[Path], typer.Option(exists=True, file_okay=False,
                      help="A SPIDER folder (real_spider/ layout): the disc detector learns from it too.")] = None,
) -> None:
    """Learn the localiser and fit the three graders with cross-validation (features cached under OUT).

    The models folder is built under a temporary name and swapped in when complete: an interrupted
    run leaves the previous folder as it was, and a rerun resumes from the cached features.
    """
    from .io import check_output_dir
    from .pipeline import read_parquet_table, train_all

    check_output_dir(out)
    label_features = read_parquet_table(features_path) if features_path is not None else None
    with _progress() as prog:
        task = prog.add_task("training", total=None)
        result = train_all(data, out, folds=folds, jobs=jobs, seed=seed, points=points.value,
                           label_features=label_features, scheduler=scheduler, spider=spider,
                           step=lambda name, n, t: prog.update(task, description=name, completed=n, total=t))
    _print_cv(result["cv"])
    console.print(f"models -> {out} (graders fit in {result['cv']['seconds']:.1f} s)")


@command()
def predict(
    data: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Folder in the Kaggle layout.")],
    models_dir: Annotated[Path, typer.Option("--models", exists=True, file_okay=False, help="Trained models folder.")],
    out: Annotated[Path, typer.Option(help="Submission CSV to write.")] = Path("submission.csv"),
    split: Annotated[str, typer.Option(callback=_split, help="test (unlabelled studies) or train.")] = "test",
    coords: Annotated[Optional[str], typer.Option(help="Default: the localiser finds the points. Or a points CSV "
                                                        "(train_label_coordinates columns), or 'labels' (train split).")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Studies in parallel.")] = 1,
    cache: Annotated[Optional[Path], typer.Option(help="Per-study feature cache; default OUT.cache/.")] = None,
    scheduler: Scheduler = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 when any study failed (rows fell back to the priors).")] = False,
) -> None:
    """Write a challenge submission: 25 rows per study, priors where a point or series is missing."""
    from .io import check_output_dir, check_output_file, write_csv
    from .models import LOW_CONFIDENCE_REASON
    from .pipeline import predict as run_predict

    check_output_file(out)
    fb_path = check_output_file(out.with_name(out.stem + ".fallback.csv"))
    cache = check_output_dir(cache or out.with_suffix(".cache"))
    with _progress() as prog:
        task = prog.add_task(_extracting(coords, split), total=None)
        sub, fallback, feats = run_predict(data, models_dir, split=split, coords=coords, cache=cache, jobs=jobs,
                                           scheduler=scheduler,
                                           progress=lambda n, t: prog.update(task, completed=n, total=t))
    write_csv(out, sub)
    write_csv(fb_path, fallback)
    low = fallback["reason"].str.startswith(LOW_CONFIDENCE_REASON)
    console.print(f"{len(sub)} rows for {len(sub) // 25} studies -> {out}; {int((~low).sum())} rows fell back to the "
                  f"trained priors, {int(low.sum())} graded at low-confidence points (listed in {fb_path})")
    _batch_exit(len(_failed_studies(feats)), feats["study_id"].nunique(), strict)


@command()
def bench(
    data: Annotated[list[Path], typer.Argument(exists=True, file_okay=False, help="One or more Kaggle-layout folders.")],
    models_dir: Annotated[Optional[Path], typer.Option("--models", exists=True, file_okay=False,
                                                       help="Trained models: localisation and grading are timed too.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Split whose studies are timed (default: test if present, else train).")] = None,
    coords: Annotated[Optional[str], typer.Option(help="Points CSV or 'labels'; default: the models' localiser finds them.")] = None,
    studies: Annotated[int, typer.Option(min=1, help="Studies timed per folder.")] = 10,
    repeats: Annotated[int, typer.Option(min=1, help="Repeats per timing (medians are reported).")] = 3,
    workers: Annotated[int, typer.Option(min=0, help="Extract throughput with 1..N workers (0: skip).")] = 2,
    throughput_studies: Annotated[int, typer.Option(min=2, help="Studies in the throughput run (a smaller folder is "
                                                                 "replicated by symlinks).")] = 8,
    train_features: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False,
                                                           help="Feature table to bootstrap for the training timing.")] = None,
    train_labels: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False,
                                                         help="train.csv for the training timing (default: the first "
                                                              "folder's).")] = None,
    train_studies: Annotated[int, typer.Option(min=10, help="Studies' rows for the training timing.")] = 2000,
    jobs: Annotated[int, typer.Option(min=1, help="Graders fitted in parallel for the training timing.")] = 2,
    out_dir: Annotated[Path, typer.Option(help="Where NAME.md and NAME.json go.")] = Path("reports/benchmarks"),
    name: Annotated[Optional[list[str]], typer.Option(help="Report name per folder (default: the folder's name).")] = None,
) -> None:
    """Where the time goes: per-stage medians and p90s, the predict path against the decode floor, throughput
    with 1 and 2 workers, start-up, training time and peak memory. Markdown + JSON per folder."""
    from . import bench as b
    from .io import check_output_dir

    check_output_dir(out_dir)
    names = list(name or [])
    if names and len(names) != len(data):
        console.print("[red]error:[/red] give one --name per folder")
        raise typer.Exit(EXIT_USAGE)
    graders = found = None
    if models_dir is not None:
        from .models import load
        from .pipeline import LocalisedPoints, load_localizer

        graders = load(models_dir)
        if coords is None:
            found = LocalisedPoints(load_localizer(models_dir))
    for i, root in enumerate(data):
        with _progress() as prog:
            task = prog.add_task(f"bench {root.name}", total=None)
            res = b.bench_folder(root, points=found, coords=coords, split=split, graders=graders, studies=studies,
                                 repeats=repeats, workers=tuple(range(1, workers + 1)),
                                 throughput_studies=throughput_studies, startup=i == 0,
                                 train_features=train_features if i == 0 else None, train_labels=train_labels,
                                 train_studies=train_studies, jobs=jobs,
                                 progress=lambda text: prog.update(task, description=f"{root.name}: {text}"))
        md, js = b.write(res, out_dir, names[i] if names else root.name)
        typer.echo(md.read_text())
        console.print(f"-> {md}, {js}")


def _print_explanation(table) -> None:
    from rich.table import Table

    from .report import drivers_text

    t = Table("target", "grade", "N/M", "Mod", "Sev", "top drivers (value unit, push)")
    for rec in table.itertuples():
        drivers = drivers_text(rec.drivers)
        t.add_row(f"{rec.condition} {rec.level}", rec.grade, f"{rec.normal_mild:.2f}", f"{rec.moderate:.2f}",
                  f"{rec.severe:.2f}", drivers)
    Console().print(t)


@command()
def explain(
    data: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Folder in the Kaggle layout.")],
    models_dir: Annotated[Path, typer.Option("--models", exists=True, file_okay=False, help="Trained models folder.")],
    study: Annotated[int, typer.Option(help="Study id to explain.")],
    split: Annotated[str, typer.Option(callback=_split, help="Split holding the study.")] = "test",
    coords: Annotated[Optional[str], typer.Option(help="Points CSV; 'labels' for the train split.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for the overlays of the measured regions.")] = Path("explain"),
    top: Annotated[int, typer.Option(min=1, help="Drivers shown per target.")] = 3,
) -> None:
    """Each target's grade with the features that drove it (values in units) and overlays of what was measured."""
    from .io import check_output_dir
    from .pipeline import explain as explain_one

    check_output_dir(out)
    table = explain_one(data, models_dir, study, split=split, coords=coords, overlays=out / "overlays", top=top)
    if table.empty:
        _fail(SpinefeatError(f"study {study}: no point was measured (check --split and --coords)"))
    _print_explanation(table)
    console.print(f"overlays -> {out / 'overlays'}")


@command()
def report(
    models_dir: Annotated[Path, typer.Option("--models", exists=True, file_okay=False, help="Trained models folder.")],
    data: Annotated[Path, typer.Option(exists=True, file_okay=False, help="The labelled folder the models learned from.")],
    name: Annotated[str, typer.Option(help="Report folder name under --root.")] = "cohort",
    root: Annotated[Path, typer.Option(help="Where reports go.")] = Path("reports"),
    studies: Annotated[int, typer.Option(min=0, help="Study pages (first studies of the training table).")] = 3,
    overlays: Annotated[Optional[Path], typer.Option(exists=True, file_okay=False, help="Overlays from extract.")] = None,
) -> None:
    """Write a static HTML report: cohort page (metric, confusion, calibration, importance) and study pages."""
    from .io import check_output_dir, inside
    from .pipeline import write_cohort_report

    check_output_dir(inside(root, name))
    index = write_cohort_report(models_dir, data, root / name, studies=studies, overlays=overlays)
    console.print(f"report -> {index}")


@command()
def demo(
    out: Annotated[Path, typer.Option(help="Working folder (cohort, models, submission).")] = Path("demo"),
    studies: Annotated[int, typer.Option(min=10, help="Training studies to synthesise.")] = 50,
    test_studies: Annotated[int, typer.Option(min=1, help="Held-out test studies.")] = 20,
    jobs: Annotated[int, typer.Option(min=1, help="Parallel studies / threads.")] = 2,
    seed: Annotated[int, typer.Option(help="Cohort seed.")] = 0,
    report_dir: Annotated[Path, typer.Option(help="Where the HTML report goes.")] = Path("reports/demo"),
) -> None:
    """Synthesise a cohort, train with CV, localise, predict and score the held-out part, explain, write the report.

    The held-out studies are graded at the points the localiser finds; the score
    at their true points is shown beside it.
    """
    from .io import check_output_dir
    from .pipeline import demo as run_demo

    check_output_dir(out)
    check_output_dir(report_dir)
    if (out / "cohort").exists() and any((out / "cohort").iterdir()):
        console.print(f"[red]error:[/red] {out / 'cohort'} exists and is not empty; choose a new --out")
        raise typer.Exit(EXIT_USAGE)
    with _progress() as prog:
        task = prog.add_task("demo", total=None)
        res = run_demo(out, report_dir, studies=studies, test_studies=test_studies, jobs=jobs, seed=seed,
                       step=lambda name, n, t: prog.update(task, description=name, completed=n, total=t))
    _print_cv(res["cv"])
    console.print(f"[bold]CV score {res['cv_score']:.3f}[/bold] (best constant {res['cv_constant_in_sample']:.3f}); "
                  f"held-out score {res['test_score_predicted_points']:.3f} at localised points, "
                  f"{res['test_score_true_points']:.3f} at true points ({res['test_studies']} studies: a small, noisy "
                  f"sample); {res['wall_seconds']:.0f} s in all\nreport -> {res['report']}")


@command()
def localize(
    data: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Folder in the Kaggle layout.")],
    models_dir: Annotated[Path, typer.Option("--models", exists=True, file_okay=False, help="Models with the localiser.")],
    out: Annotated[Path, typer.Option(help="Points CSV (train_label_coordinates columns + confidence).")] = Path("coords.csv"),
    split: Annotated[str, typer.Option(callback=_split, help="Split whose studies are localised.")] = "test",
    jobs: Annotated[int, typer.Option(min=1, help="Studies in parallel.")] = 1,
    overlays: Annotated[Optional[Path], typer.Option(help="Write a PNG of each study's points here.")] = None,
    scheduler: Scheduler = None,
) -> None:
    """Find the 25 points of every study without labels."""
    import time as _t

    from .io import check_output_dir, check_output_file, write_csv

    check_output_file(out)
    if overlays is not None:
        check_output_dir(overlays)
    t0 = _t.perf_counter()
    pts = _points(data, "predicted", split, models=models_dir, jobs=jobs, scheduler=scheduler)
    write_csv(out, pts)
    n = pts["study_id"].nunique()
    console.print(f"{len(pts)} points for {n} studies -> {out} ({(_t.perf_counter() - t0) / max(n, 1):.2f} s per study, "
                  f"jobs={jobs})")
    if overlays is not None:
        from .report import write_point_sheets

        written = write_point_sheets(data, pts, overlays, split=split)
        console.print(f"point overlays of {len(written)} studies -> {overlays}")


@command("check-localize")
def check_localize(
    predicted: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Points from `spinefeat localize`.")],
    truth: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="True points (coordinate-file layout).")],
    data: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="The folder both refer to.")],
    split: Annotated[str, typer.Option(callback=_split, help="Split of the studies.")] = "test",
    out: Annotated[Optional[Path], typer.Option(help="Write the per-point errors here (CSV).")] = None,
    overlays: Annotated[Optional[Path], typer.Option(help="Write PNGs of predicted (red) and true (green) points here.")] = None,
    studies: Annotated[int, typer.Option(min=1, help="Studies drawn with --overlays (worst first).")] = 6,
) -> None:
    """Localisation error against true points: mm, wrong level, wrong slice."""
    from .io import check_output_dir, check_output_file, write_csv
    from .pipeline import check_localisation

    if out is not None:
        check_output_file(out)
    if overlays is not None:
        check_output_dir(overlays)
    res = check_localisation(data, predicted, truth, split=split)
    if out is not None:
        write_csv(out, res["errors"])
    typer.echo(res["summary"].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    o = res["overall"]
    typer.echo(f"all points: within 5 mm {o['within_5_mm']:.3f}, within 6 mm {o['within_6_mm']:.3f}, "
               f"wrong level {o['wrong_level']:.4f}, studies {o['studies']}, studies with a point on "
               f"a wrong level {o['studies_with_a_wrong_level']}; AUC of the confidence for an error over 6 mm "
               f"{o['confidence_auc_over_6_mm']:.3f} ({o['points_over_6_mm']} such points)")
    if overlays is not None:
        from .report import write_point_sheets

        pred, worst = res["predicted"], res["worst_studies"][:studies]
        written = write_point_sheets(data, pred[pred["study_id"].isin(worst)], overlays, split=split,
                                     truth=res["truth"])
        console.print(f"point overlays of {len(written)} studies (largest errors) -> {overlays}")


@command()
def features() -> None:
    """Print the feature registry: name, unit, definition."""
    from rich.table import Table

    from .features import table
    from .features import axial, profile, texture  # noqa: F401  (register their families)

    t = Table("name", "unit", "definition")
    for row in table():
        t.add_row(*row)
    Console().print(t)


@command("check-synth")
def check_synth(
    features_path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Feature table of a synthetic cohort.")],
    data: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="The cohort folder (with truth/).")],
) -> None:
    """Measurement accuracy and grade separation against a synthetic cohort's truth sidecar."""
    from .pipeline import read_csv_table, read_parquet_table
    from .report import synth_accuracy

    errs, seps = synth_accuracy(read_parquet_table(features_path),
                                read_csv_table(data / "truth" / "targets.csv", "truth sidecar (truth/targets.csv)"))
    fmt = {"float_format": lambda v: f"{v:.3f}"}
    typer.echo(errs.to_string(index=False, **fmt))
    typer.echo("")
    typer.echo(seps.to_string(index=False, **fmt))


@command()
def validate(
    data: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Folder in the Kaggle layout.")],
    images: Annotated[bool, typer.Option(help="Also check that every described series has DICOM files.")] = True,
) -> None:
    """Check the CSVs of a Kaggle-layout folder and their cross-references."""
    from .dataset import DataFolder

    counts = DataFolder(data).validate(check_images=images)
    console.print(", ".join(f"{k}={v}" for k, v in counts.items()))


@command()
def evaluate(
    submission: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Submission CSV (row_id + 3 classes).")],
    labels: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="train.csv with the true grades.")],
    by: Annotated[Optional[By], typer.Option(help="Also break the log loss down by level or condition.")] = None,
    allow_missing: Annotated[bool, typer.Option(help="Skip scored rows that have no prediction instead of failing.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Write the terms as JSON here.")] = None,
) -> None:
    """Score a submission with the challenge metric (three weighted log losses + any_severe_spinal)."""
    from .io import check_output_file, write_json
    from .metric import TERMS
    from .pipeline import evaluate as score_file

    if out is not None:
        check_output_file(out)
    res, by_table = score_file(submission, labels, by=by.value if by is not None else None,
                               allow_missing=allow_missing)
    for t in TERMS:
        typer.echo(f"{t:>18s}  {res[t]:.4f}")
    typer.echo(f"{'score':>18s}  {res['score']:.4f}   ({res['n_scored']} scored rows"
               + (f", {res['n_missing']} without prediction skipped)" if res["n_missing"] else ")"))
    if by_table is not None:
        typer.echo(by_table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if out is not None:
        write_json(out, res)       # a term without scored rows is NaN: written as null (JSON has no NaN)



@command("real-check")
def real_check(
    sagittal_t1: Annotated[Optional[Path], typer.Option("--sagittal-t1", file_okay=False,
                           help="A folder in the layout of real_rsna/sagittal_t1_slices (points.csv, images/).")] = None,
    axial_t2: Annotated[Optional[Path], typer.Option("--axial-t2", file_okay=False,
                        help="A folder in the layout of real_rsna/axial_t2_crops (crops.csv, points.csv, "
                             "spinal_grades.csv, images/).")] = None,
    spider: Annotated[Optional[Path], typer.Option(file_okay=False,
                      help="A folder in the layout of real_spider/ (localisation check).")] = None,
    peer: Annotated[Optional[list[Path]], typer.Option(exists=True, dir_okay=False,
                    help="Submission CSVs of a peer, averaged per row_id and scored on the same rows; the CSVs "
                         "after it are taken too, so `--peer DIR/*.csv` works.")] = None,
    more_peer: Annotated[Optional[list[Path]], typer.Argument(exists=True, dir_okay=False, show_default=False,
                         metavar="[CSV]...", help="More peer submission CSVs (follow --peer).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for real_check.json, real_check.md and the feature tables.")] =
        Path("reports/real_check"),
    jobs: Annotated[int, typer.Option(min=1, help="Series measured in parallel; LightGBM threads.")] = 1,
    overlays: Annotated[int, typer.Option(min=0, help="Draw the N rows of each term with the largest "
                                                      "out-of-fold loss to OUT/worst_<term>.png.")] = 0,
    phantom: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False,
                       help="Feature table (extract) of a phantom cohort: draw the same measurements on real "
                            "images and phantoms side by side to OUT/real_vs_phantom.png.")] = None,
) -> None:
    """Measure real images at their labelled points with the project's segmenters and score its graders
    in study-grouped 5-fold CV against the best constant, a raw-patch yardstick and a peer."""
    from . import realcheck

    if more_peer and not peer:
        console.print(f"[red]error:[/red] unexpected argument {more_peer[0]} (peer CSVs follow --peer)")
        raise typer.Exit(EXIT_USAGE)
    peer = [*(peer or []), *(more_peer or [])]
    if sagittal_t1 is None and axial_t2 is None and spider is None:
        console.print("[red]error:[/red] give at least one of --sagittal-t1, --axial-t2, --spider")
        raise typer.Exit(EXIT_USAGE)
    if spider is not None and not realcheck.SPIDER_CHECKS:
        console.print("[yellow]--spider: the SPIDER localisation check is not available in this version; "
                      "skipping it[/yellow]")
        spider = None
        if sagittal_t1 is None and axial_t2 is None:
            raise typer.Exit(EXIT_USAGE)
    for opt, folder in (("--sagittal-t1", sagittal_t1), ("--axial-t2", axial_t2), ("--spider", spider)):
        if folder is not None and not folder.is_dir():
            console.print(f"[red]error:[/red] {opt} {folder}: no such folder")
            raise typer.Exit(EXIT_DATA)
    try:
        with _progress() as prog:
            tasks = {}

            def progress(label, done, total):
                if label not in tasks:
                    tasks[label] = prog.add_task(label, total=total)
                prog.update(tasks[label], completed=done, total=total)

            res = realcheck.real_check(sagittal_t1=sagittal_t1, axial_t2=axial_t2, spider=spider,
                                       peer_files=peer, out=out, jobs=jobs,
                                       overlays=overlays, phantom=phantom, progress=progress)
    except SpinefeatError as exc:
        _fail(exc)
    typer.echo(realcheck.markdown_table(res))
    console.print(f"{res['run']['seconds']['total']:.0f} s; wrote {out / 'real_check.json'} and "
                  f"{out / 'real_check.md'}")
