"""The layout of a model directory, and the champion kept in it.

``roadcast train --out DIR`` (the train flow) writes::

    DIR/metrics.json, DIR/report.md, DIR/report.html, DIR/figures/
    DIR/bundles/versions/<model>/<version>/   every version ever trained (never modified)
    DIR/bundles/serving.json      the serving set: a version per model, and the sets before
    DIR/bundles/<model>           a link to the serving version of each model
    DIR/bundles/champion.json     which model is the champion, and why
    DIR/bundles/network.json      sensor ids and coordinates (maps in reports)

The versions and the serving set are managed by :mod:`pipeline.registry`; this module
knows where they are (:func:`read_serving`, :func:`version_path`). A folder without
``serving.json`` is read as before the registry existed: one bundle per sub-directory
(``DIR/bundles/<model>``, what older ``roadcast train`` runs and hand-made folders hold).
The JSON files sit *inside* ``bundles/`` so that whichever directory a consumer is
given (``DIR`` or ``DIR/bundles``, e.g. ``roadcast serve --models DIR/bundles``) holds
them; they are files, not bundle directories, so the service's bundle discovery
ignores them.

The champion is the model whose kept bundle has the lowest *validation* RMSE pooled
over the full horizon (ties: the name). The test part never chooses it. The kept bundle
of a neural model is already its best-validation seed, so its score is that seed's;
this slightly favours models fitted with several seeds, which is what deploying the
best seed means. A JSON file rather than a symlink: it works on every filesystem and
volume, and it records the scores that made the choice.

Loading: A model directory is either one bundle (it holds ``config.json``), a folder of
bundles, one per sub-directory (``OUT/bundles/<model>``, as ``roadcast train``
writes them), or a ``roadcast train`` output ``OUT`` itself (its ``bundles/`` folder
is used), so that one ``ROADCAST_MODEL_DIR`` serves the train flow, the service and
the forecast flow alike. Every bundle is loaded through the registry
(:func:`models.forecasters.registry.load_model`), so the service runs whatever models are
registered without knowing any of them.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.forecasters.base import Forecaster
from models.panel import SensorPanel

BUNDLES = "bundles"
CHAMPION_FILE = "champion.json"
NETWORK_FILE = "network.json"
SERVING_FILE = "serving.json"
VERSIONS = "versions"
DETECTORS_DIR = "detectors"  # saved alert detectors (pipeline.alerts.saved)
CONFIG = "config.json"


class ChampionError(ValueError):
    """No champion can be chosen or read; the message says how to get one."""


def bundles_dir(models_dir: str | Path) -> Path:
    """``models_dir/bundles`` when ``models_dir`` is a train output, else ``models_dir``."""
    root = Path(models_dir).expanduser()
    return root / BUNDLES if (root / BUNDLES).is_dir() else root


def write_json(path: Path, obj: Any) -> None:
    """Write atomically: a reader never sees half a file."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (parents created) atomically and durably: a reader never
    sees half a file, and a failed write leaves the file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide it from a service of another user
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())  # a power cut must not leave an empty file behind
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def utc_now_text() -> str:
    """The time now, UTC, as ``2024-03-04T08:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Champion:
    """The promoted model and the scores it was chosen on.

    ``scores`` maps every candidate to its validation RMSE (None: no validation
    score, never chosen); ``challengers`` are the other models with bundles.
    """

    champion: str
    challengers: tuple[str, ...]
    scores: dict[str, float | None]
    metric: str
    dataset: str
    promoted_at: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["challengers"] = list(self.challengers)
        return out


def validation_score(entry: Mapping[str, Any]) -> float | None:
    """The kept bundle's validation RMSE of one ``metrics.json`` model entry."""
    scores = [v for v in entry.get("valid_rmse") or [] if v is not None and math.isfinite(v)]
    return float(min(scores)) if scores else None


