import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless

from dicom_factory import instance, write
from spinefeat import dataset, dicom
from spinefeat.errors import DicomError
from spinefeat.geometry import project_to_stacks

def make_series(folder, zs, instances, **kw):
    folder.mkdir(parents=True)
    for z, inst in zip(zs, instances):
        write(folder / f"{inst}.dcm", instance(pixels=np.full((8, 10), inst, np.uint16), ipp=[0, 0, z], number=inst, **kw))
    return folder


def test_load_sorts_by_geometry_not_instance_number(tmp_path):
    zs = [8.0, 0.0, 12.0, 4.0]
    d = make_series(tmp_path / "1" / "2", zs, [1, 2, 3, 4])
    (stack,) = dicom.load_series(d)
    assert np.allclose(stack.geometry.offsets_mm, [0, 4, 8, 12])
    assert stack.instance_numbers.tolist() == [2, 4, 1, 3]
    assert np.allclose(stack.pixels[:, 0, 0], [2, 4, 1, 3])     # pixels follow their slice
    assert stack.study_id == 1 and stack.series_id == 2


def test_rescale_applied_into_given_slice(tmp_path):
    px = np.array([[0, 10], [20, 30]], np.uint16)
    write(tmp_path / "a.dcm", instance(pixels=px, slope=2.0, intercept=-5.0))
    a = dicom.decode_pixels(pydicom.dcmread(tmp_path / "a.dcm"), tmp_path / "a.dcm")
    assert a.dtype == np.float32 and np.allclose(a, [[-5, 15], [35, 55]])
    stack = np.zeros((2, 2, 2), np.float32)
    dicom.decode_pixels(pydicom.dcmread(tmp_path / "a.dcm"), tmp_path / "a.dcm", out=stack[1])
    assert np.allclose(stack[1], a) and not stack[0].any()


def test_monochrome1_inverted_with_the_series_range(tmp_path):
    # Two slices of one MONOCHROME1 series with different ranges: stored 10 must read the same on both
    # (per-slice max + min - x would give 20 on the first and 15 on the second).
    first = np.array([[0, 10], [20, 30]], np.uint16)
    second = np.array([[10, 15], [15, 15]], np.uint16)
    d = tmp_path / "1" / "2"
    d.mkdir(parents=True)
    write(d / "1.dcm", instance(pixels=first, number=1, photometric="MONOCHROME1"))
    write(d / "2.dcm", instance(pixels=second, ipp=[0, 0, 4], number=2, photometric="MONOCHROME1"))
    (stack,) = dicom.load_series(d)
    assert np.allclose(stack.pixels[0], 30 - first.astype(float))
    assert np.allclose(stack.pixels[1], 30 - second.astype(float))
    assert stack.pixels[0, 0, 1] == stack.pixels[1, 0, 0]


def test_undecodable_compressed_pixels_name_syntax(tmp_path):
    write(tmp_path / "c.dcm", instance(pixels=np.zeros((4, 4), np.uint16), syntax=JPEG2000Lossless))
    ds = pydicom.dcmread(tmp_path / "c.dcm")
    with pytest.raises(DicomError, match="JPEG 2000"):
        dicom.decode_pixels(ds, tmp_path / "c.dcm")


def test_summary_flags_missing_and_two_stacks(tmp_path):
    make_series(tmp_path / "train_images" / "7" / "70", [0, 4, 8, 16, 20], [1, 2, 3, 4, 5])          # 12 missing
    make_series(tmp_path / "train_images" / "7" / "71", [0, 4, 8, 60, 64, 68], [1, 2, 3, 4, 5, 6])  # two stacks
    inst, series = dataset.index_folder(tmp_path)
    assert len(inst) == 11 and (inst.error == "").all()
    s70 = series.set_index("series_id").loc[70]
    s71 = series.set_index("series_id").loc[71]
    assert s70.n_missing == 1 and not s70.spacing_regular and s70.n_stacks == 1
    assert s71.n_stacks == 2 and s71.slice_spacing_mm == pytest.approx(4.0)
    assert set(series.plane) == {"axial"}


def test_unreadable_file_is_recorded_not_fatal(tmp_path):
    d = make_series(tmp_path / "train_images" / "7" / "70", [0, 4], [1, 2])
    (d / "3.dcm").write_bytes(b"not a dicom file")
    inst, series = dataset.index_folder(tmp_path)
    assert (inst.error != "").sum() == 1 and "3.dcm" in inst.loc[inst.error != "", "error"].iloc[0]
    assert len(dicom.load_series(d)[0].instance_numbers) == 2


