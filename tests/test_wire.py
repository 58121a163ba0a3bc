"""The host decodes whatever a sandbox sends without unpickling or evaluating it."""

from __future__ import annotations

import importlib.util
import json
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codeact.sandbox import wire

plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4)
        | st.frozensets(st.integers() | st.text(max_size=3), max_size=4)
    ),
    max_leaves=20,
)


@given(plain)
def test_values_survive_a_trip_through_json(value):
    assert wire.decode(json.loads(json.dumps(wire.encode(value)))) == value


@pytest.mark.parametrize(
    "payload",
    [
        {"$t": "pickle", "v": "gASVAAAAAAAAAAA="},
        {"$t": "ndarray", "dtype": "|O", "shape": [1], "v": ""},
        {"$t": "ndarray", "dtype": "<i8", "shape": [4], "v": "AAAAAAAAAAA="},
        {"$t": "dict", "v": [[["unhashable"], 1]]},
        {"$t": "bytes", "v": "not base64!"},
        {"$t": "decimal", "v": "not a number"},
        {"$t": "datetime", "v": 12},
    ],
    ids=["unknown-tag", "object-dtype", "short-buffer", "unhashable-key", "bad-base64", "bad-decimal", "bad-type"],
)
def test_malformed_values_are_refused(payload):
    pytest.importorskip("numpy")
    with pytest.raises(wire.WireError):
        wire.decode(payload)


def _pandas_values() -> dict[str, object]:
    import numpy as np
    import pandas as pd

    sales = pd.DataFrame({"region": ["n", "s", "n"], "month": [1, 1, 2], "units": [3, 5, 7]})
    return {
        "groupby result": sales.groupby("region")[["units"]].sum(),
        "two-level index": sales.set_index(["region", "month"]),
        "pivot": sales.pivot_table(index="region", columns="month", values="units"),
        "nullable ints": pd.DataFrame({"n": pd.array([1, None, 3], dtype="Int64")}),
        "nullable floats and booleans": pd.DataFrame(
            {"f": pd.array([1.5, None], dtype="Float64"), "b": pd.array([True, None], dtype="boolean")}
        ),
        "strings with NA": pd.DataFrame({"s": pd.array(["x", None], dtype="string")}),
        "categorical": pd.DataFrame({"c": pd.Categorical(["lo", "hi", "lo"], categories=["lo", "hi"], ordered=True)}),
        "categorical index": pd.DataFrame({"v": [1, 2]}, index=pd.CategoricalIndex(["a", "b"], name="k")),
        "named columns": pd.DataFrame([[1, 2]], columns=pd.Index(["x", "y"], name="field")),
        "dated index": pd.DataFrame({"v": [1.0, np.nan]}, index=pd.date_range("2024-01-01", periods=2, name="day")),
        "series with a named index": pd.Series([1, 2], index=pd.Index(["a", "b"], name="key"), name="val"),
        "nullable series": pd.Series(pd.array([1, None], dtype="Int64"), name="n"),
    }


@pytest.mark.parametrize("name", list(_pandas_values()) if importlib.util.find_spec("pandas") else [])
@pytest.mark.parametrize("trusted", [True, False], ids=["in the sandbox", "on the host"])
def test_pandas_values_keep_their_index_names_levels_and_dtypes(name, trusted):
    """A groupby result keeps the name of its index, a pivot its two column levels, a nullable or a
    categorical column its dtype and missing values: the code works on the frame it was given."""
    import pandas as pd

    value = _pandas_values()[name]
    body = wire.dumps({"op": "value", "v": wire.encode(value)})[4:]
    back = wire.decode(wire.loads(body)["v"], trusted=trusted)
    if isinstance(value, pd.Series):
        pd.testing.assert_series_equal(back, value)
    else:
        pd.testing.assert_frame_equal(back, value)


@pytest.mark.parametrize(
    "payload",
    [
        {"$t": "masked", "dtype": "object", "v": [1]},
        {"$t": "masked", "dtype": "datetime64[ns]", "v": [1]},
        {"$t": "categorical", "categories": ["a"], "codes": [5], "ordered": False},
        {"$t": "categorical", "categories": ["a", "a"], "codes": [0], "ordered": False},
        {"$t": "dataframe", "columns": ["a"], "column_names": [None], "index": [1], "names": [1, 2], "data": [[1]]},
    ],
    ids=["object-dtype", "unlisted-dtype", "code-out-of-range", "repeated-category", "levels-unlike-index"],
)
def test_malformed_pandas_values_are_refused(payload):
    pytest.importorskip("pandas")
    with pytest.raises(wire.WireError):
        wire.decode(payload)


def test_deep_nesting_is_refused():
    nested: object = 1
    for _ in range(wire.MAX_DEPTH + 10):
        nested = [nested]
    with pytest.raises(wire.WireError):
        wire.decode(nested)
    with pytest.raises(ValueError):
        wire.encode(nested)


def test_unknown_types_do_not_cross():
    with pytest.raises(TypeError, match="cannot cross the sandbox boundary"):
        wire.encode(object())


def test_oversized_frame_is_refused_before_it_is_read():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">I", 2**31))  # claims 2 GB, sends nothing more
        with pytest.raises(wire.WireError, match="exceeds the limit"):
            wire.recv(b, max_bytes=1024)


def test_messages_must_be_objects_with_an_op():
    with pytest.raises(wire.WireError):
        wire.loads(b"[1, 2]")
    with pytest.raises(wire.WireError):
        wire.loads(b"{not json")
    assert wire.loads(b'{"op": "x"}') == {"op": "x"}


def test_frame_buffer_reads_frames_however_they_arrive():
    a, b = socket.socketpair()
    with a, b:
        frames = wire.FrameBuffer()
        a.sendall(wire.dumps({"op": "one"}) + wire.dumps({"op": "two"}))  # two frames in one read
        assert frames.fill(b)
        assert [frames.next(), frames.next(), frames.next()] == [{"op": "one"}, {"op": "two"}, None]
        for byte in wire.dumps({"op": "slow", "n": 1}):  # one frame a byte at a time
            assert frames.next() is None
            a.sendall(bytes([byte]))
            assert frames.fill(b)
        assert frames.next() == {"op": "slow", "n": 1}
        assert frames.fill(b) and frames.next() is None  # nothing there yet is not an error


def test_frame_buffer_refuses_a_cut_frame_and_a_huge_length():
    a, b = socket.socketpair()
    with b:
        frames = wire.FrameBuffer(max_bytes=1024)
        a.sendall(wire.dumps({"op": "cut"})[:-2])
        a.close()
        assert frames.fill(b) and frames.next() is None
        with pytest.raises(wire.WireError, match="closed in the middle"):
            frames.fill(b)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">I", 2**31))
        frames = wire.FrameBuffer(max_bytes=1024)
        frames.fill(b)
        with pytest.raises(wire.WireError, match="exceeds the limit"):
            frames.next()
    a, b = socket.socketpair()
    with b:
        a.close()
        assert not wire.FrameBuffer().fill(b)  # a clean close between frames