def choose_champion(document: Mapping[str, Any]) -> Champion:
    """The model of ``document`` (``metrics.json``) with the best validation score.

    Raises
    ------
    ChampionError
        When no model has a validation score (a validation part shorter than the
        horizon): lengthen it with ``--valid``.
    """
    scores = {name: validation_score(entry) for name, entry in document["models"].items()}
    ranked = sorted((s, n) for n, s in scores.items() if s is not None)
    if not ranked:
        raise ChampionError(
            "no model has a validation score, so none can be promoted; make the validation "
            "part longer than the horizon (--valid) or the horizon shorter"
        )
    best = ranked[0][1]
    return Champion(
        champion=best,
        challengers=tuple(n for n in document["models"] if n != best),
        scores=scores,
        metric=f"validation RMSE pooled over steps 1..{document['horizon']} (kept seed)",
        dataset=str(document.get("dataset")),
        promoted_at=utc_now_text(),
    )


def promote(models_dir: str | Path, champion: Champion) -> Path:
    """Write ``champion.json`` into the bundles folder of ``models_dir``; returns its path."""
    path = bundles_dir(models_dir) / CHAMPION_FILE
    write_json(path, champion.to_dict())
    return path


def read_champion(models_dir: str | Path) -> Champion | None:
    """The champion recorded in ``models_dir`` (or its ``bundles/``), None if none is.

    Raises
    ------
    ChampionError
        When ``champion.json`` exists but cannot be read.
    """
    path = bundles_dir(models_dir) / CHAMPION_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return Champion(
            champion=str(raw["champion"]),
            challengers=tuple(raw.get("challengers", ())),
            scores=dict(raw.get("scores", {})),
            metric=str(raw.get("metric", "")),
            dataset=str(raw.get("dataset", "")),
            promoted_at=str(raw.get("promoted_at", "")),
        )
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ChampionError(
            f"{path} is unreadable ({exc}); delete it or retrain with `roadcast train`"
        ) from None


@dataclass(frozen=True)
class Network:
    """The sensors a model directory was trained on, with coordinates when known."""

    dataset: str
    sensor_ids: tuple[str, ...]
    coords: np.ndarray | None  # float64 [node, 2] (latitude, longitude)
    graph: bool | None = None  # whether the data had a road graph (None: not recorded)


def write_network(models_dir: str | Path, panel: SensorPanel) -> Path:
    """Record ``panel``'s sensor ids and coordinates next to the bundles."""
    coords = None if panel.coords is None else np.asarray(panel.coords).tolist()
    path = bundles_dir(models_dir) / NETWORK_FILE
    write_json(
        path,
        {
            "dataset": panel.name,
            "sensor_ids": list(panel.sensor_ids),
            "coords": coords,
            "graph": panel.graph is not None,
        },
    )
    return path


def read_network(models_dir: str | Path) -> Network | None:
    """The network recorded in ``models_dir``, None when there is no (readable) record."""
    path = bundles_dir(models_dir) / NETWORK_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        ids = tuple(str(s) for s in raw["sensor_ids"])
        coords = raw.get("coords")
        array = None if coords is None else np.asarray(coords, dtype=np.float64)
        if array is not None and array.shape != (len(ids), 2):
            return None
        graph = raw.get("graph")
        return Network(
            dataset=str(raw.get("dataset", "")),
            sensor_ids=ids,
            coords=array,
            graph=graph if isinstance(graph, bool) else None,
        )
    except (ValueError, KeyError, TypeError, RecursionError):
        return None  # a map is optional: a bad file only costs the map


class BundleDirError(ValueError):
    """The model directory has no usable bundles; the message says how to make some."""