def test_real_study_indexes_and_loads(real_study):
    inst, series = dataset.index_folder(real_study)
    assert len(series) == 3 and inst.frame_of_reference.nunique() == 1
    assert np.allclose(series.slice_spacing_mm, 5.0, atol=0.01)
    assert series.set_index("series_id").loc[5007, "plane"] == "axial"
    assert set(series.transfer_syntax) == {"JPEG 2000 Image Compression"}
    (ax,) = dicom.load_series(real_study / "test_images" / "900001" / "5007")
    assert ax.pixels.shape == (26, 512, 512) and ax.pixels.max() > 100


def test_real_oblique_pd_axial_splits_into_disc_stacks(real_study):
    stacks = dicom.load_series(real_study / "extra" / "axial_pd_oblique_stacks", study_id=900001, series_id=1)
    assert [s.geometry.n_slices for s in stacks] == [5, 5, 5, 5, 3]
    normals = np.array([s.geometry.normal for s in stacks])
    assert all(abs(normals[i] @ normals[i + 1]) < np.cos(np.deg2rad(2)) for i in range(4))   # each tilted anew (>2 deg)


def test_real_midsagittal_point_projects_to_expected_axial_slice(real_study):
    (sag,) = dicom.load_series(real_study / "test_images" / "900001" / "3007")
    (ax,) = dicom.load_series(real_study / "test_images" / "900001" / "5007")
    mid = sag.geometry.n_slices // 2
    zs = ax.geometry.positions_mm[:, 2]
    for row in (200.0, 260.0, 320.0):
        p = sag.geometry.to_patient(mid, row, 256.0)
        res = project_to_stacks(p, [ax.geometry], frame_of_reference=ax.geometry.frame_of_reference)
        # The axial series is axis-aligned: the expected slice is the one nearest in z.
        assert res["slice"] == int(np.argmin(np.abs(zs - p[2])))
        assert res["in_image"]


@pytest.mark.parametrize("syntax", [pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian])
@pytest.mark.parametrize("bits, stored, signed", [(8, 8, 0), (8, 8, 1), (8, 6, 0), (8, 6, 1), (16, 16, 0),
                                                  (16, 16, 1), (16, 12, 0), (16, 12, 1), (16, 1, 0)])
def test_native_fast_path_gives_pydicoms_array(tmp_path, syntax, bits, stored, signed):
    """Uncompressed little-endian frames are read with numpy, bypassing pydicom's pixel handler: the array is
    pydicom's own (values and dtype), on random bytes whose unused high bits are set (cleared or sign-extended
    by both routes), and so are the modality values decode_pixels makes from it."""
    from pydicom.pixels import pixel_array

    rng = np.random.default_rng(bits * 100 + stored * 2 + signed)
    raw = rng.integers(0, 2 ** bits, size=(9, 7), dtype=np.uint16).astype("<u2" if bits == 16 else "u1")
    ds = instance(pixels=np.zeros((9, 7), np.uint16), bits=bits, syntax=syntax, slope=0.5, intercept=-3.0)
    ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = raw.tobytes(), stored, stored - 1, signed
    ds = pydicom.dcmread(write(tmp_path / "a.dcm", ds))
    fast = dicom._native_frame(ds)
    assert fast is not None
    want = pixel_array(ds)
    assert fast.dtype == want.dtype and np.array_equal(fast, want)
    if stored < bits:
        assert not np.array_equal(want, raw.view(want.dtype))      # the high bits did need the correction
    got = dicom.decode_pixels(ds, tmp_path / "a.dcm")
    assert np.array_equal(got, want.astype(np.float32) * np.float32(0.5) - np.float32(3.0))


@pytest.mark.parametrize("bits, stored, signed", [(8, 8, 0), (8, 6, 1), (16, 16, 0), (16, 16, 1), (16, 12, 0),
                                                   (16, 12, 1)])
