"""Model versions: bundles registered under their content hash, with a label and a run id.

A version of a model is a bundle (:mod:`models.bundle`) kept in
``<bundles>/versions/<model>/<version>/`` next to a ``version.json``::

    {"model": "ar", "version": "3f2a9c1b7e4d", "sha256": "<64 hex>",
     "label": "los-loop 2024-03-05", "run_id": "<Prefect flow run id or a uuid>",
     "created_at": "2024-03-05T03:12:09Z"}

``version`` is the first 12 hex digits of the sha256 of the bundle's ``manifest.json``,
which holds the sha256 of every file: the same bundle always gets the same version and
registering it twice keeps one copy. A version is written in a hidden staging folder
and renamed into place, so a reader never sees half of one, and it is never modified
afterwards (a new fit is a new version). Which version serves is
:mod:`pipeline.registry.serving`'s job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.forecasters.base import Forecaster
from pipeline.model_dir import (
    CONFIG,
    VERSIONS,
    BundleDirError,
    discover_bundles,
    utc_now_text,
    version_path,
)
from pipeline.settings import shown

VERSION_FILE = "version.json"
MANIFEST = "manifest.json"
VERSION_CHARS = 12
MAX_LABEL_CHARS = 200
STAGING_PREFIX = ".staging-"
# A staging folder untouched this long belongs to a registration killed part-way.
STALE_STAGING_S = 3600.0

log = logging.getLogger("roadcast.registry")


class RegistryError(BundleDirError):
    """A version cannot be found or served as asked; the message says why and what exists."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered (or, for an unversioned bundle, computed) version of a model."""

    model: str
    version: str
    label: str
    run_id: str
    created_at: str
    path: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "label": self.label,
            "run_id": self.run_id,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class BrokenVersion:
    """A folder of ``versions/<model>/`` that is no usable version, and why."""

    model: str
    version: str  # the folder's name
    reason: str


def version_ref(model: str, version: str) -> str:
    """``model@version`` for a message (quoted and cut when it is not plain text)."""
    ref = f"{model}@{version}"
    return ref if ref.isprintable() and len(ref) <= 100 else shown(ref)


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot label a version (too long, control characters), or None."""
    if len(label) > MAX_LABEL_CHARS:
        return f"is {len(label)} characters long, more than {MAX_LABEL_CHARS}"
    if not label.isprintable():
        return "holds control characters (line breaks, tabs...)"
    return None


def check_label(label: str | None) -> None:
    """Refuse a version label that would not print on one line of ``roadcast models list``
    (None, the default label, passes)."""
    problem = None if label is None else label_problem(label)
    if problem is not None:
        raise RegistryError(
            f"label {shown(label)} {problem}; give at most {MAX_LABEL_CHARS} printable characters"
        )


def check_model_name(model: str) -> None:
    """Refuse a model name that cannot be a folder of ``versions/`` (a path such as
    ``../x``, a name over :data:`models.bundle.MAX_NAME_CHARS` characters)."""
    from models.bundle import model_name_problem

    if (problem := model_name_problem(model)) is not None:
        raise RegistryError(f"model name {shown(model)} {problem}")


def content_hash(bundle: Path) -> str:
    """The sha256 of the bundle's manifest (hex); raises ``RegistryError`` without one."""
    try:
        return hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()
    except OSError as exc:
        raise RegistryError(
            f"{bundle} is not a model bundle ({MANIFEST}: {exc.strerror or exc})"
        ) from None


def describe(bundle: str | Path) -> ModelVersion:
    """The version of the bundle at ``bundle``: its ``version.json`` when that agrees with
    the bundle (model name, content hash), else (a bundle outside the registry, or an
    edited record) its content hash with no label or run id."""
    path = Path(bundle)
    try:
        model = str(json.loads((path / CONFIG).read_text())["model"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise RegistryError(f"{path} is not a readable model bundle ({CONFIG}: {exc})") from None
    short = content_hash(path)[:VERSION_CHARS]
    record_path = path / VERSION_FILE
    if record_path.is_file():
        try:
            raw = json.loads(record_path.read_text())
            if raw["model"] == model and raw["version"] == short:
                label = str(raw.get("label") or "")
                return ModelVersion(
                    model=model,
                    version=short,
                    label="" if label_problem(label) else label,
                    run_id=str(raw.get("run_id") or ""),
                    created_at=str(raw.get("created_at") or ""),
                    path=path,
                )
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            pass  # described by its content below, like an unversioned bundle
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime))
    return ModelVersion(model, short, "", "", created, path)