@dataclass(frozen=True)
class Serving:
    """The serving set of a model directory (``serving.json``).

    ``models`` maps each served model to its version; ``champion`` is the champion
    record (:class:`Champion` as a dict) promoted with the set, if any; ``history``
    holds the sets served before, newest first, in the same form (without history).
    """

    models: dict[str, str]
    champion: dict[str, Any] | None
    promoted_at: str
    reason: str
    history: tuple[dict[str, Any], ...] = ()

    def record(self) -> dict[str, Any]:
        """This set as one history entry (no history of its own)."""
        return {
            "models": dict(self.models),
            "champion": self.champion,
            "promoted_at": self.promoted_at,
            "reason": self.reason,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.record(), "history": list(self.history)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Serving:
        """Parse a record (and each of its history entries); raises ``KeyError``,
        ``TypeError`` or ``ValueError`` when malformed.

        Model names and version ids must be plain folder names: a record cannot name a
        bundle outside ``versions/``.
        """
        if not isinstance(raw, Mapping):
            raise TypeError(f"a serving set must be an object, got {type(raw).__name__}")
        models = raw["models"]
        if not isinstance(models, dict) or not all(
            _plain_name(k) and _plain_name(v) for k, v in models.items()
        ):
            raise ValueError(
                "'models' must map model names to version ids (plain names of 1-100 characters)"
            )
        champion = raw.get("champion")
        if champion is not None:
            _check_champion_record(champion)
        history = raw.get("history") or []
        if not isinstance(history, list):
            raise TypeError("'history' must be a list")
        for number, entry in enumerate(history, 1):
            try:
                if isinstance(entry, Mapping) and entry.get("history"):
                    raise ValueError("it holds a history of its own")
                cls.from_dict(entry)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"'history' entry {number}: {exc}") from None
        return cls(
            models=dict(models),
            champion=champion,
            promoted_at=str(raw.get("promoted_at", "")),
            reason=str(raw.get("reason", "")),
            history=tuple(history),
        )


def _plain_name(name: object) -> bool:
    """A folder name of the registry: 1-100 printable characters without separators,
    not hidden, ``.`` or ``..`` (:func:`models.bundle.model_name_problem`)."""
    from models.bundle import model_name_problem

    return model_name_problem(name) is None


def _check_champion_record(record: object) -> None:
    """A :class:`Champion` as a dict: ``champion`` a model name, the rest of its types."""
    if not isinstance(record, dict):
        raise TypeError("'champion' must be an object or null")
    if not isinstance(record.get("champion"), str) or not record["champion"]:
        raise ValueError("'champion' must name the champion model")
    if not isinstance(record.get("challengers", []), list):
        raise TypeError("'champion.challengers' must be a list")
    if not isinstance(record.get("scores", {}), dict):
        raise TypeError("'champion.scores' must be an object")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: a key given twice (two versions of one model) is an error."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out


def version_path(models_dir: str | Path, model: str, version: str) -> Path:
    """Where version ``version`` of ``model`` lives: ``<bundles>/versions/<model>/<version>``."""
    return bundles_dir(models_dir) / VERSIONS / model / version


def read_serving(models_dir: str | Path) -> Serving | None:
    """The serving set of ``models_dir`` (or its ``bundles/``); None when it has none
    (a folder of unversioned bundles).

    Raises
    ------
    BundleDirError
        When ``serving.json`` exists but cannot be read.
    """
    path = bundles_dir(models_dir) / SERVING_FILE
    if path.exists() and not path.is_file():  # a folder, or a pipe that would block
        raise BundleDirError(f"{path} cannot be read (not a regular file)")
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleDirError(f"{path} cannot be read ({exc})") from None
    try:
        return Serving.from_dict(json.loads(text, object_pairs_hook=_refuse_duplicates))
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise BundleDirError(
            f"{path} is unreadable ({exc}); `roadcast models promote --only MODEL ...` "
            "writes a new serving set (the rollback history is lost)"
        ) from None


def write_serving(models_dir: str | Path, serving: Serving) -> Path:
    """Replace ``serving.json`` atomically (readers see the old set or the new one)."""
    path = bundles_dir(models_dir) / SERVING_FILE
    write_json(path, serving.to_dict())
    return path


