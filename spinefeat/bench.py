"""Where the time goes: per-stage times of the predict path, the decode floor, throughput, memory, start-up, training.

Numbers, not assertions: `spinefeat bench` prints them and writes markdown +
JSON under ``reports/benchmarks/``. Every time is a median over repeats (the
machines are shared and noisy); per-study figures are then summarised by their
median and 90th percentile over the studies.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .dataset import DataFolder
from .errors import SpinefeatError
from .io import write_json, write_text

_NO_POINTS = pd.DataFrame(columns=["study_id", "condition", "level"])

#: The per-study stages, in path order (``header_scan`` reads headers only, as `spinefeat index` does).
STAGES = ("header_scan", "decode", "localisation", "segmentation_features", "grading")


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _descendants() -> list[int]:
    """Live descendant process ids of this process (Linux /proc; empty elsewhere)."""
    out, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                kids = [int(k) for k in (task / "children").read_text().split()]
                out.extend(kids)
                todo.extend(kids)
        except OSError:
            pass
    return out


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (Linux /proc)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def _children_peak_mb() -> float:
    """Largest peak resident memory among this process's live descendants (MB; Linux /proc, else 0).

    Read from each worker's own VmHWM: RUSAGE_CHILDREN would count a forked child's copy of the parent."""
    peak = 0.0
    for pid in _descendants():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024.0)
        except OSError:
            pass
    return peak


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


class _Clock:
    """Wall and CPU seconds of consecutive steps (CPU time tells a loaded machine's queueing from work)."""

    def __init__(self):
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self._t = None

    def start(self):
        self._t = (time.perf_counter(), time.process_time())

    def stop(self, name: str):
        w, c = self._t
        self.wall.setdefault(name, []).append(time.perf_counter() - w)
        self.cpu.setdefault(name, []).append(time.process_time() - c)


def _summary(values) -> dict:
    v = np.asarray(list(values), float)
    return {"median": float(np.median(v)), "p90": float(np.percentile(v, 90)), "n": int(len(v))}


def decode_plugins(path: Path) -> list[str]:
    """pydicom's decoding plugins installed for the transfer syntax of ``path`` (empty: uncompressed)."""
    import pydicom
    from pydicom.pixels import get_decoder

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_compressed:
        return []
    return sorted(get_decoder(syntax).available_plugins)


def decode_floor(files: list[Path], *, repeats: int) -> tuple[float, float, str]:
    """Wall and CPU seconds to read and decode ``files`` the fastest way installed (medians over repeats), and
    its name.

    The floor is just ``dcmread`` + the pixel array, nothing else: what no pipeline on these files can beat
    without skipping slices. The candidates are each of pydicom's decoding plugins for the files' transfer
    syntax (its ``pixel_array`` function, which skips the Dataset property's caching) and spinefeat's own
    route to the pixels (uncompressed little-endian data read with numpy, RLE Lossless frames handed to
    pylibjpeg-rle's frame decoder directly, anything else through pydicom), which skips pydicom's per-file
    decoder set-up; the fastest is the floor."""
    import pydicom
    from pydicom.pixels import pixel_array

    from .dicom import _pixel_array

    routes = [(plugin or "native (uncompressed)", lambda ds, f, p=plugin: pixel_array(ds, decoding_plugin=p))
              for plugin in decode_plugins(files[0]) or [""]]
    routes.append(("spinefeat's route", _pixel_array))
    best = (float("inf"), float("inf"), "")
    for name, decode in routes:
        clock = _Clock()
        for _ in range(repeats):
            clock.start()
            for f in files:
                decode(pydicom.dcmread(f), f)
            clock.stop("floor")
        best = min(best, (float(np.median(clock.wall["floor"])), float(np.median(clock.cpu["floor"])), name))
    return best


def time_study_stages(root: Path, split: str, study_id: int, series: pd.DataFrame, points, *, graders=None,
                      repeats: int = 3) -> dict:
    """One study's stage times (median over ``repeats``), the whole predict path and the decode floor.

    ``points``: a point table, or a point source such as :class:`~spinefeat.pipeline.LocalisedPoints` (then
    localisation is timed). The stages run one after the other on one decoding of the study (as the predict
    path shares it); the whole path is then timed on its own from the files, as `spinefeat predict` runs it on
    one worker.
    """
    from .dicom import scan_series
    from .extract import add_relative_features, extract_study
    from .images import StudyImages

    folder = DataFolder(root)
    study_dir = folder.images_dir(split) / str(study_id)
    ser = series[series["study_id"] == study_id]
    dirs = [study_dir / str(s) for s in ser["series_id"]]
    files = sorted(f for d in dirs for f in d.glob("*.dcm"))
    rec: dict = {"study_id": int(study_id), "instances": len(files),
                 "transfer_syntax": _syntax_name(files[0]) if files else ""}
    clock = _Clock()
    feats = None
    for _ in range(repeats):
        clock.start()
        for d in dirs:
            scan_series(d)
        clock.stop("header_scan")     # what `spinefeat index` does; the predict path reads each file once

        images = StudyImages(folder, split, study_id, series)
        clock.start()
        for s in ser["series_id"]:
            images.stacks(int(s))
        clock.stop("decode")

        pts = points
        clock.start()
        if callable(points):
            try:
                pts, _ = points(images)
            except SpinefeatError as exc:     # timed all the same; the study's rows record it
                pts, rec["localisation_error"] = None, str(exc)
        clock.stop("localisation")

        clock.start()
        feats = add_relative_features(extract_study(root, split, study_id, series,
                                                    pts if pts is not None else _NO_POINTS, images=images))
        clock.stop("segmentation_features")

        clock.start()
        if graders is not None:
            graders.predict(feats)
        clock.stop("grading")

        clock.start()
        try:
            whole = add_relative_features(extract_study(root, split, study_id, series, points))
            if graders is not None:
                graders.predict(whole)
        except SpinefeatError:
            pass
        clock.stop("predict_path")
    for s in (*STAGES, "predict_path"):
        rec[f"{s}_s"] = float(np.median(clock.wall[s]))
        rec[f"{s}_cpu_s"] = float(np.median(clock.cpu[s]))
    rec["decode_floor_s"], rec["decode_floor_cpu_s"], rec["decode_floor_plugin"] = decode_floor(files, repeats=repeats)
    rec["predict_over_floor"] = rec["predict_path_s"] / rec["decode_floor_s"]
    rec["predict_over_floor_cpu"] = rec["predict_path_cpu_s"] / rec["decode_floor_cpu_s"]
    rec["points_measured"] = int((feats["diagnostics_error"].fillna("") == "").sum())
    return rec


def _syntax_name(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.name)


def _replicated(root: Path, split: str, ids: list[int], n: int, tmp: Path) -> tuple[Path, list[int]]:
    """A folder of ``n`` studies made of symlinks to ``ids`` under new study ids (throughput on a 1-study folder)."""
    src = DataFolder(root)
    series = src.series(split)
    rows, new_ids = [], []
    (tmp / f"{split}_images").mkdir(parents=True)
    for i in range(n):
        sid = ids[i % len(ids)]
        new = 10 ** 9 + i
        # The target resolved: a relative folder (`bench ../data`) would point the link at a path relative to tmp.
        (tmp / f"{split}_images" / str(new)).symlink_to((src.images_dir(split) / str(sid)).resolve(),
                                                          target_is_directory=True)
        rows.append(series[series["study_id"] == sid].assign(study_id=new))
        new_ids.append(new)
    pd.concat(rows).to_csv(tmp / f"{split}_series_descriptions.csv", index=False)
    return tmp, new_ids


def _check_measured(table: pd.DataFrame) -> None:
    """Raise when a study of a timed run failed on every row: a failure is fast and would pass for speed."""
    failed = table.groupby("study_id")["diagnostics_error"].apply(lambda e: bool((e.astype(str) != "").all()))
    if failed.any():
        sid = failed[failed].index[0]
        first = table.loc[table["study_id"] == sid, "diagnostics_error"].iloc[0]
        raise SpinefeatError(f"bench: {int(failed.sum())} of {len(failed)} studies failed in the throughput run "
                             f"(study {sid}: {first})")


def _warm() -> None:
    import spinefeat.pipeline  # noqa: F401


def time_throughput(root: Path, split: str, ids: list[int], points, *,
                    workers: tuple[int, ...] = (1, 2), min_studies: int = 8, repeats: int = 1,
                    scheduler: str | None = None) -> dict:
    """Studies per second of `extract` (the predict path's per-study work, fresh cache) with 1 and 2 workers.

    A folder with fewer than ``min_studies`` studies is replicated (symlinks, new ids) so every worker has work.
    Worker processes are started before the clock runs (a long run pays that once; it is in the start-up
    figure's order, per worker).
    """
    from .extract import extract

    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="spinefeat-bench-") as tmp:
        tmp = Path(tmp)
        run_root, run_ids, run_points = root, ids, points
        if len(ids) < min_studies:
            run_root, run_ids = _replicated(root, split, ids, min_studies, tmp / "data")
            if not callable(points):
                run_points = pd.concat([points[points["study_id"] == ids[i % len(ids)]].assign(study_id=new)
                                        for i, new in enumerate(run_ids)])
        out["throughput_studies"] = len(run_ids)
        for w in workers:
            if w > 1 and scheduler is None:     # start the worker processes (and their imports) untimed
                from joblib import Parallel, delayed

                Parallel(n_jobs=w)(delayed(_warm)() for _ in range(2 * w))
            times, cpus, parent = [], [], []
            for r in range(repeats):
                cache = tmp / f"cache-{w}-{r}"
                kids = _descendants()
                c0, k0, t0 = time.process_time(), _cpu_s(kids), time.perf_counter()
                table = extract(run_root, run_points, split=split, cache=cache, jobs=w, studies=run_ids,
                                scheduler=scheduler)
                times.append(time.perf_counter() - t0)
                _check_measured(table)
                parent.append(time.process_time() - c0)
                cpus.append(parent[-1] + _cpu_s(kids) - k0)
                shutil.rmtree(cache)
            out[f"throughput_studies_per_s_{w}_workers"] = len(run_ids) / float(np.median(times))
            # CPU seconds per study, this process and its workers together: equal across worker counts when
            # parallel running adds no work (then a machine with free cores gets the full speed-up).
            out[f"cpu_s_per_study_{w}_workers"] = float(np.median(cpus)) / len(run_ids)
            # The calling process's share is the serial part (pickling, gathering, writing the cache).
            out[f"parent_cpu_s_per_study_{w}_workers"] = float(np.median(parent)) / len(run_ids)
            out[f"worker_peak_rss_mb_{w}_workers"] = _children_peak_mb()
        if len(workers) > 1:
            out[f"speedup_{workers[-1]}_workers"] = (out[f"throughput_studies_per_s_{workers[-1]}_workers"]
                                                     / out[f"throughput_studies_per_s_{workers[0]}_workers"])
    return out


