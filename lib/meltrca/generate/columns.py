"""Arrow columns built from numpy arrays without a Python loop per row (ids, text, maps, times)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")
TS_TYPE = pa.timestamp("us", tz="UTC")


def hex_ids(words: np.ndarray) -> pa.StringArray:
    """Lower-case hex strings from uint64 words: shape (n,) -> 16 chars, (n, 2) -> 32 chars."""
    w = np.ascontiguousarray(words, dtype=">u8")
    n = w.shape[0]
    width = 16 * (w.shape[1] if w.ndim == 2 else 1)
    data = _HEX[w.view(np.uint8).reshape(n, width // 2)].tobytes()
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


def take(values: Sequence[str], index: np.ndarray) -> pa.Array:
    """values[index] as an Arrow string array (dictionary decode in C++)."""
    return pa.array(list(values), type=pa.string()).take(pa.array(np.asarray(index, dtype=np.int64)))


def constant(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)


def number_text(values: np.ndarray, decimals: int = 0) -> pa.Array:
    """Numbers as text: integers when decimals == 0, else rounded to `decimals` places."""
    if decimals == 0:
        return pc.cast(pa.array(np.rint(values).astype(np.int64)), pa.string())
    return pc.cast(pc.round(pa.array(np.asarray(values, dtype=float)), decimals), pa.string())


def join(parts: Sequence[str | pa.Array], n: int) -> pa.Array:
    """Row-wise concatenation of literal strings and string arrays."""
    arrays = [constant(p, n) if isinstance(p, str) else p for p in parts]
    if len(arrays) == 1:
        return arrays[0]
    return pc.binary_join_element_wise(*arrays, "")


def timestamps(origin: datetime, ms: np.ndarray) -> pa.Array:
    """Timestamps (UTC, microseconds) at `ms` milliseconds after `origin` (naive UTC)."""
    return micros(origin, np.rint(np.asarray(ms, dtype=float) * 1000).astype(np.int64))


def micros(origin: datetime, us: np.ndarray) -> pa.Array:
    """Timestamps (UTC) at whole microseconds `us` after `origin` (naive UTC)."""
    base = int((origin - datetime(1970, 1, 1)).total_seconds() * 1_000_000)
    return pa.array(base + np.asarray(us, dtype=np.int64), type=TS_TYPE)


def string_map(entries: Sequence[tuple[str, pa.Array, np.ndarray | None]], n: int) -> pa.MapArray:
    """map<string,string> per row from (key, values, present mask or None = always) triples."""
    if not entries:
        return pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string()),
                                       pa.array([], pa.string()))
    present = np.stack([np.ones(n, bool) if m is None else np.asarray(m, bool) for _, _, m in entries], axis=1)
    rows, cols = np.nonzero(present)  # row-major: entries of a row stay together, in key order
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(present.sum(axis=1), out=offsets[1:])
    keys = take([k for k, _, _ in entries], cols)
    values = pa.concat_arrays([v.cast(pa.string()) for _, v, _ in entries]).take(pa.array(cols * n + rows))
    return pa.MapArray.from_arrays(pa.array(offsets), keys, values)
