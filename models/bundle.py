"""Model bundles on disk: a directory a model can be rebuilt from, without pickle.

Layout (``FORMAT_VERSION`` 1)::

    config.json          model name, format_version, sensor ids, window, horizon,
                         hyper-parameters, scaler, training-data fingerprint, metrics,
                         step_s (the training data's time step in whole seconds),
                         offset_s (where its grid lies: first timestamp mod step_s)
    weights.safetensors  arrays (network weights), when the model has any
    params.json          plain JSON parameters (statsmodels fits), when it has any
    manifest.json        {"format_version": 1, "files": {name: sha256}}

:func:`save_bundle` writes into a temporary sibling directory and renames it into
place, so a crash leaves either the old bundle or the new one, never half of one.
:func:`read_bundle` checks the manifest (every listed file present, every sha256
equal) and the format version before it parses anything. Arrays are saved from CPU
numpy, so a bundle trained on CUDA loads on a CPU-only machine; nothing here unpickles
or calls ``torch.load``.

``step_s`` is null (or absent, in bundles written before it was recorded) when the step
is unknown; when it is known, ``roadcast evaluate`` refuses data of another step and
``roadcast serve`` a ``--tick`` of another step (:func:`other_step`). ``offset_s`` places
the grid: (first training timestamp - 1970-01-01T00:00Z) mod ``step_s``, in whole seconds
(1800 for hourly data stamped at half past the hour in UTC); null when ``step_s`` is (and
not read without one), and absent in bundles written before it was recorded, which read
as 0 (:func:`recorded_offset`).
``roadcast serve`` lays its ticks on that grid and refuses models of another offset
(:func:`other_offset`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import reprlib
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
PARAMS = "params.json"
MANIFEST = "manifest.json"
REQUIRED_KEYS = ("model", "sensor_ids", "window", "horizon")
MAX_STEPS = 100_000  # window and horizon: a year of 5-minute steps is about 105k
MAX_STEP_S = 3650 * 86_400  # step_s: ten years, the service's longest tick
MAX_NAME_CHARS = 100  # a model name: a folder of the registry, a label on every forecast


class BundleError(ValueError):
    """A bundle that cannot be loaded; the message says what to do about it."""


@dataclass(frozen=True, eq=False)
class Bundle:
    """A verified bundle: ``config``, ``tensors`` (name -> numpy array, CPU) and ``params``."""

    directory: Path
    config: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, Any] | None = None

    @property
    def model(self) -> str:
        return str(self.config["model"])

    def tensor(self, name: str) -> np.ndarray:
        """One array by name, or a :class:`BundleError` naming the missing key."""
        try:
            return self.tensors[name]
        except KeyError:
            raise BundleError(
                f"bundle {self.directory} has no tensor {name!r} (has {sorted(self.tensors)[:8]}); "
                "it was written by another model version: retrain it"
            ) from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_bytes(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _json_bytes(obj: Any, what: str) -> bytes:
    try:
        text = json.dumps(obj, indent=2, allow_nan=False, default=_json_default)
    except ValueError as exc:
        raise BundleError(
            f"{what} holds NaN or infinity ({exc}); replace them (e.g. with null) before saving"
        ) from None
    except TypeError as exc:
        raise BundleError(f"{what} is not JSON-serialisable: {exc}") from None
    return (text + "\n").encode()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def save_bundle(
    directory: str | Path,
    *,
    config: dict[str, Any],
    tensors: dict[str, np.ndarray] | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """Write a bundle atomically to ``directory`` (replacing an existing one).

    Parameters
    ----------
    config : must hold ``model``, ``sensor_ids``, ``window`` and ``horizon``; the
        ``format_version`` is added here. Everything else (hyper-parameters, scaler,
        fingerprint, metrics) is the model's to add.
    tensors : name -> numpy array, saved to ``weights.safetensors`` (CPU arrays only:
        use ``models.nn.weights.module_tensors`` for a torch module).
    params : JSON parameters (statsmodels fits) saved to ``params.json``.

    Raises
    ------
    BundleError
        When a required config key is missing, or config/params hold NaN or
        non-serialisable objects, or a tensor is not a numpy array.
    """
    directory = Path(directory)
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise BundleError(f"bundle config lacks {missing}; every model must record them")
    config = {**config, "format_version": FORMAT_VERSION}
    files: dict[str, bytes] = {CONFIG: _json_bytes(config, "config")}
    if params is not None:
        files[PARAMS] = _json_bytes(params, "params")
    if tensors:
        from safetensors.numpy import save as save_arrays

        bad = [k for k, v in tensors.items() if not isinstance(v, np.ndarray)]
        if bad:
            raise BundleError(
                f"tensors {bad[:5]} are not numpy arrays; convert torch tensors with "
                "models.nn.weights.module_tensors(module) (it copies them to the CPU)"
            )
        files[WEIGHTS] = save_arrays({k: np.ascontiguousarray(v) for k, v in tensors.items()})

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is read by other services
    try:
        for name, data in files.items():
            _write_bytes(tmp / name, data)
        manifest = {
            "format_version": FORMAT_VERSION,
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        }
        _write_bytes(tmp / MANIFEST, _json_bytes(manifest, "manifest"))
        old: Path | None = None
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            old.rmdir()
            directory.rename(old)
        tmp.rename(directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(
            f"{what} {path} is not valid JSON ({exc}); the bundle is corrupted: "
            "retrain it or copy it again"
        ) from None


def read_bundle(directory: str | Path) -> Bundle:
    """Read and verify the bundle in ``directory``.

    Raises
    ------
    BundleError
        No bundle there, a listed file missing, a link or outside the folder, a sha256
        mismatch (corrupted or edited file), unreadable weights, a bundle of another
        format version, or a config whose common keys
        (``model``, ``sensor_ids``, ``window``, ``horizon``, ``level``, ``step_s``,
        ``offset_s``, ``floor``) have the wrong type (naming the field).
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if directory.is_symlink() and not directory.exists():
        raise BundleError(
            f"{directory} links to {os.readlink(directory)}, which does not exist (a deleted "
            "version?); `roadcast models list` shows the versions there are, `roadcast models "
            "promote` or `rollback` links another"
        )
    if not manifest_path.is_file():
        raise BundleError(
            f"no model bundle at {directory} ({MANIFEST} missing); train one with "
            "`roadcast train DATA --out DIR` and pass DIR/bundles/<model>"
        )
    manifest = _read_json(manifest_path, "manifest")
    if not isinstance(manifest, dict):
        raise BundleError(
            f"bundle {directory}: {MANIFEST} is not a JSON object (corrupted); retrain the model"
        )
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise BundleError(
            f"bundle {directory} has format version {version!r}, this roadcast reads version "
            f"{FORMAT_VERSION}; retrain the model with this roadcast version (or load it with "
            "the version that wrote it)"
        )
    listed = manifest.get("files")
    if not isinstance(listed, dict) or CONFIG not in listed:
        raise BundleError(f"manifest of {directory} lists no {CONFIG}; the bundle is corrupted")
    for name, digest in listed.items():
        path = directory / name
        if not _plain_name(name) or path.is_symlink():
            raise BundleError(
                f"manifest of {directory} lists {name!r}, which is not a plain file of the "
                "bundle (a path or a link); the bundle is corrupted or crafted: retrain it"
            )
        if not path.is_file():
            raise BundleError(
                f"bundle {directory} is missing {name}; copy the whole bundle directory again "
                "or retrain it"
            )
        if _sha256(path) != digest:
            raise BundleError(
                f"bundle file {path} is corrupted (sha256 differs from the manifest); copy the "
                "bundle again or retrain it"
            )
    config = _read_json(directory / CONFIG, "config")
    if not isinstance(config, dict):
        raise BundleError(f"bundle {directory}: {CONFIG} is not a JSON object; retrain it")
    if config.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"bundle {directory}: {CONFIG} format version {config.get('format_version')!r} "
            f"differs from {FORMAT_VERSION}; retrain the model with this roadcast version"
        )
    _check_config(directory, config)
    tensors: dict[str, np.ndarray] = {}
    if WEIGHTS in listed:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(directory / WEIGHTS))
        except (SafetensorError, ValueError, OSError) as exc:
            raise BundleError(
                f"bundle file {directory / WEIGHTS} is not a readable safetensors file "
                f"({exc}); retrain the model or copy the bundle again"
            ) from None
    params = _read_json(directory / PARAMS, "params") if PARAMS in listed else None
    return Bundle(directory=directory, config=config, tensors=tensors, params=params)


