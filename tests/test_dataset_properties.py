"""Property tests (hypothesis) of the CSV validators: valid tables read back as written; one damaged cell is
reported with its file, line and column."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spinefeat.dataset import CONDITIONS, LEVEL_NAMES, LEVELS, SEVERITIES, TRAIN_COLUMNS, read_coordinates, read_train
from spinefeat.errors import DataError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TITLE = [c.replace("_", " ").title() for c in CONDITIONS]


@st.composite
def coordinate_tables(draw):
    n = draw(st.integers(1, 12))
    targets = draw(st.lists(st.tuples(st.integers(1, 10**9), st.integers(0, 4), st.integers(0, 4)), min_size=n,
                            max_size=n, unique=True))
    snake = draw(st.booleans())
    rows = [{"study_id": s, "series_id": draw(st.integers(1, 10**9)), "instance_number": draw(st.integers(1, 500)),
             "condition": CONDITIONS[c] if snake else TITLE[c], "level": LEVELS[lv] if snake else LEVEL_NAMES[lv],
             "x": draw(st.floats(0, 1024)), "y": draw(st.floats(0, 1024))} for s, c, lv in targets]
    return pd.DataFrame(rows)


@SETTINGS
@given(table=coordinate_tables())
def test_valid_coordinates_read_back(tmp_path, table):
    path = tmp_path / "c.csv"
    table.to_csv(path, index=False)
    got = read_coordinates(path)
    assert got[["study_id", "series_id", "instance_number"]].to_numpy().tolist() == \
        table[["study_id", "series_id", "instance_number"]].to_numpy().tolist()
    assert set(got["condition"]) <= set(CONDITIONS) and set(got["level"]) <= set(LEVELS)
    assert got["x"].to_numpy() == pytest.approx(table["x"].to_numpy(), rel=1e-12)


BAD = {"study_id": st.sampled_from(["abc", "1.5", "", "../x", "1e400"]),
       "instance_number": st.sampled_from(["abc", "2.5", ""]),
       "condition": st.sampled_from(["Knee Pain", "spinal", ""]),
       "level": st.sampled_from(["L9/L10", "l1-l2", ""]),
       "x": st.sampled_from(["abc", "-1", "inf", "nan", ""])}


@SETTINGS
@given(table=coordinate_tables(), col=st.sampled_from(sorted(BAD)), data=st.data())
def test_one_bad_coordinate_cell_is_named(tmp_path, table, col, data):
    i = data.draw(st.integers(0, len(table) - 1))
    table = table.astype(object)
    table.loc[i, col] = data.draw(BAD[col])
    path = tmp_path / "c.csv"
    table.to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        read_coordinates(path)
    msg = str(err.value)
    assert str(path) in msg and f"line {i + 2}" in msg and f"'{col}'" in msg


@SETTINGS
@given(grades=st.lists(st.lists(st.sampled_from([*SEVERITIES, None]), min_size=25, max_size=25), min_size=1,
                       max_size=6), data=st.data())
def test_train_labels_read_back_and_a_bad_grade_is_named(tmp_path, grades, data):
    table = pd.DataFrame(grades, columns=list(TRAIN_COLUMNS))
    table.insert(0, "study_id", range(1, len(table) + 1))
    path = tmp_path / "train.csv"
    table.to_csv(path, index=False)
    got = read_train(path)
    assert got.astype(object).fillna("-").to_numpy().tolist() == \
        table.set_index("study_id").astype(object).fillna("-").to_numpy().tolist()
    i, j = data.draw(st.integers(0, len(table) - 1)), data.draw(st.integers(1, 25))
    table.iloc[i, j] = data.draw(st.sampled_from(["severe", "Mild", "2", "Normal"]))
    table.to_csv(path, index=False)
    with pytest.raises(DataError, match=f"line {i + 2}, column '{table.columns[j]}'"):
        read_train(path)
