"""Pictures are written atomically too: the bytes that land are a complete PNG, and nothing is left beside them."""

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from spinefeat.errors import OutputError  # noqa: E402
from spinefeat.io import write_figure, write_png  # noqa: E402


def test_write_png_round_trips_and_leaves_no_temporary(tmp_path):
    img = (np.arange(12 * 9, dtype=np.uint8).reshape(12, 9) * 2)
    out = write_png(tmp_path / "sub" / "a.png", img)
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), img)
    assert [p.name for p in out.parent.iterdir()] == ["a.png"]


def test_write_figure_is_a_png_and_a_failed_write_keeps_the_old_file(tmp_path):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    out = write_figure(tmp_path / "f.png", fig, dpi=50)
    plt.close(fig)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    old = out.read_bytes()
    blocker = tmp_path / "f.png.dir"
    blocker.mkdir()
    with pytest.raises(OutputError):
        write_png(blocker, np.zeros((4, 4), np.uint8))     # a folder stands where the file should go
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "f.png.dir"]
