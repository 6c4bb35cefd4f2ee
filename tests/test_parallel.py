"""Per-study work on a Dask cluster gives the same tables as a local run, with the same failure isolation."""

import logging

import pandas as pd
import pytest
from typer.testing import CliRunner

from spinefeat.cli import app
from spinefeat.dataset import DataFolder
from spinefeat.extract import extract, points_from_labels
from spinefeat.parallel import map_studies


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed", reason="the Dask tests need `pip install 'spinefeat[dask]'`")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as c:
        yield c


@pytest.fixture()
def folder_with_broken_study(cohort, tmp_path):
    """Two labelled studies of the cohort (linked) and one whose files are garbage."""
    src = DataFolder(cohort)
    ser = src.series("train")
    good = sorted(ser.study_id.unique())[:2]
    bad = int(good[0]) + 1
    data = tmp_path / "d"
    (data / "train_images").mkdir(parents=True)
    for sid in good:
        (data / "train_images" / str(sid)).symlink_to(src.images_dir("train") / str(sid), target_is_directory=True)
    rows = [ser[ser.study_id.isin(good)]]
    broken = ser[ser.study_id == good[0]].assign(study_id=bad)
    for series_id in broken.series_id:
        d = data / "train_images" / str(bad) / str(series_id)
        d.mkdir(parents=True)
        (d / "1.dcm").write_bytes(b"garbage")
    pd.concat(rows + [broken]).to_csv(data / "train_series_descriptions.csv", index=False)
    pts = points_from_labels(src)
    pts = pd.concat([pts[pts.study_id.isin(good)], pts[pts.study_id == good[0]].assign(study_id=bad)])
    return data, pts, bad


def test_extract_on_cluster_equals_local_and_isolates_failures(cluster, folder_with_broken_study, tmp_path):
    data, pts, bad = folder_with_broken_study
    local = extract(data, pts, cache=tmp_path / "local", jobs=1)
    remote = extract(data, pts, cache=tmp_path / "remote", scheduler=cluster.scheduler_address)
    cols = [c for c in local.columns if c != "diagnostics_seconds"]
    pd.testing.assert_frame_equal(remote[cols], local[cols])
    assert len(local) == 3 * 25 and "no decodable instance" in local[local.study_id == bad].diagnostics_error.iloc[0]
    assert (local[local.study_id != bad].diagnostics_error.fillna("").isin(["", "no point"])).all()
    assert len(list((tmp_path / "remote").glob("*.parquet"))) == 3      # the cache is filled as locally


def test_predict_with_scheduler_writes_the_local_submission(cluster, trained, cohort, tmp_path):
    runs = {}
    for name, extra in (("local", []), ("dask", ["--scheduler", cluster.scheduler_address])):
        out = tmp_path / f"{name}.csv"
        res = CliRunner().invoke(app, ["predict", str(cohort), "--models", str(trained), "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
        runs[name] = pd.read_csv(out)
    assert len(runs["local"]) == 2 * 25
    pd.testing.assert_frame_equal(runs["dask"], runs["local"])


def _fails_on_odd(study_id):
    if study_id % 2:
        raise ValueError(f"odd {study_id}")
    return study_id * 10


def test_map_studies_gives_every_study_once_whatever_fails(cluster):
    for kw in ({"jobs": 1}, {"jobs": 2}, {"scheduler": cluster.scheduler_address}):
        got = dict(map_studies(_fails_on_odd, range(6), on_error=lambda s, exc: f"failed: {exc}", **kw))
        assert got == {0: 0, 1: "failed: odd 1", 2: 20, 3: "failed: odd 3", 4: 40, 5: "failed: odd 5"}, kw


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    from spinefeat.errors import SpinefeatError

    with pytest.raises(SpinefeatError, match="cannot reach the Dask scheduler"):
        list(map_studies(_fails_on_odd, [1], scheduler="tcp://127.0.0.1:1", on_error=lambda s, e: None,
                         connect_timeout_s=2))


def test_localised_points_travel_as_one_model_text(trained):
    """A point source pickled for a worker comes back with the same localiser (same fingerprint, same
    detector output), and a second copy in the same process reuses the first one's parsed model."""
    import pickle

    import cloudpickle
    import numpy as np

    from spinefeat.localize import Localizer
    from spinefeat.pipeline import LocalisedPoints

    loc = Localizer.load(trained)
    source = LocalisedPoints(loc)
    blob = cloudpickle.dumps(source)
    a, b = pickle.loads(blob), pickle.loads(cloudpickle.dumps(source))
    assert a.fingerprint == source.fingerprint and a.localizer.fingerprint == loc.fingerprint
    x = np.random.default_rng(0).normal(size=(5, loc.detector.num_feature()))
    np.testing.assert_allclose(a.localizer.detector.predict(x), loc.detector.predict(x))
    assert b.localizer is a.localizer
