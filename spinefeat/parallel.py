"""Per-study work in parallel: local worker processes, or a Dask distributed cluster.

One function serves every batch stage (extract, localize, predict, train's
extractions), so a run on a cluster has the same failure isolation and progress
as a local one: a study that raises, or whose worker is lost, gives its
``on_error`` result and the run goes on; results come back to the calling
process, which writes the caches and the tables (the workers only need to read
the data folder, by the same path).
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator

from .errors import SpinefeatError

log = logging.getLogger(__name__)

DASK_HINT = "running on a Dask cluster needs `pip install 'spinefeat[dask]'`"


def map_studies(fn: Callable[[int], object], ids: Iterable[int], *, jobs: int = 1, scheduler=None,
                on_error: Callable[[int, BaseException], object],
                connect_timeout_s: float = 30.0) -> Iterator[tuple[int, object]]:
    """Yield ``(study_id, fn(study_id))`` for every id, in the order studies finish.

    Parameters
    ----------
    fn : callable
        The per-study work; it must be picklable (module-level, or a closure over picklable values).
    jobs : int
        Local worker processes when ``scheduler`` is None (1: in this process).
    scheduler : str or distributed.Client, optional
        Address of a Dask scheduler (``tcp://host:8786``) or a connected client: the studies run on its workers.
    on_error : callable
        ``on_error(study_id, exc)`` gives the result of a study whose work raised or whose worker was lost.
    connect_timeout_s : float
        How long to try reaching the scheduler before giving up with a :class:`SpinefeatError`.
    """
    ids = list(ids)
    if not ids:
        return
    if scheduler is None:
        from joblib import Parallel, delayed

        def safe(study_id):
            try:
                return study_id, fn(study_id)
            except Exception as exc:      # one broken study is recorded, never the end of the run
                return study_id, on_error(study_id, exc)

        yield from Parallel(n_jobs=jobs, return_as="generator_unordered")(delayed(safe)(s) for s in ids)
        return
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise SpinefeatError(DASK_HINT) from exc
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler, set_as_default=False, timeout=connect_timeout_s) if own else scheduler
    except OSError as exc:
        raise SpinefeatError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
    try:
        futures = client.map(fn, ids, pure=False)
        study_of = {f.key: s for f, s in zip(futures, ids)}
        for fut in as_completed(futures, loop=client.loop):
            sid = study_of[fut.key]
            try:
                yield sid, fut.result()
            except Exception as exc:      # raised in the task, or its worker died
                log.warning("study %s failed on the cluster: %s", sid, type(exc).__name__)
                yield sid, on_error(sid, exc)
            fut.release()
    finally:
        if own:
            client.close()
