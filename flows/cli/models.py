"""``roadcast models``: the model registry: list the versions, promote, roll back.

A running ``roadcast serve`` on the same model directory swaps the new serving set in
at a tick boundary within a second or so (``pipeline.registry.watch``); no restart.
"""

from __future__ import annotations

import typer

from flows.cli.errors import HelpGroup, fail

app = typer.Typer(
    cls=HelpGroup,
    rich_markup_mode=None,
    help="The model registry: every trained version of each model, and which ones serve.",
    no_args_is_help=True,
)

_MODELS_HELP = (
    "Model directory (a `roadcast train` output or its bundles/; default ROADCAST_MODEL_DIR)."
)


def _folder(models: str | None) -> str:
    """The model directory (``--models`` or ROADCAST_MODEL_DIR); it must be a directory."""
    from flows.cli.options import option_settings

    folder = option_settings(model_dir=models).model_dir
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise typer.BadParameter(
            f"model directory {folder} {what}; pass a `roadcast train` output (or its "
            "bundles/) with --models or ROADCAST_MODEL_DIR",
            param_hint="--models",
        )
    return str(folder)


@app.command("list")
def list_versions(
    models: str = typer.Option(None, "--models", help=_MODELS_HELP),
) -> None:
    """Every version of every model, with its label, run, validation score and role."""
    from flows.reporting.text import print_table
    from models.bundle import MANIFEST
    from pipeline.model_dir import SERVING_FILE, bundles_dir, read_serving, version_path
    from pipeline.registry.serving import enclosing_registry
    from pipeline.registry.versions import scan_versions, validation_pooled, version_ref

    root = bundles_dir(_folder(models))
    if (root / MANIFEST).is_file():
        raise typer.BadParameter(
            f"{root} is one model bundle, not a model directory; pass the `roadcast train` "
            "output (or its bundles/) that holds it",
            param_hint="--models",
        )
    if (registry := enclosing_registry(root)) is not None:
        raise typer.BadParameter(
            f"{root} is a folder inside the model directory {registry}; pass {registry}",
            param_hint="--models",
        )
    serving = read_serving(root)
    found, broken = scan_versions(root)
    served = serving.models if serving else {}
    for bad in broken:
        role = " (served)" if served.get(bad.model) == bad.version else ""
        typer.echo(
            f"warning: {version_ref(bad.model, bad.version)}{role} cannot be served: {bad.reason}",
            err=True,
        )
    if not found:
        typer.echo(
            f"no registered versions in {root}"
            + ("" if serving else "; `roadcast models promote MODEL` registers its bundles")
        )
        return
    champion = (serving.champion or {}).get("champion") if serving else None
    rows = []
    for v in found:
        pooled = validation_pooled(v.path)
        rmse = pooled[max(pooled)].get("rmse") if pooled else None
        role = ""
        if served.get(v.model) == v.version:
            role = "champion" if v.model == champion else "serving"
        rows.append([v.model, v.version, v.label, v.run_id[:8], v.created_at, rmse, role])
    columns = ["model", "version", "label", "run", "created (UTC)", "valid RMSE", "role"]
    print_table(f"model versions in {root}", columns, rows)
    if serving is not None:
        typer.echo(
            f"serving since {serving.promoted_at} ({serving.reason}); "
            f"{len(serving.history)} earlier set(s) to roll back to"
        )
        missing = [f"{m}@{v}" for m, v in served.items() if not version_path(root, m, v).is_dir()]
        if missing:
            typer.echo(
                f"warning: {root / SERVING_FILE} serves {', '.join(missing)}, not in the "
                "registry; promote a registered version or roll back",
                err=True,
            )


def promote(
    refs: list[str] = typer.Argument(  # noqa: B008 (typer's way of declaring it)
        ...,
        help="MODEL (its newest version) or MODEL@VERSION (a version id, a unique prefix "
        "of one, or a label).",
    ),
    champion: str = typer.Option(
        None, "--champion", help="Record this served model as the champion."
    ),
    only: bool = typer.Option(
        False, "--only", help="Serve exactly these models (default: replace only their versions)."
    ),
    models: str = typer.Option(None, "--models", help=_MODELS_HELP),
) -> None:
    """Serve the given versions; a running service swaps them in at a tick boundary."""
    import time

    from models.bundle import model_name_problem
    from pipeline.model_dir import Champion
    from pipeline.registry.serving import promote as promote_versions
    from pipeline.registry.versions import RegistryError
    from pipeline.settings import shown

    chosen: dict[str, str | None] = {}
    for ref in refs:
        model, at, version = ref.partition("@")
        if not model or (at and not version):
            raise typer.BadParameter(f"{shown(ref)}: expected MODEL or MODEL@VERSION")
        if (problem := model_name_problem(model)) is not None:
            raise typer.BadParameter(f"model name {shown(model)} {problem}")
        if model in chosen:
            raise typer.BadParameter(
                f"{shown(ref)}: {model} is named twice; give one version of it"
            )
        chosen[model] = version or None
    if champion is not None and (problem := model_name_problem(champion)) is not None:
        raise typer.BadParameter(f"model name {shown(champion)} {problem}", param_hint="--champion")
    record = None
    if champion is not None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record = Champion(champion, (), {}, "chosen by hand (roadcast models promote)", "", stamp)
    try:
        serving = promote_versions(
            _folder(models), chosen, champion=record, replace=only, reason="roadcast models promote"
        )
    except RegistryError as exc:
        fail(exc)
    typer.echo("serving " + ", ".join(f"{m}@{v}" for m, v in serving.models.items()))


def rollback(
    steps: int = typer.Option(1, "--steps", min=1, help="How many promotions to undo."),
    models: str = typer.Option(None, "--models", help=_MODELS_HELP),
) -> None:
    """Serve the set that served before the last promotion (or --steps ago) again."""
    from pipeline.registry.serving import rollback as roll_back
    from pipeline.registry.versions import RegistryError

    try:
        serving = roll_back(_folder(models), steps)
    except RegistryError as exc:
        fail(exc)
    typer.echo("serving " + ", ".join(f"{m}@{v}" for m, v in serving.models.items()))


app.command("promote")(promote)
app.command("rollback")(rollback)
