"""The serving set: which version of each model ``roadcast serve`` and the flows use.

``<bundles>/serving.json`` (:class:`pipeline.model_dir.Serving`) names one version per
model, the champion promoted with them, and the sets served before (newest first, the
last :data:`HISTORY` kept). It is the single switch of the registry: a new set is
written to a temporary file, flushed and renamed over the old one, after every
version it names was verified (manifest checksums) and found to forecast one sensor
network. A service watching the file (:mod:`pipeline.registry.watch`) therefore sees
the old set or the new one, never a half-written bundle nor a mix. Promotions and
rollbacks take turns (:func:`serving_lock`), so two at once cannot both build on the same
set and drop one of them from the history.

* :func:`promote` -- serve chosen versions (the train flow promotes its run's; by hand:
  ``roadcast models promote``);
* :func:`rollback` -- serve the set before the current one again;
* :func:`ensure_registry` -- a folder of unversioned bundles (``<bundles>/<model>``,
  what ``roadcast train`` wrote before versions existed) becomes versions and a
  serving set of exactly those bundles, so nothing served changes.

``<bundles>/<model>`` is then a symbolic link to the served version of each model, so
that a path such as ``OUT/bundles/ar`` (``roadcast evaluate``) keeps naming the model
being served; nothing reads the links to decide what to serve.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.folder_lock import folder_lock
from pipeline.model_dir import (
    CHAMPION_FILE,
    CONFIG,
    DETECTORS_DIR,
    SERVING_FILE,
    VERSIONS,
    BundleDirError,
    Champion,
    Serving,
    bundles_dir,
    discover_bundles,
    read_champion,
    read_network,
    read_serving,
    utc_now_text,
    write_serving,
)
from pipeline.model_dir import promote as write_champion
from pipeline.registry.versions import (
    ModelVersion,
    RegistryError,
    describe,
    find_version,
    register,
    registered,
    version_ref,
)
from pipeline.settings import shown as shown_value

log = logging.getLogger("roadcast.registry")

HISTORY = 50
LOCK_WAIT_S = 60.0  # how long a promotion or rollback waits for another one
IMPORTED = "imported"


def registry_root(models_dir: str | Path) -> Path:
    """The bundles folder of ``models_dir`` (created when missing); refuses a single bundle."""
    root = bundles_dir(models_dir)
    if (root / CONFIG).is_file():
        raise RegistryError(
            f"{root} is one bundle, not a model directory; pass the folder that holds the "
            "bundles (e.g. OUT/bundles)"
        )
    if (registry := enclosing_registry(root)) is not None:
        raise RegistryError(
            f"{root} is a folder inside the model directory {registry} (its versions or "
            f"saved detectors), not one; pass {registry}"
        )
    root.mkdir(parents=True, exist_ok=True)
    return root


def enclosing_registry(folder: Path) -> Path | None:
    """The model directory ``folder`` lies inside (under its ``versions/`` or
    ``detectors/``), else None: treated as a directory of its own, its bundles would be
    registered again and the originals removed."""
    for inner in (folder, *folder.parents):
        outer = inner.parent
        if inner.name in (VERSIONS, DETECTORS_DIR) and (outer / SERVING_FILE).is_file():
            return outer
    return None


def ensure_registry(models_dir: str | Path) -> Serving | None:
    """The serving set of ``models_dir``, after moving unversioned bundles into the registry.

    A folder without ``serving.json`` whose sub-directories are bundles gets each of
    them registered (label ``imported``), a serving set of exactly those versions (with
    the champion of ``champion.json``) and links in their place. None when the folder
    holds no bundle at all; a :class:`RegistryError` (nothing changed) when two of its
    bundles hold the same model.
    """
    root = registry_root(models_dir)
    current = read_serving(root)
    if current is not None:
        return current
    legacy = [p for p in discover_bundles(root) if not p.is_symlink()]
    if not legacy:
        return _recovered(root)
    holders: dict[str, Path] = {}
    for path in legacy:
        model = describe(path).model
        if model in holders:
            raise RegistryError(
                f"bundles {holders[model]} and {path} both hold model {model!r}; keep one "
                "(a model directory serves one version per model) and try again"
            )
        holders[model] = path
    versions = {v.model: v for v in (register(root, p, label=IMPORTED, run_id="") for p in legacy)}
    champion = read_champion(root)
    serving = Serving(
        models={m: v.version for m, v in versions.items()},
        champion=None if champion is None else champion.to_dict(),
        promoted_at=utc_now_text(),
        reason=f"{IMPORTED} from unversioned bundles",
    )
    write_serving(root, serving)
    for path in legacy:  # now copies: links to the versions take their place
        aside = path.with_name(f".{path.name}.imported-{uuid.uuid4().hex[:8]}")
        path.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)
    _link(root, serving)
    log.info("registry_imported", extra={"fields": {"models": serving.models}})
    return serving


def check_versions(root: Path, versions: Mapping[str, ModelVersion]) -> None:
    """Refuse versions the flows and ``roadcast serve`` would refuse to load: bundles that
    do not verify or rebuild, hold another model than their name, were trained on
    different time steps or tick grids, or forecast different sensor networks.

    Raises
    ------
    RegistryError
        Naming the version and what is wrong with it.
    """
    from models.bundle import BundleError, offset_text, step_text
    from models.forecasters.registry import load_model

    loaded = {}
    for name, version in versions.items():
        ref = version_ref(name, version.version)
        try:
            model = load_model(version.path)
        except (BundleError, OSError) as exc:
            raise RegistryError(f"{ref} cannot be served: {exc}") from None
        if model.name != name:
            raise RegistryError(
                f"{ref} cannot be served: {version.path} holds a {model.name!r} model"
            )
        loaded[name] = model
    if (shown := _mixed(loaded, versions, "step_s", step_text)) is not None:
        raise RegistryError(
            f"these versions were trained on different time steps ({shown}); a model "
            "directory serves one tick: promote versions trained at the same step"
        )
    if (shown := _mixed(loaded, versions, "offset_s", offset_text)) is not None:
        raise RegistryError(
            f"these versions were trained on ticks at different offsets past the tick grid of "
            f"1970-01-01T00:00Z ({shown}); a model directory serves one tick grid: promote "
            "versions trained on data stamped alike"
        )
    sensors = {name: frozenset(m.sensor_ids) for name, m in loaded.items()}
    network = read_network(root)
    expected = frozenset(network.sensor_ids) if network is not None else None
    for name, own in sensors.items():
        reference = expected if expected is not None else next(iter(sensors.values()))
        if own != reference:
            what = "network.json" if expected is not None else "the other models"
            raise RegistryError(
                f"{version_ref(name, versions[name].version)} forecasts {len(own)} sensors, "
                f"not the {len(reference)} of {what} ({len(own - reference)} only in the "
                f"model, {len(reference - own)} only in {what}); a model directory serves one "
                "sensor network"
            )


def _mixed(
    loaded: Mapping[str, Any],
    versions: Mapping[str, ModelVersion],
    attribute: str,
    words: Callable[[float], str],
) -> str | None:
    """Each version's ``attribute`` in ``words`` (``ar@3f2a9c: 5-minute, ...``) when the
    ``loaded`` models that record it differ in it; None when they agree."""
    values = {n: v for n, m in loaded.items() if (v := getattr(m, attribute, None)) is not None}
    if len(set(values.values())) <= 1:
        return None
    shown = [f"{version_ref(n, versions[n].version)}: {words(v)}" for n, v in values.items()]
    return ", ".join(shown)


def _recovered(root: Path) -> Serving | None:
    """The serving set the links ``<bundles>/<model>`` to registered versions still show
    (what a service serves) when ``serving.json`` is gone, written back; None without links.
    """
    linked = {}
    for entry in root.iterdir():
        if entry.is_symlink():
            parts = Path(os.readlink(entry)).parts
            if len(parts) == 3 and parts[:2] == (VERSIONS, entry.name) and entry.is_dir():
                linked[entry.name] = parts[2]
    if not linked:
        return None
    champion = read_champion(root)
    serving = Serving(
        models=linked,
        champion=None
        if champion is None or champion.champion not in linked
        else champion.to_dict(),
        promoted_at=utc_now_text(),
        reason=f"recovered from the links to the versions ({SERVING_FILE} was missing)",
    )
    write_serving(root, serving)
    log.warning(
        "warning: %s was missing; recovered the set its links serve: %s",
        root / SERVING_FILE,
        ", ".join(f"{m}@{v}" for m, v in sorted(linked.items())),
    )
    return serving


def promote(
    models_dir: str | Path,
    chosen: Mapping[str, str | None],
    *,
    champion: Champion | None = None,
    replace: bool = False,
    reason: str = "promoted by hand",
) -> Serving:
    """Serve the ``chosen`` versions (``{model: version ref or None for the newest}``).

    With ``replace`` they become the whole serving set (also over an unreadable
    ``serving.json``); otherwise they replace those models' versions and the other served
    models stay. ``champion`` is recorded with the set (``champion.json`` too); without it
    the current champion is kept while its model is still served. Returns the new set.

    Raises
    ------
    RegistryError
        An unknown or corrupt version, versions of different networks, a champion that
        would not be served, or nothing to serve.
    """
    root = registry_root(models_dir)
    with serving_lock(root):
        return _promote(root, chosen, champion, replace, reason)


def _promote(
    root: Path,
    chosen: Mapping[str, str | None],
    champion: Champion | None,
    replace: bool,
    reason: str,
) -> Serving:
    try:
        current = ensure_registry(root)
    except BundleDirError:
        if not replace:
            raise
        current = None  # an unreadable serving.json: --only writes a whole new one
        log.warning(
            "warning: %s was unreadable; the new serving set replaces it", root / SERVING_FILE
        )
    picked = {model: find_version(root, model, ref) for model, ref in chosen.items()}
    served = {} if replace or current is None else dict(current.models)
    served.update({model: v.version for model, v in picked.items()})
    if not served:
        raise RegistryError("nothing to serve: name at least one model")
    if champion is not None and champion.champion not in served:
        raise RegistryError(
            f"champion {shown_value(champion.champion)} would not be served (serving "
            f"{sorted(served)}); name a served model, or promote it too"
        )
    versions = {m: registered(root, m, v) for m, v in served.items()}
    check_versions(root, versions)
    record = champion.to_dict() if champion is not None else None
    kept = current.champion if current is not None else None
    if champion is None and kept is not None:
        if kept.get("champion") in served:
            record = kept
        else:
            log.warning(
                "warning: the champion %r is no longer served, so the new set has none; "
                "record one with --champion MODEL",
                kept.get("champion"),
            )
    committed = _commit(root, current, served, record, reason)
    dropped = sorted(set(current.models) - set(served)) if current is not None else []
    if dropped:
        log.warning(
            "warning: no longer served: %s (not in the new set; their versions stay "
            "registered, and `roadcast models promote MODEL` serves one again)",
            ", ".join(dropped),
        )
    return committed


def rollback(models_dir: str | Path, steps: int = 1) -> Serving:
    """Serve again the set that was served ``steps`` promotions ago; returns it.

    The sets in between leave the history (their versions stay registered and can be
    promoted again).

    Raises
    ------
    RegistryError
        When the history is shorter than ``steps`` or a version it names is gone.
    """
    if steps < 1:
        raise RegistryError(f"steps must be at least 1, got {steps}")
    root = registry_root(models_dir)
    with serving_lock(root):
        return _rollback(root, steps)


def _rollback(root: Path, steps: int) -> Serving:
    current = read_serving(root)
    if current is None or len(current.history) < steps:
        depth = 0 if current is None else len(current.history)
        raise RegistryError(
            f"cannot roll back {steps} step(s) in {root}: its history holds {depth} earlier "
            "serving set(s) (see `roadcast models list`)"
        )
    target = Serving.from_dict(current.history[steps - 1])
    if not target.models:
        raise RegistryError(
            f"cannot roll back {steps} step(s) in {root}: the serving set {steps} step(s) back "
            f"in {root / SERVING_FILE} serves no model (edited by hand?); promote the versions "
            "to serve instead"
        )
    versions = {m: registered(root, m, v) for m, v in target.models.items()}
    check_versions(root, versions)
    champion = target.champion
    if champion is not None and champion.get("champion") not in target.models:
        log.warning(
            "warning: the set rolled back to names champion %r, which it does not serve, so "
            "it serves without one; record one with `roadcast models promote --champion MODEL`",
            champion.get("champion"),
        )
        champion = None
    serving = Serving(
        models=dict(target.models),
        champion=champion,
        promoted_at=utc_now_text(),
        reason=f"rollback to the set of {target.promoted_at}",
        history=tuple(current.history[steps:]),
    )
    _publish(root, serving)
    return serving


@contextlib.contextmanager
def serving_lock(root: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the registry's lock (``flock`` on the ``root`` folder itself, so nothing is
    written); raises :class:`RegistryError` when another holder keeps it over ``wait_s``."""
    busy = (
        f"another promotion or rollback in {root} held its lock for {wait_s:g} s; try again "
        "when it is done"
    )
    with folder_lock(root, wait_s, lambda: RegistryError(busy)):
        yield