def _reaped_cpu_s() -> float:
    """User + system CPU seconds of this process's children that have ended and been waited for."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_startup(repeats: int = 5) -> tuple[float, float]:
    """Median wall and CPU seconds of ``spinefeat --help`` as its own process (imports and the typer app)."""
    cmd = [sys.executable, "-m", "spinefeat", "--help"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    subprocess.run(cmd, capture_output=True, check=True, env=env)          # warm the file cache
    wall, cpu = [], []
    for _ in range(repeats):
        r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, env=env)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall.append(time.perf_counter() - t0)
        cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    return float(np.median(wall)), float(np.median(cpu))


def time_training(features: pd.DataFrame, train: pd.DataFrame, *, studies: int, jobs: int, seed: int = 0) -> dict:
    """Fit time for ``studies`` studies' rows, bootstrapped from a feature table (new ids per copy).

    The copies of one study are one group (``fit(groups=...)``): on one side of every fold and early-stopping
    split, so no fit stops late because a copy of its stopping rows is among its training rows. Rounds are
    then those of the source cohort's studies; the work per round is that of ``studies`` studies' rows.
    """
    from .models import fit

    rng = np.random.default_rng(seed)
    src = np.array(sorted(set(features["study_id"]) & set(train.index)))
    pick = rng.choice(src, size=studies, replace=True)
    # One take of the table's rows (a copy per study and their concatenation peaked at twice the table).
    at = features.groupby("study_id").indices
    new_ids = 10 ** 9 + np.arange(studies)
    big_f = features.iloc[np.concatenate([at[sid] for sid in pick])].reset_index(drop=True)
    old = big_f["study_id"].to_numpy()
    big_f["study_id"] = np.repeat(new_ids, [len(at[sid]) for sid in pick])
    big_f["row_id"] = [r.replace(f"{o}_", f"{n}_", 1) for r, o, n in zip(big_f["row_id"], old, big_f["study_id"])]
    big_t = train.loc[pick].set_axis(pd.Index(new_ids, name=train.index.name))
    groups = {int(new): int(sid) for new, sid in zip(new_ids, pick)}
    t0, c0, k0, r0 = time.perf_counter(), time.process_time(), _cpu_s(_descendants()), _reaped_cpu_s()
    res = fit(big_f, big_t, folds=5, jobs=jobs, seed=seed, groups=groups)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    reaped = _reaped_cpu_s() - r0         # workers that ended during the fit (a pool joblib replaced)
    return {"train_studies": studies, "train_source_studies": int(len(set(pick))), "train_rows": res["cv"]["rows"],
            "train_jobs": jobs, "train_seconds_5fold_cv_plus_final": wall,
            # this process, its fit workers (alive after the fit: the executor keeps them for reuse) and the
            # workers that ended during it
            "train_cpu_seconds_5fold_cv_plus_final": cpu + reaped + _cpu_s(_descendants()) - k0,
            "train_parent_cpu_seconds": cpu,
            "train_seconds_final_fit_25_targets": res["cv"]["seconds_final_fit"],
            "train_rounds": res["rounds"]}


def environment() -> dict:
    import pydicom

    plugins = {}
    for name in ("pylibjpeg", "rle", "openjpeg", "libjpeg", "dask", "distributed"):
        try:
            from importlib.metadata import version

            plugins[name] = version({"rle": "pylibjpeg-rle", "openjpeg": "pylibjpeg-openjpeg",
                                     "libjpeg": "pylibjpeg-libjpeg"}.get(name, name))
        except Exception:
            plugins[name] = None
    load = os.getloadavg()
    return {"spinefeat_version": __version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "load_average_1min": load[0], "pydicom": pydicom.__version__,
            "decoders": plugins, "when_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}


def run(root: Path, points, *, split: str | None = None, graders=None, studies: int = 10, repeats: int = 3, workers: tuple[int, ...] = (1, 2), throughput_studies: int = 8,
        startup: bool = True, progress=None) -> dict:
    """The whole benchmark on one folder; ``progress(text)`` is told what runs."""
    say = progress or (lambda *_: None)
    folder = DataFolder(root)
    split = split or ("test" if "test" in folder.splits() else folder.splits()[0])
    series = folder.series(split)
    ids = [int(s) for s in list(dict.fromkeys(series["study_id"]))[:studies]]
    res: dict = {"data": str(root), "split": split,
                 "points": "localised" if callable(points) else "given",
                 "graded": graders is not None, "repeats": repeats, "environment": environment()}
    per = []
    for i, sid in enumerate(ids):
        say(f"study {i + 1}/{len(ids)}: stages")
        per.append(time_study_stages(root, split, sid, series, points, graders=graders, repeats=repeats))
    res["per_study"] = per
    for key in (*STAGES, "predict_path", "decode_floor"):
        res[f"{key}_s"] = _summary(r[f"{key}_s"] for r in per)
        res[f"{key}_cpu_s"] = _summary(r[f"{key}_cpu_s"] for r in per)
    res["decode_floor_plugin"] = sorted({r["decode_floor_plugin"] for r in per})
    res["predict_over_floor"] = _summary(r["predict_over_floor"] for r in per)
    res["predict_over_floor_cpu"] = _summary(r["predict_over_floor_cpu"] for r in per)
    if workers:
        say("throughput")
        res.update(time_throughput(root, split, ids, points, workers=workers, min_studies=throughput_studies))
    if startup:
        say("start-up")
        res["startup_help_s"], res["startup_help_cpu_s"] = time_startup()
    res["peak_rss_mb"] = peak_rss_mb()
    return res


def markdown(res: dict) -> str:
    """The benchmark as a markdown page (tables of medians and p90s, wall and CPU)."""
    env = res["environment"]
    lines = [f"# spinefeat bench: {res['data']} ({res['split']})", "",
             f"spinefeat {env['spinefeat_version']}, Python {env['python']}, {env['cpus']} CPUs, load average "
             f"{env['load_average_1min']:.1f} at the start, {env['when_utc']} UTC; decoders: "
             + ", ".join(f"{k} {v}" for k, v in env["decoders"].items() if v) + ".",
             f"Points: {res['points']}; graded: {res['graded']}. Each time is the median of {res['repeats']} repeats, "
             f"then the median / p90 over {res['predict_path_s']['n']} studies; CPU is this process's CPU time (on a "
             "loaded machine, wall time also counts waiting for a core).", "",
             "| per study | wall median s | wall p90 s | CPU median s |", "|---|---:|---:|---:|"]
    labels = {"header_scan": "header scan (as `index`; the predict path reads each file once, in decode)",
              "decode": "decode (read + decode every slice into its stack)",
              "segmentation_features": "segmentation + features"}
    rows = [(labels.get(s, s.replace("_", " ")), s) for s in STAGES] + [
        ("**whole predict path, one worker**", "predict_path"),
        (f"decode floor ({', '.join(res['decode_floor_plugin'])})", "decode_floor")]
    for label, key in rows:
        lines.append(f"| {label} | {res[f'{key}_s']['median']:.3f} | {res[f'{key}_s']['p90']:.3f} | "
                     f"{res[f'{key}_cpu_s']['median']:.3f} |")
    lines += [f"| predict path / decode floor | {res['predict_over_floor']['median']:.1f}x | "
              f"{res['predict_over_floor']['p90']:.1f}x | {res['predict_over_floor_cpu']['median']:.1f}x |", ""]
    if "throughput_studies" in res:
        parts = [f"{w} worker(s) {res[f'throughput_studies_per_s_{w}_workers']:.2f} studies/s"
                 for w in range(1, 17) if f"throughput_studies_per_s_{w}_workers" in res]
        lines += [f"Extract throughput over {res['throughput_studies']} studies (the predict path's per-study work, "
                  "fresh cache, wall clock): " + ", ".join(parts)
                  + "".join(f"; speed-up {v:.2f}x" for k, v in res.items() if k.startswith("speedup")) + ". "
                  "CPU seconds per study (this process + workers): " + ", ".join(
                      f"{k.split('_')[-2]} worker(s) {v:.3f}" for k, v in res.items()
                      if k.startswith("cpu_s_per_study")) + "; of which the calling process: " + ", ".join(
                      f"{k.split('_')[-2]} worker(s) {v:.3f}" for k, v in res.items()
                      if k.startswith("parent_cpu_s_per_study")) + ".",
                  "Largest worker's peak memory: " + ", ".join(
                      f"{k.split('_')[-2]} workers {v:.0f} MB" for k, v in res.items()
                      if k.startswith("worker_peak_rss_mb") and v == v and v > 0) + ".", ""]
    if "startup_help_s" in res:
        lines.append(f"Start-up (`spinefeat --help`, its own process, median of 5): {res['startup_help_s']:.2f} s wall, "
                     f"{res['startup_help_cpu_s']:.2f} s CPU.")
    if "train_seconds_5fold_cv_plus_final" in res:
        lines.append(f"Training on {res['train_studies']} studies' rows ({res['train_rows']} rows, 25 targets, "
                     f"{res['train_jobs']} fits at a time in worker processes, one thread each; copies of one of "
                     f"{res.get('train_source_studies', '?')} source studies kept together in every split): "
                     f"{res['train_seconds_5fold_cv_plus_final']:.1f} s for 5-fold CV plus the final fit (the final "
                     f"fits {res['train_seconds_final_fit_25_targets']:.1f} s together); CPU "
                     f"{res.get('train_cpu_seconds_5fold_cv_plus_final', float('nan')):.1f} s (this process and its "
                     "fit workers)"
                     + (f"; rounds of the final fits {res['train_rounds']}" if "train_rounds" in res else "") + ".")
    lines.append(f"Peak memory of this process: {res['peak_rss_mb']:.0f} MB.")
    lines += ["", "| study | instances | syntax | " + " | ".join(STAGES) + " | path | floor | ratio | CPU ratio |",
              "|---|---:|---|" + "---:|" * (len(STAGES) + 4)]
    for r in res["per_study"]:
        lines.append(f"| {r['study_id']} | {r['instances']} | {r['transfer_syntax']} | "
                     + " | ".join(f"{r[f'{s}_s']:.3f}" for s in STAGES)
                     + f" | {r['predict_path_s']:.3f} | {r['decode_floor_s']:.3f} | {r['predict_over_floor']:.1f}x"
                     + f" | {r['predict_over_floor_cpu']:.1f}x |")
    return "\n".join(lines) + "\n"


def write(res: dict, out_dir: Path, name: str) -> tuple[Path, Path]:
    """``<out_dir>/<name>.json`` and ``.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{name}.json", out_dir / f"{name}.md"
    write_json(js, res)
    write_text(md, markdown(res))
    return md, js