def new_run_id() -> str:
    """An id for a training run outside Prefect (a flow run passes its own id)."""
    return str(uuid.uuid4())


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` and ``root`` itself to disk."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def register(
    bundles: str | Path,
    source: Forecaster | str | Path,
    *,
    label: str = "",
    run_id: str | None = None,
) -> ModelVersion:
    """Add a fitted model (or a bundle directory) to the registry in ``bundles``.

    The bundle is written (or copied and verified) into a hidden staging folder, given
    its ``version.json``, flushed to disk and renamed to ``versions/<model>/<version>``.
    A bundle already registered keeps its first record. ``run_id`` None: a new id.
    Returns the version.

    Raises
    ------
    models.bundle.BundleError
        When ``source`` is a bundle directory that does not verify.
    """
    from models.bundle import read_bundle

    check_label(label)
    root = Path(bundles)
    forecaster: Forecaster | None = None
    origin = Path()
    if isinstance(source, str | Path):
        origin = Path(source)
        model = read_bundle(origin).model  # verified (its name too) before it is copied
    else:
        forecaster, model = source, source.name
    check_model_name(model)
    parent = root / VERSIONS / model
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_staging(parent)
    staging = parent / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    try:
        if forecaster is None:
            shutil.copytree(origin, staging, ignore=shutil.ignore_patterns(VERSION_FILE))
            os.utime(staging)  # copytree gave it the source's age: the sweep reads it
            read_bundle(staging)  # the copy verifies too
        else:
            forecaster.save(staging)
        digest = content_hash(staging)
        short = digest[:VERSION_CHARS]
        run = new_run_id() if run_id is None else run_id
        version = ModelVersion(model, short, label, run, utc_now_text(), parent / short)
        if version.path.is_dir():  # the same bundle, registered before
            return _registered_before(version.path, label)
        record = {**version.to_dict(), "sha256": digest}
        (staging / VERSION_FILE).write_text(json.dumps(record, indent=2) + "\n")
        _fsync_tree(staging)
        try:
            os.rename(staging, version.path)
        except OSError:
            if version.path.is_dir():  # registered meanwhile by another process
                return _registered_before(version.path, label)
            raise
        _fsync_dir(parent)
        return version
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _registered_before(path: Path, label: str) -> ModelVersion:
    """The version at ``path``, registered before with its first record (a new ``label``
    is not kept, and says so)."""
    version = describe(path)
    if label and label != version.label:
        log.warning(
            "warning: %s@%s was registered before (label %r, run %s); it keeps that record, "
            "not the label %r",
            version.model, version.version, version.label, version.run_id, label,
        )  # fmt: skip
    return version


def _sweep_staging(parent: Path) -> None:
    """Remove staging folders of registrations killed part-way (older than
    :data:`STALE_STAGING_S`: a live one is being written by its process)."""
    for stale in parent.glob(f"{STAGING_PREFIX}*"):
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(stale, ignore_errors=True)


def registered(bundles: str | Path, model: str, version: str) -> ModelVersion:
    """Version ``version`` of ``model`` as filed in the registry of ``bundles``.

    Raises
    ------
    RegistryError
        Naming the version when its folder is missing, unreadable, or holds content that
        no longer hashes to ``version`` (edited after it was registered).
    """
    path = version_path(bundles, model, version)
    if path.is_symlink() or path.parent.is_symlink():
        raise RegistryError(f"{version_ref(model, version)} cannot be served: {path} {_LINKED}")
    if not path.is_dir():
        raise RegistryError(
            f"{version_ref(model, version)} is not in the registry ({path} is missing)"
        )
    try:
        return _filed(path)
    except RegistryError as exc:
        raise RegistryError(f"{version_ref(model, version)} cannot be served: {exc}") from None


def _filed(path: Path) -> ModelVersion:
    """:func:`describe` of a registry folder, refusing content that is not its name's."""
    found = describe(path)
    if found.version != path.name:
        raise RegistryError(
            f"{path} now hashes to {found.version} (edited after it was registered); "
            "promote another version or retrain"
        )
    return found


_LINKED = (
    "is a symbolic link, not a folder the registry wrote (what it points to can change "
    "after registration); register the bundle with `roadcast models promote` or `roadcast train`"
)


def scan_versions(
    bundles: str | Path, model: str | None = None
) -> tuple[list[ModelVersion], list[BrokenVersion]]:
    """The registered versions (of ``model``, or of all models), oldest first per model,
    and the version folders that cannot be used (unreadable, edited since, or symbolic
    links: a registered version is a folder the registry wrote)."""
    root = Path(bundles) / VERSIONS
    if not root.is_dir():
        return [], []
    good, broken = [], []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if model is not None and folder.name != model:
            continue
        if folder.is_symlink():
            broken.append(BrokenVersion(folder.name, "*", _LINKED))
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_dir():
                continue  # staging folders and stray files are not versions
            if path.is_symlink():
                broken.append(BrokenVersion(folder.name, path.name, _LINKED))
                continue
            try:
                good.append(_filed(path))
            except RegistryError as exc:
                broken.append(BrokenVersion(folder.name, path.name, str(exc)))
    return sorted(good, key=_registered_order), broken


def _registered_order(version: ModelVersion) -> tuple[str, str, int, str]:
    """Per model, oldest first: ``created_at`` has whole seconds, so the folder's mtime
    (when its ``version.json`` was written) orders versions registered within one."""
    try:
        written = version.path.stat().st_mtime_ns
    except OSError:
        written = 0
    return version.model, version.created_at, written, version.version


def list_versions(bundles: str | Path, model: str | None = None) -> list[ModelVersion]:
    """Every usable registered version (of ``model``, or of all models), oldest first per
    model (:func:`scan_versions` also names the unusable ones)."""
    return scan_versions(bundles, model)[0]


def find_version(bundles: str | Path, model: str, ref: str | None = None) -> ModelVersion:
    """Version ``ref`` of ``model`` (a version id, a unique prefix of one, or a label: the
    newest with it); with ``ref`` None the newest version.

    Raises
    ------
    RegistryError
        Naming the versions there are when none (or several) match, or what is wrong
        with the one version folder ``ref`` names when it cannot be used.
    """
    check_model_name(model)
    versions, broken = scan_versions(bundles, model)
    hits: list[ModelVersion] = []
    unusable: list[BrokenVersion] = []
    if ref is not None:
        hits = [v for v in versions if v.version.startswith(ref)]
        unusable = [b for b in broken if b.version.startswith(ref)]
        if not hits and not unusable:
            hits = [v for v in versions if v.label == ref][-1:]
        if len(hits) == 1 and not unusable:
            return hits[0]
        if len(unusable) == 1 and not hits:
            one = unusable[0]
            raise RegistryError(f"{version_ref(model, one.version)} cannot be served: {one.reason}")
    if not versions:
        raise RegistryError(
            f"no registered version of {shown(model)} in {Path(bundles) / VERSIONS}; train one "
            "with `roadcast train --out DIR` (see `roadcast models list`)"
        )
    if ref is None:
        return versions[-1]
    if hits or unusable:
        matching = sorted([v.version for v in hits] + [b.version for b in unusable])
        raise RegistryError(
            f"{shown(f'{model}@{ref}')} matches several versions: {', '.join(matching[:5])}"
            + (f" and {len(matching) - 5} more" if len(matching) > 5 else "")
            + "; give more of the version id"
        )
    known = ", ".join(f"{v.version} ({v.label or 'no label'})" for v in versions[-5:])
    raise RegistryError(f"{shown(f'{model}@{ref}')} matches no version; the newest are {known}")


def versions_of_run(bundles: str | Path, run_id: str) -> dict[str, ModelVersion]:
    """The versions a training run registered, by model (the newest per model)."""
    found: dict[str, ModelVersion] = {}
    for version in list_versions(bundles):
        if version.run_id == run_id:
            found[version.model] = version
    return found


def validation_pooled(bundle: str | Path) -> dict[int, dict[str, float]]:
    """The bundle's validation scores pooled over steps 1..h: ``{h: {"mae": ..., "rmse":
    ...}}`` (empty when it was trained without a validation part)."""
    try:
        config = json.loads((Path(bundle) / CONFIG).read_text())
        pooled = ((config.get("metrics") or {}).get("valid") or {}).get("pooled") or {}
        return {
            int(h): {k: float(v) for k, v in scores.items() if isinstance(v, int | float)}
            for h, scores in pooled.items()
        }
    except (OSError, ValueError, TypeError, AttributeError, RecursionError):
        return {}


def served_versions(model_dir: str | Path) -> dict[str, ModelVersion]:
    """The versions ``model_dir`` serves, by model, without loading the models; a registry
    version whose content no longer hashes to its id is a :class:`RegistryError`."""
    paths = discover_bundles(model_dir)
    found = (_filed(p) if p.parent.parent.name == VERSIONS else describe(p) for p in paths)
    return {v.model: v for v in found}