def _commit(
    root: Path,
    current: Serving | None,
    served: Mapping[str, str],
    champion: dict[str, Any] | None,
    reason: str,
) -> Serving:
    if current is not None and current.models == served and current.champion == champion:
        # Promoted already (a retried task): no new history entry, but the file is written
        # again, so that a service that refused this set (a bundle since repaired) retries.
        write_serving(root, current)
        return current
    history: tuple[dict[str, Any], ...] = ()
    if current is not None:
        history = (current.record(), *current.history)[:HISTORY]
    serving = Serving(dict(sorted(served.items())), champion, utc_now_text(), reason, history)
    _publish(root, serving)
    return serving


def _publish(root: Path, serving: Serving) -> None:
    """``champion.json`` first, then the switch itself (``serving.json``), then the links.

    When ``serving.json`` cannot be written, ``champion.json`` is put back as it was.
    """
    champion_path = root / CHAMPION_FILE
    before = champion_path.read_bytes() if champion_path.is_file() else None
    if serving.champion is not None:
        write_champion(root, Champion(**_champion_fields(serving.champion)))
    else:
        champion_path.unlink(missing_ok=True)
    try:
        write_serving(root, serving)
    except BaseException:
        if before is None:
            champion_path.unlink(missing_ok=True)
        else:
            champion_path.write_bytes(before)
        raise
    _link(root, serving)
    log.info(
        "serving_set_promoted",
        extra={"fields": {"models": serving.models, "reason": serving.reason}},
    )


def _champion_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "champion": str(record["champion"]),
        "challengers": tuple(record.get("challengers", ())),
        "scores": dict(record.get("scores", {})),
        "metric": str(record.get("metric", "")),
        "dataset": str(record.get("dataset", "")),
        "promoted_at": str(record.get("promoted_at", "")),
    }


def _link(root: Path, serving: Serving) -> None:
    """``<bundles>/<model>`` -> the served version of each model; stale links removed."""
    try:
        for entry in root.iterdir():
            ours = entry.is_symlink() and Path(os.readlink(entry)).parts[:1] == (VERSIONS,)
            if ours and entry.name not in serving.models:
                entry.unlink()
        for model, version in serving.models.items():
            link = root / model
            if link.exists() and not link.is_symlink():
                continue  # a real folder someone put there: left alone, not served
            tmp = root / f".{model}.link-{uuid.uuid4().hex[:8]}"
            tmp.symlink_to(Path(VERSIONS) / model / version, target_is_directory=True)
            os.replace(tmp, link)
    except OSError as exc:  # a filesystem without links: only the convenience is lost
        log.warning("registry_links_skipped", extra={"fields": {"error": str(exc)}})