def _plain_name(name: str) -> bool:
    """A file name of the bundle folder itself: no separators, not hidden, not ``..``."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def model_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a model (a folder ``versions/<model>`` of the registry),
    or None: it must be 1 to :data:`MAX_NAME_CHARS` printable characters, without
    ``/`` or ``\\``, not starting with a dot."""
    if not isinstance(name, str) or not name:
        return "is empty" if name == "" else "is not a string"
    if len(name) > MAX_NAME_CHARS:
        return f"is {len(name)} characters long, more than {MAX_NAME_CHARS}"
    if not _plain_name(name) or not name.isprintable():
        return "is not a plain name (it holds / or \\, control characters, or starts with a dot)"
    return None


def _check_config(directory: Path, config: dict[str, Any]) -> None:
    """The keys every bundle records have the types their readers expect.

    Raises :class:`BundleError` naming the bundle and the field, e.g. for a config that
    was edited (and its manifest re-hashed) after training.
    """

    def wrong(key: str, expected: str) -> BundleError:
        return _wrong_field(directory, config, key, expected)

    if model_name_problem(config.get("model")) is not None:
        raise wrong("model", f"a model name (a plain name of 1-{MAX_NAME_CHARS} characters)")
    ids = config.get("sensor_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(s, str) for s in ids):
        raise wrong("sensor_ids", "a non-empty list of sensor id strings")
    if len(set(ids)) != len(ids):
        raise wrong("sensor_ids", "a list without duplicates")
    for key in ("window", "horizon"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_STEPS:
            raise wrong(key, f"an integer from 0 to {MAX_STEPS}")
    level = config.get("level", 0.5)
    if not isinstance(level, int | float) or isinstance(level, bool) or not 0 < level < 1:
        raise wrong("level", "a number between 0 and 1")
    step = config.get("step_s")
    if step is not None and (
        not isinstance(step, int) or isinstance(step, bool) or not 1 <= step <= MAX_STEP_S
    ):
        raise wrong("step_s", f"a whole number of seconds from 1 to {MAX_STEP_S} (or null)")
    offset = config.get("offset_s")  # without a step it means nothing, and is not read
    top = MAX_STEP_S if step is None else step
    if offset is not None and (
        not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < top
    ):
        raise wrong("offset_s", f"a whole number of seconds from 0 to {top - 1} (or null)")
    if not _floor_fits(config.get("floor"), len(ids)):
        raise wrong("floor", f"null or a list of {len(ids)} finite numbers or nulls (per sensor)")
    if not _halfwidth_fits(config.get("halfwidth"), config["horizon"], len(ids)):
        raise wrong(
            "halfwidth",
            f"null or {config['horizon']} lists (per step) of {len(ids)} finite numbers >= 0",
        )
    if not _halfwidth_fits(config.get("hour_scale"), 24, len(ids)):
        per_hour = f"null or 24 lists (per hour of the day) of {len(ids)} finite numbers >= 0"
        raise wrong("hour_scale", per_hour)


def _wrong_field(directory: Path, config: dict[str, Any], key: str, expected: str) -> BundleError:
    """The error for a config field that is not what its readers expect."""
    got = reprlib.repr(config[key]) if key in config else "nothing"
    return BundleError(
        f"bundle {directory}: {CONFIG} field {key!r} must be {expected}, got {got} "
        "(edited after training?); retrain the model or copy the bundle again"
    )


def _floor_fits(floor: Any, sensors: int) -> bool:
    """``floor`` is null or one finite number (or null: no floor) per sensor."""
    if floor is None:
        return True
    return (
        isinstance(floor, list)
        and len(floor) == sensors
        and all(f is None or _finite_number(f) for f in floor)
    )


def _halfwidth_fits(halfwidth: Any, horizon: int, sensors: int) -> bool:
    """``halfwidth`` is null or one finite width >= 0 per step (or hour) and sensor."""
    if halfwidth is None:
        return True
    return (
        isinstance(halfwidth, list)
        and len(halfwidth) == horizon
        and all(
            isinstance(row, list)
            and len(row) == sensors
            and all(_finite_number(w) and w >= 0 for w in row)
            for row in halfwidth
        )
    )


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def step_seconds(step: timedelta | None) -> int | None:
    """A data step (``SensorPanel.freq``, a tick) in whole seconds; None when it is
    unknown (None, NaT), not positive or not a whole number of seconds."""
    seconds = float("nan") if step is None else step.total_seconds()
    return int(seconds) if seconds > 0 and seconds.is_integer() else None


def other_step(model: object, step: timedelta) -> int | None:
    """The time step ``model`` was trained on (its ``step_s``) when it is known and is not
    ``step``; None when they agree or either is unknown (no ``step_s``, NaT)."""
    step_s: int | None = getattr(model, "step_s", None)
    seconds = step.total_seconds()  # NaN for NaT
    return step_s if step_s is not None and math.isfinite(seconds) and seconds != step_s else None


def grid_offset(first: datetime | None, step_s: int | None) -> int | None:
    """Where the grid of ``step_s`` steps through ``first`` lies: (``first`` - the epoch)
    mod ``step_s`` in whole seconds (a bundle's ``offset_s``); None when either is
    unknown. A naive ``first`` is read as UTC."""
    if first is None or step_s is None:
        return None
    if first.tzinfo is None:
        first = first.replace(tzinfo=UTC)
    return math.floor(first.timestamp()) % step_s


def recorded_offset(config: dict[str, Any]) -> int | None:
    """A bundle config's ``offset_s``: 0 when it records a step but no offset (written
    before offsets were recorded), None when it records no step."""
    if config.get("step_s") is None:
        return None
    return int(config.get("offset_s") or 0)


def other_offset(model: object, offset_s: float) -> int | None:
    """The grid offset ``model`` was trained on (its ``offset_s``) when it is known and is
    not ``offset_s``; None when they agree or the model's is unknown."""
    own: int | None = getattr(model, "offset_s", None)
    return own if own is not None and own != offset_s else None


def offset_text(seconds: float) -> str:
    """A grid offset in words: ``1800`` -> ``"+30min"``, ``0`` -> ``"+0s"``, ``0.25`` ->
    ``"+0.25s"``."""
    return "+" + duration_text(seconds)


def duration_text(seconds: float) -> str:
    """A duration in words, whole days, hours and minutes first: ``5400`` -> ``"1h30min"``,
    ``900`` -> ``"15min"``, ``2.5`` -> ``"2.5s"``, ``0`` -> ``"0s"``."""
    parts = []
    rest = abs(float(seconds))
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count:.0f}{unit}")
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return ("-" if seconds < 0 else "") + "".join(parts)


def step_text(seconds: float) -> str:
    """A step in words: ``300`` -> ``"5-minute"``, ``3600`` -> ``"1-hour"``."""
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.12g}-{unit}"
    return f"{seconds:.12g}-second"


def read_model_bundle(directory: str | Path, name: str) -> Bundle:
    """:func:`read_bundle`, refusing a bundle of another model than ``name``."""
    bundle = read_bundle(directory)
    if bundle.model != name:
        raise BundleError(
            f"bundle {directory} holds a {bundle.model!r} model, not {name!r}; load it with "
            "models.forecasters.registry.load_model(directory)"
        )
    for key in ("window", "horizon"):  # 0 fits a detector's bundle, never a forecaster's
        if bundle.config[key] < 1:
            expected = f"an integer from 1 to {MAX_STEPS} for a forecaster"
            raise _wrong_field(Path(directory), bundle.config, key, expected)
    return bundle


def finite_or_none(obj: Any) -> Any:
    """Nested dicts/lists with NaN and infinities replaced by None (JSON has no NaN).

    Tuples become lists, as ``json.dumps`` writes them anyway.
    """
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float | np.floating) and not np.isfinite(obj):
        return None
    return obj