def test_rle_fast_path_gives_pydicoms_array(tmp_path, bits, stored, signed):
    """RLE Lossless frames go to pylibjpeg-rle's frame decoder directly: the array is the one pydicom's handler
    gives with either of its RLE plugins (values and dtype), on random bytes whose unused high bits are set,
    one fragment or split over several; the modality values follow."""
    pytest.importorskip("rle")
    from pydicom.encaps import encapsulate
    from pydicom.pixels import pixel_array
    from rle.utils import encode_pixel_data

    rng = np.random.default_rng(bits * 100 + stored * 2 + signed)
    raw = rng.integers(0, 2 ** bits, size=(9, 7), dtype=np.uint16).astype("<u2" if bits == 16 else "u1")
    frame = encode_pixel_data(raw.tobytes(), rows=9, columns=7, samples_per_pixel=1, bits_allocated=bits,
                              byteorder="<")
    for pieces in (1, 3):
        ds = instance(pixels=np.zeros((9, 7), np.uint16), bits=bits, syntax=pydicom.uid.RLELossless, slope=0.5,
                      intercept=-3.0)
        ds.PixelData = encapsulate([frame], fragments_per_frame=pieces)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = stored, stored - 1, signed
        ds = pydicom.dcmread(write(tmp_path / "a.dcm", ds))
        fast = dicom._rle_frame(ds)
        assert fast is not None
        for plugin in ("pylibjpeg", "pydicom"):
            want = pixel_array(ds, decoding_plugin=plugin)
            assert fast.dtype == want.dtype and np.array_equal(fast, want), plugin
        if stored < bits:
            assert not np.array_equal(want, raw.view(want.dtype))      # the high bits did need the correction
        got = dicom.decode_pixels(ds, tmp_path / "a.dcm")
        assert np.array_equal(got, want.astype(np.float32) * np.float32(0.5) - np.float32(3.0))


def test_rle_fast_path_leaves_damaged_and_other_data_to_pydicom(tmp_path):
    """Not RLE, several frames or samples, or RLE data the decoder rejects or that decodes to another size: None,
    so pydicom's handler decodes or names the problem (a DicomError from decode_pixels)."""
    pytest.importorskip("rle")
    from pydicom.encaps import encapsulate
    from rle.utils import encode_pixel_data

    assert dicom._rle_frame(instance(bits=16)) is None                         # uncompressed
    px = np.arange(80, dtype="<u2").reshape(8, 10)
    good = encode_pixel_data(px.tobytes(), rows=8, columns=10, samples_per_pixel=1, bits_allocated=16,
                             byteorder="<")
    small = encode_pixel_data(px[:4].tobytes(), rows=4, columns=10, samples_per_pixel=1, bits_allocated=16,
                              byteorder="<")
    cases = []
    for data, kw in ((good, {"NumberOfFrames": 2}), (good, {"SamplesPerPixel": 3}), (b"\x01\x00" * 40, {}),
                     (small, {})):
        ds = instance(bits=16, syntax=pydicom.uid.RLELossless)
        ds.PixelData = encapsulate([data])
        for k, v in kw.items():
            setattr(ds, k, v)
        cases.append(ds)
    for ds in cases:
        assert dicom._rle_frame(ds) is None
    for ds in cases[2:]:
        with pytest.raises(DicomError):
            dicom.decode_pixels(pydicom.dcmread(write(tmp_path / "b.dcm", ds)), tmp_path / "b.dcm")


def test_rle_fast_path_on_the_real_study(shared):
    """Every slice of the real RSNA study (RLE Lossless, 12 of 16 bits stored) decodes to pydicom's array."""
    pytest.importorskip("rle")
    from pydicom.pixels import pixel_array

    files = sorted((shared / "real_rsna" / "kaggle_study").rglob("*.dcm"))
    if not files:
        pytest.skip("no real RSNA study in the shared data")
    for f in files:
        ds = pydicom.dcmread(f)
        fast = dicom._rle_frame(ds)
        assert fast is not None and str(ds.file_meta.TransferSyntaxUID) == pydicom.uid.RLELossless
        want = pixel_array(ds)
        assert fast.dtype == want.dtype and np.array_equal(fast, want)


def test_native_fast_path_leaves_other_data_to_pydicom(tmp_path):
    """Big endian, several samples, several frames, 32 bits or no PixelRepresentation: not read natively."""
    cases = []
    ds = instance(bits=16)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    cases.append(ds)
    for kw, value in (("SamplesPerPixel", 3), ("NumberOfFrames", 2), ("BitsAllocated", 32)):
        ds = instance(bits=16)
        setattr(ds, kw, value)
        cases.append(ds)
    ds = instance(bits=16)
    del ds.PixelRepresentation
    cases.append(ds)
    for ds in cases:
        assert dicom._native_frame(ds) is None
