"""Option values the command line parses itself, with errors that name the option, and
the errors of the data sets its data options name."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.settings import Settings

TIMEZONE_HELP = (
    "csv:, h5: or parquet: data: the IANA time zone (e.g. America/Los_Angeles) its "
    "timestamps without a UTC offset were written in; default UTC."
)


# How a file's data set is read: the options of every command that takes a data spec.
def _named_file(value: str | None) -> str | None:
    """An option naming a file may be left out, not given empty (``--adjacency "$UNSET"``
    would otherwise go on without the file, unsaid)."""
    if value is not None and not value.strip():
        raise typer.BadParameter("is empty; name the file, or leave the option out")
    return value


def _one_index_option(ctx: typer.Context, value: Any) -> Any:
    """Refuse ``--index-col`` with ``--no-index`` (each option's callback sees the other
    once that one is parsed, so the second of them refuses)."""
    from flows.cli.errors import UsageError

    given = ctx.params.get("index_col") is not None or ctx.params.get("no_index")
    if given and value not in (None, False):
        raise UsageError("--index-col and --no-index contradict each other; give one", ctx=ctx)
    return value


def _zone(value: str | None) -> str | None:
    """Refuse an unknown ``--timezone`` before anything runs (exit status 2)."""
    from pipeline.data.cells import DatasetError
    from pipeline.data.timestamps import zone_info

    if value is not None:
        try:
            zone_info(value)
        except DatasetError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


ADJACENCY = typer.Option(
    None,
    "--adjacency",
    help="Adjacency of csv:, npz:, h5: or parquet: data: CSV, adj_mx.pkl, .npy, .npz.",
    callback=_named_file,
)
INDEX_COL = typer.Option(
    None,
    "--index-col",
    help="csv:PATH: the time or row-index column (not a sensor).",
    callback=_one_index_option,
)
NO_INDEX = typer.Option(
    False,
    "--no-index",
    help="csv:PATH: every column is a sensor (no index column).",
    callback=_one_index_option,
)
TIMEZONE = typer.Option(None, "--timezone", help=TIMEZONE_HELP, callback=_zone)


# The settings commands take options for, and those options (the same in every command).
SETTING_OPTIONS = {
    "bootstrap_servers": "--bootstrap",
    "topic_readings": "--topic",
    "consumer_group": "--group",
    "store_path": "--store",
    "model_dir": "--models",
    "log_level": "--log-level",
    "alertmanager_urls": "--alertmanager",
    "webhook_urls": "--webhook",
}


def option_settings(**overrides: Any) -> Settings:
    """:func:`pipeline.settings.load_settings` with ``overrides`` from a command's options,
    whose errors name the option (``--bootstrap``) rather than the setting."""
    from pipeline.settings import load_settings

    return load_settings(SETTING_OPTIONS, **overrides)


def parse_duration(
    text: str,
    option: str,
    *,
    allow_zero: bool = False,
    allow_off: bool = False,
    most_days: int | None = None,
) -> pd.Timedelta | None:
    """``text`` (``5min``, ``90s``, ``1h``; ``off`` when ``allow_off``) as a duration.

    Raises
    ------
    typer.BadParameter
        Naming ``option`` and what it accepts, for text that is not a duration, a
        negative one, zero unless ``allow_zero``, or one over ``most_days`` days.
    """
    import pandas as pd

    from pipeline.service.config import to_timedelta, unitless

    value = text.strip()
    if allow_off and value.lower() == "off":
        return None
    accepted = "a duration such as 5min, 90s or 1h" + (" (or off)" if allow_off else "")
    if unitless(value):
        raise typer.BadParameter(
            f"{text!r} has no unit: write {value}s or {value}min", param_hint=option
        )
    try:
        duration = to_timedelta(value)
    except (OverflowError, pd.errors.OutOfBoundsTimedelta):
        raise typer.BadParameter(
            f"{text!r} is too long (durations end at about 292 years)", param_hint=option
        ) from None
    except (ValueError, TypeError):
        raise typer.BadParameter(f"{text!r} is not {accepted}", param_hint=option) from None
    if pd.isna(duration):
        raise typer.BadParameter(f"{text!r} is not {accepted}", param_hint=option)
    if duration < pd.Timedelta(0) or (duration == pd.Timedelta(0) and not allow_zero):
        least = "zero or more" if allow_zero else "more than zero"
        raise typer.BadParameter(f"{text!r}: must be {least}", param_hint=option)
    if most_days is not None and duration > pd.Timedelta(days=most_days):
        raise typer.BadParameter(f"{text!r}: must be at most {most_days} days", param_hint=option)
    return duration


def check_finite(option: str, value: float | None) -> None:
    """Refuse ``inf`` or ``nan`` seconds for ``option`` (None, the option's default, passes).

    Raises
    ------
    typer.BadParameter
        Naming ``option``.
    """
    import math

    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value}: must be a finite number of seconds", param_hint=option)


def refuse_empty_out(out: str) -> None:
    """Refuse an empty ``--out`` (it would mean the current folder)."""
    if not out.strip():
        raise typer.BadParameter("is empty; name the output folder", param_hint="--out")


@contextmanager
def dataset_errors() -> Iterator[None]:
    """End the command on a data set's error or a ``ROADCAST_*`` setting's in the block
    (:func:`~flows.cli.errors.fail`: exit status 2 for a wrong spec, option or setting, 1
    for a file's)."""
    from flows.cli.errors import fail
    from pipeline.data.datasets import DatasetError
    from pipeline.settings import SettingsError

    try:
        yield
    except (DatasetError, SettingsError) as exc:
        fail(exc)