def bench_folder(root: Path, *, points=None, coords: str | None = None, split: str | None = None, graders=None,
                 studies: int = 10, repeats: int = 3, workers: tuple[int, ...] = (1, 2), throughput_studies: int = 8,
                 startup: bool = True, train_features: Path | None = None, train_labels: Path | None = None,
                 train_studies: int = 2000, jobs: int = 2, progress=None) -> dict:
    """:func:`run` on one folder, at ``points`` (a point source such as the models' localiser) or else at the
    points ``coords`` names (default: the label points). With ``train_features`` (a feature table) also the
    training time on its rows bootstrapped to ``train_studies`` studies (labels: ``train_labels`` or the
    folder's train.csv) and the peak memory after it."""
    from .dataset import read_train
    from .pipeline import points_at, read_parquet_table

    folder = DataFolder(root)
    split = split or ("test" if "test" in folder.splits() else folder.splits()[0])
    if points is None:
        points = points_at(root, coords or "labels", split)[0]
    res = run(root, points, split=split, graders=graders, studies=studies, repeats=repeats, workers=workers,
              throughput_studies=throughput_studies, startup=startup, progress=progress)
    if train_features is not None:
        labels = read_train(train_labels) if train_labels is not None else folder.train()
        res.update(time_training(read_parquet_table(train_features), labels, studies=train_studies, jobs=jobs))
        res["peak_rss_mb"] = peak_rss_mb()
    return res
