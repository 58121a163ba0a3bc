"""The wire between host and sandbox: tagged JSON values in length-prefixed frames.

Pure standard library so the same module runs inside every backend. Decoding builds only the types
listed here (numpy arrays and pandas frames from raw buffers of plain dtypes); nothing is unpickled
or evaluated, so the host can decode whatever a sandbox sends.
"""

from __future__ import annotations

import array
import base64
import collections
import datetime as dt
import decimal
import enum
import json
import os
import re
import socket
import struct
from collections.abc import ItemsView, KeysView, ValuesView
from typing import Any

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
MAX_VALUES = 1_000_000
_HEADER = struct.Struct(">I")
_TAG = "$t"


class WireError(Exception):
    """A message broke the wire protocol (too large, malformed, unknown tag, truncated)."""


class FrameTooLarge(WireError):
    """A message to send is over the frame limit; nothing of it was sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise WireError("bytes payload must be base64 text")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise WireError(f"bad base64 payload: {exc}") from None


def encode(value: Any, _depth: int = 0) -> Any:
    """A JSON-able form of `value`; raises TypeError for types the wire cannot carry.

    Dataclasses, named tuples, pydantic models and enum members carry their class's module and
    name: the sandbox rebuilds the same class where it can import it (see `decode(trusted=True)`),
    the host always decodes them as plain data.
    """
    if _depth > MAX_DEPTH:
        raise ValueError(f"value nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    d = _depth + 1
    if isinstance(value, list):
        return [encode(v, d) for v in value]
    if isinstance(value, dict):
        if all(type(k) is str for k in value) and _TAG not in value:
            return {k: encode(v, d) for k, v in value.items()}
        return {_TAG: "dict", "v": [[encode(k, d), encode(v, d)] for k, v in value.items()]}
    if isinstance(value, enum.Enum):
        return {_TAG: "enum", "cls": _class_ref(value), "name": str(value.name), "v": encode(value.value, d)}
    if isinstance(value, tuple):
        if hasattr(type(value), "_fields"):  # a named tuple
            return {
                _TAG: "namedtuple",
                "cls": _class_ref(value),
                "fields": list(type(value)._fields),
                "v": [encode(v, d) for v in value],
            }
        return {_TAG: "tuple", "v": [encode(v, d) for v in value]}
    if isinstance(value, frozenset):
        return {_TAG: "frozenset", "v": [encode(v, d) for v in value]}
    if isinstance(value, set):
        return {_TAG: "set", "v": [encode(v, d) for v in value]}
    if isinstance(value, (KeysView, ValuesView, range, collections.deque, array.array)):
        return [encode(v, d) for v in value]
    if isinstance(value, ItemsView):
        return [{_TAG: "tuple", "v": [encode(k, d), encode(v, d)]} for k, v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_TAG: "bytes", "v": _b64(bytes(value))}
    if isinstance(value, dt.datetime):
        if value != value:  # pandas' NaT: a datetime that is no time
            return {_TAG: "nat"}
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {_TAG: "date", "v": value.isoformat()}
    if isinstance(value, dt.time):
        return {_TAG: "time", "v": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {_TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, decimal.Decimal):
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, complex):
        return {_TAG: "complex", "v": [value.real, value.imag]}
    module = type(value).__module__.split(".")[0]
    if module == "numpy":
        return _encode_numpy(value, d)
    if module == "pandas":
        return _encode_pandas(value, d)
    if module == "pathlib" and isinstance(value, os.PathLike):
        return {_TAG: "path", "v": os.fspath(value)}
    if module == "uuid" and hasattr(value, "hex"):
        return {_TAG: "uuid", "v": str(value)}
    if hasattr(value, "model_dump") and callable(value.model_dump):  # pydantic models
        fields = {k: getattr(value, k) for k in type(value).model_fields}
        return {_TAG: "model", "cls": _class_ref(value), "v": encode(fields, d)}
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        import dataclasses

        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {_TAG: "dataclass", "cls": _class_ref(value), "v": encode(fields, d)}
    raise TypeError(
        f"a value of type {type(value).__name__} cannot cross the sandbox boundary; use plain "
        "data (str, numbers, lists, dicts, tuples, sets, bytes, datetimes, Decimal, paths, UUIDs, numpy, pandas)"
    )


def _class_ref(value: Any) -> list[str]:
    cls = type(value)
    return [str(cls.__module__), str(cls.__qualname__)]


def _encode_numpy(value: Any, depth: int) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return encode(value.item(), depth)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OV" or value.dtype.fields:
            return {_TAG: "ndarray_list", "v": encode(value.tolist(), depth)}
        data = np.ascontiguousarray(value)
        return {
            _TAG: "ndarray",
            "dtype": data.dtype.str,
            "shape": list(data.shape),
            "v": _b64(data.tobytes()),
        }
    raise TypeError(f"numpy value of type {type(value).__name__} cannot cross the sandbox boundary")


# pandas' nullable dtypes, rebuilt by name with their missing values (NA) in place
_MASKED_DTYPES = frozenset(
    [f"{kind}{bits}" for kind in ("Int", "UInt") for bits in (8, 16, 32, 64)]
    + ["Float32", "Float64", "boolean", "string"]
)


def _encode_column(values: Any, depth: int) -> Any:
    """A column or an index (a Series or an Index): a raw array where its dtype allows, its
    categories and codes, or its values with the name of its nullable dtype."""
    dtype = values.dtype
    name = str(dtype)
    if name == "category":
        return {
            _TAG: "categorical",
            "categories": _encode_column(dtype.categories, depth),
            "codes": encode(values.array.codes, depth),
            "ordered": bool(dtype.ordered),
        }
    if name in _MASKED_DTYPES:
        missing = values.isna().tolist()
        return {
            _TAG: "masked",
            "dtype": name,
            "v": [None if gone else encode(v, depth) for v, gone in zip(values.tolist(), missing, strict=True)],
        }
    array = values.to_numpy()
    if array.dtype.kind in "biufcmM?":
        return encode(array, depth)
    return encode(values.tolist(), depth)


def _encode_pandas(value: Any, depth: int) -> Any:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return {
            _TAG: "dataframe",
            "columns": encode(list(value.columns), depth),
            "column_names": encode(list(value.columns.names), depth),
            "index": _encode_column(value.index, depth),
            "names": encode(list(value.index.names), depth),
            "freq": getattr(value.index, "freqstr", None),
            "data": [_encode_column(value[c], depth) for c in value.columns]
            if value.columns.is_unique
            else [_encode_column(value.iloc[:, i], depth) for i in range(value.shape[1])],
        }
    if isinstance(value, pd.Series):
        return {
            _TAG: "series",
            "name": encode(value.name, depth),
            "index": _encode_column(value.index, depth),
            "names": encode(list(value.index.names), depth),
            "freq": getattr(value.index, "freqstr", None),
            "v": _encode_column(value, depth),
        }
    if isinstance(value, pd.Timestamp):
        return encode(value.to_pydatetime(), depth)
    if value is pd.NA:
        return None
    raise TypeError(f"pandas value of type {type(value).__name__} cannot cross the sandbox boundary")


def decode(obj: Any, _depth: int = 0, *, trusted: bool = False) -> Any:
    """The value an `encode` result stands for; raises WireError on anything malformed.

    Classes named by dataclass, named tuple, model and enum values are imported only when
    `trusted` (inside the sandbox, for values from the host); otherwise they decode as dicts, tuples
    and plain values, and nothing is imported or constructed from what the other side names.
    """
    if _depth > MAX_DEPTH + 2:
        raise WireError(f"message nested deeper than {MAX_DEPTH} levels")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    d = _depth + 1
    if isinstance(obj, list):
        return [decode(v, d, trusted=trusted) for v in obj]
    if not isinstance(obj, dict):
        raise WireError(f"unexpected JSON value of type {type(obj).__name__}")
    tag = obj.get(_TAG)
    if tag is None:
        return {k: decode(v, d, trusted=trusted) for k, v in obj.items()}
    payload = obj.get("v")
    try:
        if tag == "dict":
            return {_hashable(decode(k, d, trusted=trusted)): decode(v, d, trusted=trusted) for k, v in _pairs(payload)}
        if tag == "tuple":
            return tuple(decode(v, d, trusted=trusted) for v in _list(payload))
        if tag == "set":
            return {_hashable(decode(v, d, trusted=trusted)) for v in _list(payload)}
        if tag == "frozenset":
            return frozenset(_hashable(decode(v, d, trusted=trusted)) for v in _list(payload))
        if tag == "bytes":
            return _unb64(payload)
        if tag in ("namedtuple", "dataclass", "model", "enum"):
            return _decode_object(tag, obj, decode(payload, d, trusted=trusted), trusted)
        if tag == "datetime":
            return dt.datetime.fromisoformat(_str(payload))
        if tag == "nat":
            import pandas as pd

            return pd.NaT
        if tag == "date":
            return dt.date.fromisoformat(_str(payload))
        if tag == "time":
            return dt.time.fromisoformat(_str(payload))
        if tag == "timedelta":
            days, seconds, micros = (_int(x) for x in _list(payload, 3))
            return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if tag == "decimal":
            return decimal.Decimal(_str(payload))
        if tag == "complex":
            real, imag = _list(payload, 2)
            return complex(float(real), float(imag))
        if tag == "path":  # a name only: nothing is opened
            import pathlib

            return pathlib.Path(_str(payload))
        if tag == "uuid":
            import uuid

            return uuid.UUID(_str(payload))
        if tag == "ndarray":
            return _decode_ndarray(obj)
        if tag == "ndarray_list":
            import numpy as np

            return np.array(decode(payload, d, trusted=trusted), dtype=object)
        if tag == "series":
            import pandas as pd

            return pd.Series(
                decode(obj.get("v"), d, trusted=trusted),
                index=_index(decode(obj.get("index"), d, trusted=trusted), obj, d),
                name=decode(obj.get("name"), d, trusted=trusted),
            )
        if tag == "dataframe":
            import pandas as pd

            columns = _list(decode(obj.get("columns"), d, trusted=trusted))
            data = _list(obj.get("data"), len(columns))
            frame = pd.DataFrame(
                {i: decode(col, d, trusted=trusted) for i, col in enumerate(data)},
                index=_index(decode(obj.get("index"), d, trusted=trusted), obj, d),
            )
            frame.columns = _index(columns, {"names": obj.get("column_names")}, d)
            return frame
        if tag == "categorical":
            import pandas as pd

            return pd.Categorical.from_codes(
                decode(obj.get("codes"), d, trusted=trusted),
                categories=decode(obj.get("categories"), d, trusted=trusted),
                ordered=obj.get("ordered") is True,
            )
        if tag == "masked":
            import pandas as pd

            dtype = _str(obj.get("dtype"))
            if dtype not in _MASKED_DTYPES:
                raise WireError(f"pandas dtype {dtype!r} is not allowed on the wire")
            return pd.array(decode(payload, d, trusted=trusted), dtype=dtype)
    except WireError:
        raise
    except (ValueError, TypeError, decimal.InvalidOperation, OverflowError) as exc:
        raise WireError(f"malformed {tag!r} value: {exc}") from None
    except ImportError as exc:
        raise WireError(f"cannot decode {tag!r}: {exc.name} is not installed on this side") from None
    raise WireError(f"unknown value tag {tag!r}")


def _decode_object(tag: str, obj: dict[str, Any], data: Any, trusted: bool) -> Any:
    """A dataclass, named tuple, model or enum value: the named class where `trusted` and it can be
    imported, else a stand-in with the same fields (host side: plain data)."""
    module, qualname = (_str(x) for x in _list(obj.get("cls"), 2))
    if tag == "namedtuple":
        names = [_str(x) for x in _list(obj.get("fields"))]
        values = _list(data, len(names))
        if not trusted:
            return tuple(values)
        cls = _import_class(module, qualname)
        if cls is None:
            import collections as _c

            cls = _c.namedtuple(qualname.rsplit(".", 1)[-1], names)  # type: ignore[misc]
        return cls(*values)
    if tag == "enum":
        if not trusted:
            return data
        cls = _import_class(module, qualname)
        if cls is None:  # a stand-in enum with this one member, so `.name` and `.value` work
            member = _str(obj.get("name", "VALUE"))
            cls = enum.Enum(qualname.rsplit(".", 1)[-1], {member: data})
        return cls(data)
    if not isinstance(data, dict):
        raise WireError(f"malformed {tag!r} value")
    if not trusted:
        return data
    cls = _import_class(module, qualname)
    if cls is not None:
        try:
            return _build(cls, tag, data)
        except Exception as exc:  # the user's class refused (a validator, a __post_init__ check)
            raise WireError(f"{module}.{qualname} refused the value: {type(exc).__name__}: {exc}") from None
    import dataclasses

    stand_in = dataclasses.make_dataclass(qualname.rsplit(".", 1)[-1], list(data))
    stand_in.__module__ = module
    return stand_in(**data)


def _build(cls: type, tag: str, data: dict[str, Any]) -> Any:
    """An instance of `cls` with the fields in `data`; a dataclass's fields its constructor does not
    take (init=False) are set after it."""
    import dataclasses

    if tag == "model":
        return cls.model_validate(data)  # type: ignore[attr-defined]
    if not dataclasses.is_dataclass(cls):
        return cls(**data)
    fields = dataclasses.fields(cls)
    built = cls(**{f.name: data[f.name] for f in fields if f.init and f.name in data})
    for f in fields:
        if not f.init and f.name in data:
            object.__setattr__(built, f.name, data[f.name])
    return built


def _import_class(module: str, qualname: str) -> Any:
    """The class `module.qualname` if the module is importable here, else None."""
    import importlib

    try:
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception:
        return None
    return target if isinstance(target, type) else None


def _index(values: Any, sent: dict[str, Any], depth: int) -> Any:
    """An index of `values` (tuples where it has several levels) with the level names and the
    frequency of dates `sent` with it."""
    import pandas as pd

    names = [_hashable(decode(n, depth)) for n in _list(sent.get("names"))]
    if len(names) > 1:
        if not all(isinstance(v, tuple) and len(v) == len(names) for v in values):
            raise WireError(f"an index of {len(names)} levels needs tuples of {len(names)} values")
        levels = [list(level) for level in zip(*values, strict=True)] or [[]] * len(names)
        return pd.MultiIndex.from_arrays(levels, names=names)
    index = pd.Index(values, tupleize_cols=False, name=names[0] if names else None)
    freq = sent.get("freq")
    if freq is not None and isinstance(index, pd.DatetimeIndex | pd.TimedeltaIndex):
        index = type(index)(index, freq=_str(freq))  # pandas checks that the dates keep to it
    return index


def _decode_ndarray(obj: dict[str, Any]) -> Any:
    import numpy as np

    dtype = np.dtype(_str(obj.get("dtype")))
    if dtype.kind in "OV" or dtype.fields or dtype.hasobject:
        raise WireError(f"ndarray dtype {dtype} is not allowed on the wire")
    shape = tuple(_int(n) for n in _list(obj.get("shape")))
    if any(n < 0 for n in shape):
        raise WireError("ndarray shape must not be negative")
    data = _unb64(obj.get("v"))
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(data):
        raise WireError(f"ndarray payload of {len(data)} bytes does not fit shape {shape} {dtype}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        raise WireError(f"unhashable {type(value).__name__} used as a key or set member") from None
    return value


def _list(value: Any, length: int | None = None) -> list[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise WireError("malformed list payload")
    return value


def _pairs(value: Any) -> list[list[Any]]:
    items = _list(value)
    if not all(isinstance(p, list) and len(p) == 2 for p in items):
        raise WireError("malformed dict payload")
    return items


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise WireError("expected a string payload")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireError("expected an integer payload")
    return value


# --- frames ------------------------------------------------------------------------------------


# Bound once: code in the sandbox that replaces json.dumps or json.loads changes what it gets, not the wire.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
decode_json = json.JSONDecoder().decode


def dumps(message: dict[str, Any], limit: int | None = None) -> bytes:
    """A message as one frame: 4-byte big-endian length, then UTF-8 JSON; FrameTooLarge when its body
    is over `limit` bytes (the receiver would refuse it)."""
    # lone surrogates (legal in a Python str) travel as JSON escapes
    body = _encode(message).encode("utf-8", "backslashreplace")
    if limit is not None and len(body) > limit:
        raise FrameTooLarge(len(body), limit)
    return _HEADER.pack(len(body)) + body


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def more_values_than(body: bytes, limit: int) -> bool:
    """Whether a JSON text holds more than about `limit` values (its containers and separators outside
    strings). Each value takes at least a byte: a text no longer than `limit` is not counted."""
    if len(body) <= limit:
        return False
    bare = _STRING.sub(b'""', body)
    return bare.count(b",") + bare.count(b"[") + bare.count(b"{") > limit


def frame_length(header: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> int:
    """The body length a frame's 4-byte header announces; WireError when it is over `max_bytes`."""
    (length,) = _HEADER.unpack_from(header)
    if length > max_bytes:
        raise WireError(f"message of {length} bytes exceeds the limit of {max_bytes} bytes")
    return length