def discover_bundles(model_dir: str | Path) -> list[Path]:
    """Bundle directories under ``model_dir``: the versions its ``serving.json`` names
    (sorted by model), else itself, or its direct children, or those of its ``bundles/``
    folder when it is a ``roadcast train`` output (sorted)."""
    root = Path(model_dir)
    if root.exists() and not root.is_dir():
        raise BundleDirError(
            f"model directory {root} is a file, not a folder; pass the folder `roadcast "
            "train --out DIR` wrote (DIR/bundles)"
        )
    if not root.is_dir():
        raise BundleDirError(
            f"model directory {root} does not exist; train bundles with `roadcast train "
            "--out DIR` (or `roadcast demo`) and pass --models DIR/bundles"
        )
    if (root / CONFIG).is_file():
        return [root]
    serving = read_serving(root)
    if serving is not None:
        if not serving.models:
            raise BundleDirError(
                f"{bundles_dir(root) / SERVING_FILE} serves no model (its models are empty); "
                "promote some with `roadcast models promote MODEL@VERSION` or roll back"
            )
        paths = [version_path(root, m, v) for m, v in sorted(serving.models.items())]
        missing = [str(p) for p in paths if not p.is_dir()]
        if missing:
            raise BundleDirError(
                f"{bundles_dir(root) / SERVING_FILE} names versions that do not exist "
                f"({', '.join(missing[:3])}); serve existing ones with `roadcast models "
                "promote MODEL` (`roadcast models list` shows them) or `roadcast models rollback`"
            )
        linked = [str(p) for p in paths if p.is_symlink() or p.parent.is_symlink()]
        if linked:
            raise BundleDirError(
                f"{bundles_dir(root) / SERVING_FILE} names versions that are symbolic links, "
                f"not folders the registry wrote ({', '.join(linked[:3])}); promote "
                "registered versions with `roadcast models promote MODEL@VERSION`"
            )
        return paths
    found = sorted(p for p in root.iterdir() if (p / CONFIG).is_file())
    if not found and (root / "bundles").is_dir():
        return discover_bundles(root / "bundles")
    return found


def bundle_configs(model_dir: str | Path) -> dict[Path, dict[str, Any] | None]:
    """Each bundle's ``config.json`` under ``model_dir`` (:func:`discover_bundles`), read
    without loading the bundle; None for one that is unreadable or not a JSON object
    (its own checks refuse it as it loads). Raises :class:`BundleDirError` as
    :func:`discover_bundles` does."""
    configs: dict[Path, dict[str, Any] | None] = {}
    for path in discover_bundles(model_dir):
        try:
            config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = None
        configs[path] = config if isinstance(config, dict) else None
    return configs


def no_bundles(model_dir: str | Path) -> BundleDirError:
    """The error for a models folder that holds no bundle."""
    return BundleDirError(
        f"no model bundles (directories with {CONFIG}) in {model_dir}; train some with "
        "`roadcast train --out DIR` and pass --models DIR/bundles"
    )


