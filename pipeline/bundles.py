"""Find and load the model bundles the service forecasts with.

A model directory is either one bundle (it holds ``config.json``), a folder of
bundles, one per sub-directory (``OUT/bundles/<model>``, as ``roadcast train``
writes them), or a ``roadcast train`` output ``OUT`` itself (its ``bundles/`` folder
is used), so that one ``ROADCAST_MODEL_DIR`` serves the train flow, the service and
the forecast flow alike. Every bundle is loaded through the registry
(:func:`models.bundle.load_model`), so the service runs whatever models are
registered without knowing any of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from models.base import Forecaster

CONFIG = "config.json"


class BundleDirError(ValueError):
    """The model directory has no usable bundles; the message says how to make some."""


def discover_bundles(model_dir: str | Path) -> list[Path]:
    """Bundle directories under ``model_dir`` (itself, or its direct children, or those of
    its ``bundles/`` folder when it is a ``roadcast train`` output), sorted."""
    root = Path(model_dir)
    if not root.is_dir():
        raise BundleDirError(
            f"model directory {root} does not exist; train bundles with `roadcast train "
            "--out DIR` (or `roadcast demo`) and pass --models DIR/bundles"
        )
    if (root / CONFIG).is_file():
        return [root]
    found = sorted(p for p in root.iterdir() if (p / CONFIG).is_file())
    if not found and (root / "bundles").is_dir():
        return discover_bundles(root / "bundles")
    return found


def load_bundles(
    model_dir: str | Path, *, only: Sequence[str] | None = None
) -> dict[str, Forecaster]:
    """Load every bundle under ``model_dir`` as ``{model name: model}``.

    Parameters
    ----------
    model_dir : one bundle, or a folder of bundles.
    only : keep only these model names (an unknown name is an error).

    Raises
    ------
    BundleDirError
        When there is no bundle, two bundles hold the same model name, or a name in
        ``only`` has no bundle.
    models.bundle.BundleError
        When a bundle is corrupt (checksum, version): the message says to retrain.
    """
    from models.bundle import BundleError, load_model

    paths = discover_bundles(model_dir)
    if not paths:
        raise BundleDirError(
            f"no model bundles (directories with {CONFIG}) in {model_dir}; train some with "
            "`roadcast train --out DIR` and pass --models DIR/bundles"
        )
    models: dict[str, Forecaster] = {}
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
        if name in models:
            raise BundleDirError(
                f"two bundles of model {name!r} in {model_dir}; keep one (the service "
                "publishes one forecast per model and sensor)"
            )
        models[name] = model
    if only:
        unknown = sorted(set(only) - set(models))
        if unknown:
            raise BundleDirError(
                f"no bundle for model(s) {unknown} in {model_dir}; it has {sorted(models)}"
            )
        models = {name: models[name] for name in only}
    return models


def union_sensors(models: dict[str, Forecaster]) -> tuple[str, ...]:
    """All sensors of the models, in the first model's order, then new ones as they come."""
    seen: dict[str, None] = {}
    for model in models.values():
        for sensor in model.sensor_ids:
            seen.setdefault(sensor, None)
    if not seen:
        raise BundleDirError("the loaded bundles list no sensors; retrain them")
    return tuple(seen)
