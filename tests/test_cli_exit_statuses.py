"""The command line's standard for bad input: one ``error:`` line, exit status 2 for a
usage error or an invalid setting, option or argument value (a data-set spec included),
1 for any other error; the traceback only with ``--debug``. Also what the data commands
say of a CSV, and ``--help`` at 80 and 100 columns."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from flows.cli import app
from pipeline.data.datasets import (
    DatasetError,
    DatasetSpecError,
    check_arguments,
    check_spec,
    load_dataset,
)


def _error_line(output: str) -> str:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A small wide CSV (``x``), an edge list over its sensors (``e``), one with a
    non-number (``bad``) and a path with no file (``none``)."""
    stamps = pd.date_range("2024-03-01", periods=30, freq="5min").strftime("%Y-%m-%dT%H:%MZ")
    rows = [f"{t},{50 + k % 7},{40 + k % 5}" for k, t in enumerate(stamps)]
    (tmp_path / "x.csv").write_text("time,a,b\n" + "\n".join(rows) + "\n")
    (tmp_path / "bad.csv").write_text("time,a,b\n" + "\n".join(rows) + "\n2024-03-02T00:00Z,x,1\n")
    (tmp_path / "e.csv").write_text("src,dst\na,b\n")
    return {k: tmp_path / f"{k}.csv" for k in ("x", "bad", "e", "none")}


# ------------------------------------------------------------------- exit statuses


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nosuchset"], "unknown data set 'nosuchset'"),
        (["simulated:sensors=abc"], "sensors='abc': not a number"),
        (["simulated:sensors=2,days=1,start=1600-01-01"], "1700-2249"),
        (["csv:{x},header=bogus"], "header='bogus'"),
        (["csv:{x}", "--adjacency", "{e},kind=bogus"], "kind='bogus'"),
        (["csv:{x},bogus=1"], "unknown option 'bogus'"),
        (["nab"], "nab needs a file"),
        (["nab:speed.csv"], "expected nab:<category>/<file>.csv"),
        (["los-loop:x"], "los-loop takes no argument"),
        (["los-loop", "--adjacency", "{e}"], "--adjacency is only for a file's data"),
        (["simulated", "--index-col", "time"], "only for csv:PATH"),
    ],
)
def test_an_invalid_data_spec_or_option_exits_2(
    files: dict[str, Path], args: list[str], says: str
) -> None:
    """An invalid argument value is a usage error, as the README says; these exited 1."""
    args = [a.format(**files) for a in args]
    result = CliRunner().invoke(app, ["data", "info", *args])
    assert result.exit_code == 2, result.output
    assert says in _error_line(result.output)


@pytest.mark.parametrize(
    ("spec", "says"),
    [("csv:{none}", "missing file"), ("csv:{bad}", "non-numeric value 'x'")],
)
def test_a_missing_file_or_bad_content_exits_1(
    files: dict[str, Path], spec: str, says: str
) -> None:
    result = CliRunner().invoke(app, ["data", "info", spec.format(**files)])
    assert result.exit_code == 1, result.output
    assert says in _error_line(result.output)


