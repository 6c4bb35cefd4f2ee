"""Fuzz the header scan and the series loader with mutated DICOM byte strings.

    python tests/badinput/fuzz.py [--cases 5000] [--seed 0] [--timeout 5]

Each case mutates a valid MR instance (bit flips, overwritten bytes, cut, spliced or repeated
chunks, huge element lengths), writes it as a one-file series and runs
:func:`spinefeat.dicom.read_header`, :func:`~spinefeat.dicom.scan_series` and
:func:`~spinefeat.dicom.load_series`. Allowed outcomes: a result, or
:class:`~spinefeat.errors.DicomError` (the documented error). Anything else is a crash; a case
taking longer than ``--timeout`` seconds is a hang. Prints the counts; exits 1 on any crash or hang.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dicom_factory import dicom_bytes, instance  # noqa: E402


class Hang(Exception):
    pass


def seeds() -> list[bytes]:
    return [dicom_bytes(instance()), dicom_bytes(instance(bits=8)), dicom_bytes(instance(photometric="MONOCHROME1")),
            dicom_bytes(instance(iop=[0, 1, 0, 0, 0, -1], pixels=np.ones((16, 12), np.uint16)))]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(0, 7))
        n = len(b)
        if n < 4:
            break
        i = int(rng.integers(0, n))
        if op == 0:                                   # flip bits
            for _ in range(int(rng.integers(1, 9))):
                j = int(rng.integers(0, n))
                b[j] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:                                 # overwrite a run with random bytes
            k = int(rng.integers(1, 32))
            b[i:i + k] = rng.integers(0, 256, k, dtype=np.uint8).tobytes()
        elif op == 2:                                 # cut
            b = b[:i]
        elif op == 3:                                 # delete a chunk
            del b[i:i + int(rng.integers(1, 64))]
        elif op == 4:                                 # repeat a chunk
            k = int(rng.integers(1, 64))
            b[i:i] = b[i:i + k]
        elif op == 5:                                 # a huge 32-bit length just after some tag
            b[i:i + 4] = int(rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x10000000, n * 3])).to_bytes(4, "little")
        else:                                         # a huge 16-bit length / value
            b[i:i + 2] = int(rng.choice([0xFFFF, 0x8000, 0])).to_bytes(2, "little")
    return bytes(b)


def run_case(data: bytes, folder: Path) -> str:
    """'ok', 'DicomError' or raises (crash)."""
    from spinefeat import dicom
    from spinefeat.errors import DicomError

    f = folder / "1.dcm"
    f.write_bytes(data)
    outcome = "ok"
    try:
        dicom.read_header(f)
    except DicomError:
        outcome = "DicomError"
    rows = dicom.scan_series(folder, study_id=1, series_id=1)
    assert len(rows) == 1
    try:
        dicom.load_series(folder, study_id=1, series_id=1)
    except DicomError:
        outcome = "DicomError" if outcome == "DicomError" else "ok/DicomError"
    return outcome


def fuzz(cases: int, *, seed: int = 0, timeout_s: int = 5, folder: Path | None = None) -> dict:
    """Run ``cases`` mutated files; return counts of outcomes and the crashes and hangs found."""
    import logging

    # Thousands of damaged files would each log a warning; the level is put back for whatever runs next
    # (a test reading WARNING records from spinefeat's loggers).
    lib_log = logging.getLogger("spinefeat")
    old_level = lib_log.level
    lib_log.setLevel(logging.ERROR)
    rng = np.random.default_rng(seed)
    base = seeds()
    tmp = None
    if folder is None:
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name) / "1" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    crashes, hangs = [], []

    def alarm(signum, frame):
        raise Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    try:
        for i in range(cases):
            data = mutate(base[i % len(base)], rng)
            signal.alarm(timeout_s)
            try:
                counts[run_case(data, folder)] += 1
            except Hang:
                hangs.append(i)
                counts["hang"] += 1
            except Exception as exc:  # noqa: BLE001  (what the fuzzer is looking for)
                crashes.append((i, f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=3)))
                counts["crash"] += 1
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
        lib_log.setLevel(old_level)
        if tmp is not None:
            tmp.cleanup()
    return {"cases": cases, "counts": dict(counts), "crashes": crashes, "hangs": hangs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=5)
    a = ap.parse_args()
    import time

    t0 = time.perf_counter()
    res = fuzz(a.cases, seed=a.seed, timeout_s=a.timeout)
    print(f"{res['cases']} mutated files in {time.perf_counter() - t0:.1f} s: {res['counts']}")
    for i, msg, tb in res["crashes"][:10]:
        print(f"crash in case {i}: {msg}\n{tb}")
    if res["hangs"]:
        print(f"hangs in cases {res['hangs'][:20]}")
    sys.exit(1 if res["crashes"] or res["hangs"] else 0)


if __name__ == "__main__":
    main()
