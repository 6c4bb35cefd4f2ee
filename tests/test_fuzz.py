"""A short run of the DICOM fuzzer (tests/badinput/fuzz.py; run it with --cases 5000 for the long one)."""

from badinput.fuzz import fuzz


def test_mutated_dicom_files_give_only_documented_errors(tmp_path):
    res = fuzz(300, seed=12, timeout_s=10, folder=tmp_path / "1" / "1")
    assert not res["crashes"], res["crashes"][:3]
    assert not res["hangs"]
    assert sum(res["counts"].values()) == 300
    assert res["counts"].get("DicomError", 0) > 0 and res["counts"].get("ok", 0) > 0    # both kinds were reached
