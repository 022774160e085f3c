"""Read an HDF5 file without running code from its pickles.

PyTables unpickles two things when pandas reads an ``h5:`` file: object columns (what
``to_hdf`` writes for an ``object`` column in the fixed format) and node attributes
that are not plain HDF5 values. A pickle names callables that are called while it
loads, so a crafted file could run any code it likes.

Inside :func:`safe_unpickling`, PyTables' two unpickling modules (``tables.atom`` and
``tables.attributeset``) see a ``pickle`` whose ``loads`` is :class:`AttributeUnpickler`:
it resolves only what pandas itself pickles into a file, its date offsets (an index's
``freq``), ``datetime.timezone`` / ``timedelta`` and ``ZoneInfo`` (an index's ``tz``),
and refuses any other callable before calling anything. The refusals are collected so
the reader can name them.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import pickle
import threading
import types
import zoneinfo
from collections.abc import Iterator
from typing import Any

__all__ = ["AttributeUnpickler", "RefusedPickle", "safe_unpickling"]

_OFFSETS = "pandas._libs.tslibs.offsets"
_LOCK = threading.Lock()


class RefusedPickle(pickle.UnpicklingError):
    """A pickle names a callable outside :data:`_ALLOWED` (nothing was called)."""


def _zoneinfo_getattr(owner: Any, name: str) -> Any:
    """``getattr`` as a pickled ``ZoneInfo`` uses it (``ZoneInfo._unpickle``), only that."""
    if owner is not zoneinfo.ZoneInfo or name != "_unpickle":
        raise RefusedPickle(f"it calls getattr({owner!r}, {name!r})")
    return zoneinfo.ZoneInfo._unpickle  # type: ignore[attr-defined]


_ALLOWED: dict[tuple[str, str], Any] = {
    ("datetime", "timezone"): datetime.timezone,
    ("datetime", "timedelta"): datetime.timedelta,
    ("zoneinfo", "ZoneInfo"): zoneinfo.ZoneInfo,
    ("builtins", "getattr"): _zoneinfo_getattr,
    ("__builtin__", "getattr"): _zoneinfo_getattr,  # protocol 0, as PyTables writes
}


class AttributeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the callables pandas pickles into an HDF5 file."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == _OFFSETS:
            from pandas._libs.tslibs import offsets

            found = getattr(offsets, name, None)
            if isinstance(found, type) and issubclass(found, offsets.BaseOffset):
                return found
        raise RefusedPickle(f"it calls {module}.{name}")


@contextlib.contextmanager
def safe_unpickling() -> Iterator[list[str]]:
    """While inside, PyTables unpickles with :class:`AttributeUnpickler`; yields the list
    of what it refused (``"it calls os.system"``), filled as PyTables reads."""
    import tables.atom
    import tables.attributeset

    refused: list[str] = []

    def loads(data: bytes, *, encoding: str = "ASCII", **_: Any) -> Any:
        try:
            return AttributeUnpickler(io.BytesIO(data), encoding=encoding).load()
        except RefusedPickle as exc:
            refused.append(str(exc))
            raise

    restricted = types.ModuleType("pickle")
    restricted.__dict__.update(vars(pickle))
    restricted.loads = loads  # type: ignore[attr-defined]
    modules = (tables.atom, tables.attributeset)
    with _LOCK:
        saved = [m.pickle for m in modules]  # type: ignore[attr-defined]
        for m in modules:
            m.pickle = restricted  # type: ignore[attr-defined]
        try:
            yield refused
        finally:
            for m, original in zip(modules, saved, strict=True):
                m.pickle = original  # type: ignore[attr-defined]