def loads(body: bytes, max_values: int | None = None) -> dict[str, Any]:
    """Parse one message; with `max_values`, refuse one that would build more Python objects."""
    if max_values is not None and more_values_than(body, max_values):
        raise WireError(
            f"message holds more than {max_values:,} values; send large data as bytes, a numpy array or a file"
        )
    try:
        message = decode_json(body.decode("utf-8"))  # a str skips json's encoding detection
    except (ValueError, RecursionError) as exc:
        raise WireError(f"message is not valid JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise WireError("message must be a JSON object with an 'op' string")
    return message


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(dumps(message))


def recv(sock: socket.socket, max_bytes: int = MAX_MESSAGE_BYTES, max_values: int | None = None) -> dict[str, Any]:
    """Read one frame; raises EOFError on a clean close and WireError on anything else wrong."""
    length = frame_length(_recv_exact(sock, _HEADER.size, allow_eof=True), max_bytes)
    return loads(_recv_exact(sock, length, allow_eof=False), max_values)


def _recv_exact(sock: socket.socket, n: int, *, allow_eof: bool) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            if allow_eof and not chunks:
                raise EOFError("the other side closed the connection")
            raise WireError(f"connection closed in the middle of a message ({len(chunks)}/{n} bytes)")
        chunks += chunk
    return bytes(chunks)


class FrameBuffer:
    """Frames read from a socket in as few reads as they arrived in (a header and its body, or
    several frames, usually come in one): `fill` reads what is there without waiting, `next` parses
    the first complete frame. A reader that waits for the socket must ask `next` first."""

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES, max_values: int | None = MAX_VALUES) -> None:
        self.max_bytes = max_bytes
        self.max_values = max_values
        self.data = bytearray()

    def fill(self, sock: socket.socket) -> bool:
        """Append what `sock` holds now; False when it is closed. A frame cut off by the close is a
        WireError; nothing to read yet is not an error."""
        want = 1 << 16
        if len(self.data) >= _HEADER.size:
            want = max(want, min(_HEADER.unpack_from(self.data)[0] + _HEADER.size - len(self.data), 1 << 22))
        try:
            chunk = sock.recv(want, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        if chunk:
            self.data += chunk
            return True
        if self.data:
            raise WireError(f"connection closed in the middle of a message ({len(self.data)} bytes)")
        return False

    def next(self) -> dict[str, Any] | None:
        """The first complete frame, taken out of the buffer; None until one has fully arrived."""
        if len(self.data) < _HEADER.size:
            return None
        end = _HEADER.size + frame_length(self.data, self.max_bytes)
        if len(self.data) < end:
            return None
        body = bytes(self.data[_HEADER.size : end])
        del self.data[:end]
        return loads(body, self.max_values)


def send_with_fds(sock: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
    """Send one frame with file descriptors attached (SCM_RIGHTS)."""
    frame = dumps(message)
    sent = sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    if sent < len(frame):
        sock.sendall(frame[sent:])


def recv_with_fds(sock: socket.socket, max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[dict[str, Any], list[int]]:
    """One frame and the file descriptors that came with it."""
    fds = array.array("i")
    header, ancdata, _, _ = sock.recvmsg(_HEADER.size, socket.CMSG_SPACE(8 * fds.itemsize))
    if not header:
        raise EOFError("the other side closed the connection")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if len(header) < _HEADER.size:
        header += _recv_exact(sock, _HEADER.size - len(header), allow_eof=False)
    try:
        length = frame_length(header, max_bytes)
    except WireError:
        for fd in fds:
            os.close(fd)
        raise
    return loads(_recv_exact(sock, length, allow_eof=False)), list(fds)