@pytest.mark.parametrize(
    "command",
    [
        ["data", "info", "{spec}"],
        ["train", "{spec}", "--out", "{tmp}/out"],
        ["evaluate", "{tmp}", "{spec}"],
        ["replay", "{spec}"],
        ["demo", "--data", "{spec}", "--out", "{tmp}/demo"],
    ],
    ids=lambda c: c[0] if c[0] != "data" else "data-info",
)
@pytest.mark.parametrize("spec", ["nosuchset", "simulated:days=abc"])
def test_every_command_taking_a_data_spec_exits_2_for_a_bad_one(
    tmp_path: Path, command: list[str], spec: str
) -> None:
    args = [a.format(spec=spec, tmp=tmp_path) for a in command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert spec.split(":")[-1].split("=")[-1] in _error_line(result.output)
    assert not (tmp_path / "out").exists() and not (tmp_path / "demo").exists()


def test_a_spec_error_is_a_dataset_error_raised_before_any_file_is_read(
    files: dict[str, Path],
) -> None:
    with pytest.raises(DatasetSpecError, match="kind='bogus'"):
        load_dataset(f"csv:{files['none']}", adjacency=Path(f"{files['e']},kind=bogus"))
    with pytest.raises(DatasetSpecError, match="contradict"):
        check_arguments(f"csv:{files['x']}", index_col="time", no_index=True)
    with pytest.raises(DatasetSpecError, match="only for timestamps in a file"):
        check_arguments("simulated", timezone="UTC")
    with pytest.raises(DatasetError) as missing:
        load_dataset(f"csv:{files['none']}")
    assert not isinstance(missing.value, DatasetSpecError)
    assert check_spec("nab:realTraffic/speed_7578.csv") == ("nab", "realTraffic/speed_7578.csv")


# ------------------------------------------------------------------------ --debug


def _debug_cases(tmp: Path) -> Iterator[tuple[list[str], type[BaseException]]]:
    from pipeline.registry.versions import RegistryError
    from pipeline.service.store import StoreError

    (tmp / "junk.sqlite").write_text("junk\n")
    (tmp / "empty").mkdir()
    yield ["data", "info", "nosuchset"], DatasetSpecError
    yield ["data", "info", f"csv:{tmp / 'none.csv'}"], DatasetError
    yield ["status", "--store", str(tmp / "junk.sqlite")], StoreError
    yield ["alerts", "--store", str(tmp / "junk.sqlite")], StoreError
    yield ["models", "rollback", "--models", str(tmp / "empty")], RegistryError


@pytest.mark.parametrize("how", ["option", "variable"])
def test_debug_shows_the_traceback_of_an_error_a_command_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Errors a command caught itself printed their one line under --debug too."""
    for args, error in _debug_cases(tmp_path):
        quiet = CliRunner().invoke(app, args)
        assert quiet.exit_code in (1, 2) and _error_line(quiet.output), args
        if how == "option":
            loud = CliRunner().invoke(app, ["--debug", *args])
        else:
            loud = CliRunner().invoke(app, args, env={"ROADCAST_DEBUG": "1"})
        assert isinstance(loud.exception, error), (args, loud.output)
        assert loud.exception.__traceback__ is not None


@pytest.mark.parametrize(
    "args",
    [
        ["--debug", "models", "list", "--models", "{tmp}/missing"],
        ["--debug", "data", "info"],
        ["--debug", "--bogus", "status"],
    ],
)
def test_a_usage_error_under_debug_is_one_line_without_a_box(tmp_path: Path, args) -> None:
    result = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [_error_line(result.output)]
    assert "--help`)" in result.output and "╭" not in result.output


# ----------------------------------------------------------------------------- CSV


def _transposed(path: Path, index_name: str | None) -> Path:
    stamps = pd.date_range("2024-03-01", periods=300, freq="5min")
    frame = pd.DataFrame(
        {"s1": range(300), "s2": range(300)}, index=stamps.strftime("%Y-%m-%dT%H:%M:%SZ")
    ).T
    frame.rename_axis(index_name).to_csv(path)
    return path


@pytest.mark.parametrize("index_name", ["sensor", None])
def test_a_transposed_file_with_text_sensor_ids_is_told_to_transpose(
    tmp_path: Path, index_name: str | None
) -> None:
    """Its text ids were read as readings (non-numeric value 's1'), or its unnamed id
    column as a sensor without a name, before its times were seen as column names."""
    path = _transposed(tmp_path / "t.csv", index_name)
    with pytest.raises(DatasetError, match=r"one row per sensor; transpose it"):
        load_dataset(f"csv:{path}")
    result = CliRunner().invoke(app, ["data", "info", f"csv:{path}"])
    assert result.exit_code == 1 and "transpose it" in _error_line(result.output)


def test_the_no_header_note_quotes_readings_whole(tmp_path: Path) -> None:
    """np.savetxt writes 60.13 as 6.013000000000000256e+01, which was cut to 6.0130000000."""
    path = tmp_path / "n.csv"
    np.savetxt(path, [[60.13, 60.17]] * 300, delimiter=",")
    result = CliRunner().invoke(app, ["data", "info", f"csv:{path}"])
    assert result.exit_code == 0, result.output
    assert "line 1 holds readings: 60.13, 60.17..." in result.output
    assert "refuses these readings" in result.output  # constant: the file's notes stay


# ---------------------------------------------------------------------------- --help


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


def _filled(output: str, width: int) -> list[str]:
    """Lines of the "Commands:" lists broken before a word that would have fitted."""
    early = []
    lines = output.splitlines()
    start = lines.index("Commands:") if "Commands:" in lines else len(lines)
    for prev, line in zip(lines[start + 1 :], lines[start + 2 :], strict=False):
        if re.match(r"\s{4,}\S", line) and len(prev) + 1 + len(line.split()[0]) <= width:
            early.append(prev)
    return early


@pytest.mark.parametrize("columns", [80, 100])
def test_help_never_cuts_a_name_at_80_or_100_columns(columns: int) -> None:
    """Typer's rich table cut option names (--allowed-latene…) and variables
    (ROADCAST_MODEL_…), and kept the docstrings' line breaks in the command lists."""
    root = typer.main.get_command(app)
    width = min(columns, 80) - 2  # click's help is at most 78 wide
    for path, command in _commands(root):
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
        where = " ".join(("roadcast", *path))
        out = result.output
        assert result.exit_code == 0, (where, out)
        assert "…" not in out and max(map(len, out.splitlines())) <= columns, (where, out)
        flat = " ".join(out.split())
        for param in command.params:
            for name in [*param.opts, *getattr(param, "secondary_opts", [])]:
                if name.startswith("-"):
                    assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", out), (where, name)
            for word in (getattr(param, "help", None) or "").split():
                assert word in flat, (where, param.name, word)
        for sub in getattr(command, "commands", {}).values():
            summary = " ".join(sub.get_short_help_str(limit=10**6).split())
            assert summary in flat and not summary.endswith("..."), (where, sub.name)
        assert _filled(out, width) == [], (where, out)
