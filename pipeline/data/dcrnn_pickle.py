"""DCRNN's ``adj_mx.pkl`` read without running code from the file.

DCRNN pickles ``(sensor_ids, sensor_id_to_ind, adj_mx)``: a list of str, a dict
str -> int and a float ``numpy`` array. A pickle names the callables that rebuild it,
so :class:`AdjacencyUnpickler` resolves only those that format needs: numpy's array
rebuilders (``_reconstruct``, and ``_frombuffer`` for protocol 5) under their numpy 1
and numpy 2 module names, ``ndarray``, ``dtype``, and ``_codecs.encode`` restricted to
latin-1 (protocol 2 writes bytes with it). Any other name is refused before anything
is called; an array larger than an array may be here is refused before it is allocated.
The result is then checked for that exact shape.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.arrays import MAX_ARRAY_BYTES

try:  # numpy 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

__all__ = ["AdjacencyPickleError", "AdjacencyUnpickler", "read_adjacency_pickle"]

_LATIN1 = {"latin1", "latin-1", "iso-8859-1", "iso8859-1"}


class AdjacencyPickleError(ValueError):
    """The file is not a DCRNN adjacency pickle, or names something it may not."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol 2 uses it (str -> bytes), latin-1 only."""
    if encoding.lower() not in _LATIN1 or not isinstance(text, str):
        raise AdjacencyPickleError(f"_codecs.encode with {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


def _bounded(shape: Any, dtype: Any) -> None:
    """Refuse an array the pickle asks for that is larger than an array may be here
    (:data:`~pipeline.data.arrays.MAX_ARRAY_BYTES`), before it is allocated."""
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    size = int(np.prod([int(n) for n in dims], dtype=object)) * np.dtype(dtype).itemsize
    if size > MAX_ARRAY_BYTES:
        raise AdjacencyPickleError(
            f"it asks for an array of shape {dims} ({size / 2**30:.1f} GiB), more than the "
            f"{MAX_ARRAY_BYTES // 2**30} GiB an array may hold here"
        )


def _new_array(shape: Any, dtype: Any = float, *args: Any, **kwargs: Any) -> np.ndarray:
    """``numpy.ndarray(shape, dtype, ...)``, bounded by :func:`_bounded`."""
    _bounded(shape, dtype)
    return np.ndarray(shape, dtype, *args, **kwargs)


def _rebuilt(cls: Any, shape: Any, dtype: Any) -> Any:
    """numpy's ``_reconstruct``, bounded by :func:`_bounded` (``numpy.ndarray`` as the
    pickle names it resolves to :func:`_new_array`)."""
    _bounded(shape, dtype)
    return _reconstruct(np.ndarray if cls is _new_array else cls, shape, dtype)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _rebuilt,
    ("numpy._core.multiarray", "_reconstruct"): _rebuilt,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol 5: the buffer's own size
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _new_array,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class AdjacencyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of DCRNN's adjacency format."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise AdjacencyPickleError(
                f"it refers to {module}.{name}, which a DCRNN adjacency never does "
                "(refused without running it)"
            ) from None


def _unpickle(data: bytes, encoding: str) -> Any:
    return AdjacencyUnpickler(io.BytesIO(data), encoding=encoding).load()


def read_adjacency_pickle(path: Path) -> tuple[list[str], dict[str, int], np.ndarray]:
    """``(sensor_ids, sensor_id_to_ind, adj_mx)`` from a DCRNN pickle, checked.

    Raises
    ------
    AdjacencyPickleError
        When the file is not a pickle, refers to anything outside the format, or does
        not hold a list of ids, a dict of ids to row numbers and a square numeric
        matrix of matching size.
    """
    data = path.read_bytes()
    try:
        try:
            content = _unpickle(data, "ASCII")
        except UnicodeDecodeError:  # written by Python 2
            content = _unpickle(data, "latin1")
    except AdjacencyPickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as exc:
        raise AdjacencyPickleError(f"not a readable pickle ({exc})") from None
    except MemoryError:
        raise AdjacencyPickleError("it asks for more memory than this machine has") from None
    return _check(content)


def _check(content: Any) -> tuple[list[str], dict[str, int], np.ndarray]:
    if not isinstance(content, tuple | list) or len(content) != 3:
        raise AdjacencyPickleError("expected (sensor_ids, sensor_id_to_ind, adj_mx)")
    ids, id_to_ind, adj = content
    if not isinstance(ids, list) or not all(isinstance(s, str | bytes) for s in ids):
        raise AdjacencyPickleError("sensor_ids is not a list of strings")
    if not isinstance(id_to_ind, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in id_to_ind.values()
    ):
        raise AdjacencyPickleError("sensor_id_to_ind is not a dict of ids to row numbers")
    if not isinstance(adj, np.ndarray) or adj.dtype.kind not in "fiu":
        raise AdjacencyPickleError("adj_mx is not a numeric numpy array")
    n = len(ids)
    if adj.shape != (n, n):
        raise AdjacencyPickleError(f"adj_mx has shape {adj.shape}, expected ({n}, {n})")
    mapping = {_text(k): v for k, v in id_to_ind.items()}
    if any(not 0 <= v < n for v in mapping.values()):
        raise AdjacencyPickleError(f"sensor_id_to_ind has row numbers outside 0..{n - 1}")
    rows: dict[int, str] = {}
    for sensor, row in mapping.items():
        if (other := rows.setdefault(row, sensor)) != sensor:
            raise AdjacencyPickleError(
                f"sensor_id_to_ind maps {other!r} and {sensor!r} to the same row {row}; "
                "each sensor needs its own row"
            )
    return [_text(s) for s in ids], mapping, adj.astype(np.float64, copy=False)


def _text(value: str | bytes) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)
