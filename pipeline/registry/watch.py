"""Hot reload: notice a new serving set and load it off the service's loop.

:func:`load_serving` loads what a model directory serves, with each model's version.
:class:`ServingWatcher` is what ``roadcast serve`` polls between batches: a ``stat`` of
``serving.json`` at most every ``every_s`` seconds (cheap); when the file changed and
names other versions than those running, one background thread loads and verifies
them (:func:`load_serving`: manifest checksums, one network) while the loop goes on
forecasting with the old models. :meth:`ServingWatcher.poll` hands the loaded set over
once it is ready; the service swaps at a tick boundary. A set that fails to load is
refused with a log line (``model_reload_refused``) naming why, and the old models keep
serving; it is not retried until ``serving.json`` changes again. A model folder (or its
``serving.json``) that disappears is logged once (``model_dir_missing``, the loaded
models keep serving), and once when it is back (``model_dir_back``). Given the service's
tick, both refuse a bundle trained on another time step (:func:`check_tick`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from models.bundle import other_step, step_text
from models.forecasters.base import Forecaster
from pipeline.model_dir import (
    SERVING_FILE,
    BundleDirError,
    Serving,
    bundle_configs,
    bundles_dir,
    discover_bundles,
    load_bundles,
    read_serving,
)
from pipeline.registry.versions import ModelVersion, describe

log = logging.getLogger("roadcast.registry")


@dataclass(frozen=True)
class LoadedSet:
    """Loaded models (``{name: model}``), their versions, and the serving set they came
    from (None for a folder of unversioned bundles)."""

    models: dict[str, Forecaster]
    versions: dict[str, ModelVersion]
    serving: Serving | None

    def ids(self) -> dict[str, str]:
        """``{model: version id}``."""
        return {name: v.version for name, v in self.versions.items()}


def load_serving(
    model_dir: str | Path,
    *,
    only: Sequence[str] | None = None,
    tick: pd.Timedelta | None = None,
) -> LoadedSet:
    """Load the models ``model_dir`` serves, with their versions; with ``tick`` (the
    service's), refuse a model trained on another time step (:func:`check_tick`).

    Raises what :func:`pipeline.model_dir.load_bundles` raises (no bundle, a corrupt
    one, different networks, a name of ``only`` not served), and
    :class:`~pipeline.model_dir.BundleDirError` for a model of another step.
    """
    serving = read_serving(model_dir) if not (Path(model_dir) / "config.json").is_file() else None
    paths = discover_bundles(model_dir)
    models = load_bundles(model_dir, only=only, paths=paths)
    by_model = {}
    for path in paths:
        version = describe(path)
        if version.model in models:
            by_model[version.model] = version
    loaded = LoadedSet(
        models, {name: by_model[name] for name in models if name in by_model}, serving
    )
    if tick is not None:
        check_tick(loaded, tick)
    return loaded


def check_tick(loaded: LoadedSet, tick: pd.Timedelta) -> None:
    """Refuse a model whose bundle records another time step (``step_s``) than ``tick``;
    a bundle that records none is served at any tick.

    Raises
    ------
    BundleDirError
        Naming the bundle, its step and the tick.
    """
    for name, model in loaded.models.items():
        if (step_s := other_step(model, tick)) is not None:
            where = loaded.versions[name].path if name in loaded.versions else name
            raise BundleDirError(f"bundle {where} {_other_step_text(step_s, tick)}")


def _other_step_text(step_s: int, tick: pd.Timedelta) -> str:
    return (
        f"was trained on {step_text(step_s)} steps, but the service's tick is "
        f"{step_text(tick.total_seconds())}: serve it with --tick {step_s}s or serve a "
        "model trained on data at the tick"
    )


def option_problem(
    model_dir: str | Path,
    only: Sequence[str],
    tick: pd.Timedelta,
    forecaster: str | None = None,
) -> str | None:
    """What is wrong with ``--only``, ``--tick`` and ``--alert-model`` for the bundles
    ``model_dir`` serves, read from their configs without loading them (None: nothing,
    or a bundle whose config is unreadable, which its own checks refuse as it loads):
    ``roadcast serve`` asks before it joins the consumer group."""
    try:
        configs = list(bundle_configs(model_dir).values())
    except BundleDirError:
        return None
    steps: dict[str, int | None] = {}
    for config in configs:
        if config is None or "model" not in config:
            return None
        step_s = config.get("step_s")
        steps[str(config["model"])] = step_s if isinstance(step_s, int) else None
    unknown = [name for name in only if name not in steps]
    if unknown:
        return f"--only: no bundle for model(s) {unknown} in {model_dir}; it has {sorted(steps)}"
    served = [name for name in steps if not only or name in only]
    for name in served:
        if (step_s := steps[name]) is not None and step_s != tick.total_seconds():
            return f"--tick: model {name!r} {_other_step_text(step_s, tick)}"
    if forecaster is not None and forecaster not in served:
        return f"--alert-model {forecaster!r} is not served; served models: {sorted(served)}"
    return None


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when ``serving.json`` is replaced: inode, size, mtime (None: absent)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class ServingWatcher:
    """Watches a model directory's serving set for a service (see the module docstring).

    Parameters
    ----------
    model_dir : the folder the service loaded its models from.
    running : ``{model: version id}`` of the models the service runs now.
    only : the service's ``--only`` model names (empty: every served model).
    every_s : at most one ``stat`` of ``serving.json`` this often.
    clock : monotonic seconds (tests pass their own).
    tick : the service's tick: a set with a model of another step is refused (None: no
        check).
    """

    def __init__(
        self,
        model_dir: str | Path,
        running: Mapping[str, str],
        *,
        only: Sequence[str] = (),
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        tick: pd.Timedelta | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.path = bundles_dir(model_dir) / SERVING_FILE
        self.running = dict(running)
        self.only = tuple(only)
        self.every_s = every_s
        self.clock = clock
        self.tick = tick
        self._seen = _signature(self.path)
        self._versioned = self._seen is not None  # a serving.json to watch, not just a folder
        self._missing: Path | None = None  # what was found missing at the last check
        self._checked = clock()
        self._loading: Future[LoadedSet] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roadcast-reload")
        self.refusals = 0

    def poll(self) -> LoadedSet | None:
        """A newly loaded serving set ready to swap in, or None (cheap when nothing changed)."""
        if self._loading is not None:
            if not self._loading.done():
                return None
            future, self._loading = self._loading, None
            try:
                loaded = future.result()
            except Exception as exc:
                self.refused(f"{type(exc).__name__}: {exc}")
                return None
            if loaded.ids() == self.running:
                return None
            return loaded
        now = self.clock()
        if now - self._checked < self.every_s:
            return None
        self._checked = now
        seen = _signature(self.path)
        if not self._present(seen):
            return None
        if seen == self._seen or seen is None:
            return None
        self._seen = seen
        try:
            serving = read_serving(self.model_dir)
        except Exception as exc:
            self.refused(str(exc))
            return None
        if serving is None:
            return None
        wanted = {m: v for m, v in serving.models.items() if not self.only or m in self.only}
        if wanted == self.running:
            return None
        fields = {"running": self.running, "serving": wanted, "reason": serving.reason}
        log.info("model_reload_started", extra={"fields": fields})
        self._loading = self._pool.submit(
            load_serving, self.model_dir, only=self.only or None, tick=self.tick
        )
        return None

    def _present(self, seen: tuple[int, int, int] | None) -> bool:
        """Whether the model folder (and its ``serving.json``, if it had one) is there;
        logs once when it goes missing and once when it is back."""
        if not self.model_dir.exists():
            missing: Path | None = self.model_dir
        else:
            missing = self.path if self._versioned and seen is None else None
        if missing == self._missing:
            return missing is None
        if missing is not None:
            hint = "the loaded models keep serving; a serving set is loaded when it is back"
            fields = {"path": str(missing), "running": self.running, "hint": hint}
            log.warning("model_dir_missing", extra={"fields": fields})
        else:
            log.info("model_dir_back", extra={"fields": {"path": str(self._missing)}})
        self._missing = missing
        return missing is None

    def swapped(self, loaded: LoadedSet) -> None:
        """The service now runs ``loaded``."""
        self.running = loaded.ids()

    def refused(self, reason: str) -> None:
        """Log that a serving set was not loaded (counted in :attr:`refusals`); the
        running models keep serving."""
        self.refusals += 1
        log.error(
            "model_reload_refused",
            extra={"fields": {"reason": reason, "running": self.running, "file": str(self.path)}},
        )

    def close(self) -> None:
        """Stop the loading thread (a load in progress is abandoned)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