def load_bundles(
    model_dir: str | Path,
    *,
    only: Sequence[str] | None = None,
    paths: Sequence[Path] | None = None,
) -> dict[str, Forecaster]:
    """Load every bundle under ``model_dir`` as ``{model name: model}``.

    Parameters
    ----------
    model_dir : one bundle, or a folder of bundles.
    only : keep only these model names (an unknown name is an error).
    paths : the bundles to load, when already discovered (:func:`discover_bundles`).

    Raises
    ------
    BundleDirError
        When there is no bundle, two bundles hold the same model name, a registry
        version holds another model than the one it is filed under, a name in ``only``
        has no bundle, or the bundles are of different sensor networks
        (:func:`check_one_network`).
    models.bundle.BundleError
        When a bundle is corrupt (checksum, version): the message says to retrain.
    """
    from models.bundle import BundleError
    from models.forecasters.registry import load_model

    paths = discover_bundles(model_dir) if paths is None else list(paths)
    if not paths:
        raise no_bundles(model_dir)
    found = paths
    if only:  # a bundle left out is not loaded: a broken one must not stop the others
        paths = [p for p in paths if (name := _filed_name(p)) is None or name in only]
    models: dict[str, Forecaster] = {}
    where: dict[str, Path] = {}
    for path in paths:
        try:
            model = load_model(path)
        except BundleError:
            raise
        except Exception as exc:  # a bundle written by another version of the model code
            raise BundleDirError(
                f"bundle {path} could not be loaded ({type(exc).__name__}: {exc}); retrain it "
                "with this version (roadcast train) or remove it"
            ) from exc
        name = model.name
        if path.parent.parent.name == VERSIONS and path.parent.name != name:
            raise BundleDirError(
                f"bundle {path} holds a {name!r} model, not {path.parent.name!r}; a registry "
                "version must be of the model it is filed under: roll back or promote another"
            )
        if name in models:
            raise BundleDirError(
                f"two bundles of model {name!r} in {model_dir}; keep one (the service "
                "publishes one forecast per model and sensor)"
            )
        models[name] = model
        where[name] = path
    if only:
        unknown = sorted(set(only) - set(models))
        if unknown:
            raise BundleDirError(
                f"no bundle for model(s) {unknown} in {model_dir}; it has "
                f"{sorted({n for p in found if (n := _filed_name(p))} | set(models))}"
            )
        models = {name: models[name] for name in only}
    check_one_network(models, where, model_dir)
    return models


def _filed_name(path: Path) -> str | None:
    """The model a bundle holds, as its registry folder or its config names it, without
    loading it; None when neither says."""
    if path.parent.parent.name == VERSIONS:
        return path.parent.name
    try:
        name = json.loads((path / CONFIG).read_text())["model"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return name if isinstance(name, str) else None


def _network_text(sensors: set[str], other: set[str]) -> str:
    extra = sorted(sensors - other)
    shown = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
    return f"{len(sensors)} sensors" + (
        f", {len(extra)} not in the other ({shown})" if extra else ""
    )


def check_one_network(
    models: Mapping[str, Forecaster], paths: Mapping[str, Path], model_dir: str | Path
) -> None:
    """Refuse bundles that forecast different sensor networks, or a network other than
    the one ``network.json`` records: a service fed both would forecast their union.

    Raises
    ------
    BundleDirError
        Naming both bundles (or the bundle and ``network.json``) and how they differ.
    """
    names = list(models)
    if not names:
        return
    first = names[0]
    sensors = set(models[first].sensor_ids)
    for name in names[1:]:
        other = set(models[name].sensor_ids)
        if other != sensors:
            raise BundleDirError(
                f"bundles {paths[first]} ({_network_text(sensors, other)}) and {paths[name]} "
                f"({_network_text(other, sensors)}) forecast different sensor networks; keep "
                "the bundles of one network per folder (train them together with `roadcast "
                "train --out DIR`) or pick some with --only"
            )
    network = read_network(model_dir)
    if network is not None and set(network.sensor_ids) != sensors:
        recorded = set(network.sensor_ids)
        raise BundleDirError(
            f"bundle {paths[first]} ({_network_text(sensors, recorded)}) is not of the network "
            f"in {bundles_dir(model_dir) / NETWORK_FILE} ({_network_text(recorded, sensors)}, "
            f"data set {network.dataset!r}); put the bundles of each network in a folder of "
            "its own"
        )


def union_sensors(models: dict[str, Forecaster]) -> tuple[str, ...]:
    """All sensors of the models, in the first model's order, then new ones as they come."""
    seen: dict[str, None] = {}
    for model in models.values():
        for sensor in model.sensor_ids:
            seen.setdefault(sensor, None)
    if not seen:
        raise BundleDirError("the loaded bundles list no sensors; retrain them")
    return tuple(seen)
