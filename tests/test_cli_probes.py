"""Hostile input to the less travelled commands: explain, status, alerts, health, models,
data and demo. Each error is one line naming the argument, file or setting at fault; no
traceback, no hang, nothing written half-way."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.http_support import raw_server
from tests.service_support import store_with


def _error_line(output: str) -> str:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["models", "list", "--models", "{tmp}/missing"], "Invalid value for --models"),
        (["evaluate", "bundle", "csv:data.csv", "--out", "{tmp}"], "Invalid value for --out"),
        (["train", "--no-such-option"], "No such option: --no-such-option"),
        (["evaluate"], "Missing argument 'bundle'"),
    ],
    ids=["bad-value", "bad-value-in-body", "unknown-option", "missing-argument"],
)
def test_a_usage_error_is_one_error_line_with_status_2(
    tmp_path: Path, args: list[str], says: str
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert says in line and "--help`)" in line, line
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize(
    ("args", "debug", "says"),
    [
        (["status"], "maybe", "Invalid value for '--debug' (env var: 'ROADCAST_DEBUG')"),
        (["--bogus", "status"], None, "No such option: --bogus"),
        (["--debug=maybe", "status"], None, "Option '--debug' does not take a value"),
    ],
    ids=["bad-ROADCAST_DEBUG", "unknown-option", "value-for-a-flag"],
)
def test_a_usage_error_of_the_group_is_one_error_line_with_status_2(
    monkeypatch: pytest.MonkeyPatch, args: list[str], debug: str | None, says: str
) -> None:
    """The group's own options were refused in click's boxed usage block."""
    if debug is not None:
        monkeypatch.setenv("ROADCAST_DEBUG", debug)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert says in line and "--help`)" in line, line
    assert len(result.output.strip().splitlines()) == 1, result.output


# ------------------------------------------------------------------------ status, alerts


@pytest.mark.parametrize("last", ["²", "--5"])
def test_status_last_that_only_looks_like_a_count_names_the_option(
    tmp_path: Path, last: str
) -> None:
    path = store_with(tmp_path / "s.sqlite")
    result = CliRunner().invoke(app, ["status", "--store", str(path), "--last", last])
    assert result.exit_code == 2, result.output
    assert "--last" in result.output and "invalid literal" not in result.output


def test_status_names_the_store_whose_down_sensor_time_is_out_of_range(tmp_path: Path) -> None:
    down = json.dumps({"s1": 10**17})
    path = store_with(tmp_path / "s.sqlite", f"INSERT INTO state VALUES('sensors_down', '{down}')")
    result = CliRunner().invoke(app, ["status", "--store", str(path)])
    assert result.exit_code == 1
    line = _error_line(result.output)
    assert str(path) in line and "'sensors_down'" in line


def test_alerts_refuses_an_empty_store_path_instead_of_reading_the_default(
    tmp_path: Path,
) -> None:
    default = store_with(tmp_path / "default.sqlite")
    result = CliRunner().invoke(
        app, ["alerts", "--store", ""], env={"ROADCAST_STORE_PATH": str(default)}
    )
    assert result.exit_code == 2
    assert "--store: the path is empty" in _error_line(result.output)


# ---------------------------------------------------------------------------- health


def test_health_gives_up_on_a_server_that_trickles_its_headers() -> None:
    """httpx's timeout bounds each read: without a deadline on the whole request this
    answer's headers (one byte every 0.3 s for 18 s) would hold the command."""

    def trickle(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(60):
            conn.sendall(b"a")
            time.sleep(0.3)
        conn.sendall(b"\r\nContent-Length: 0\r\n\r\n")

    with raw_server(trickle) as url:
        result = CliRunner().invoke(app, ["health", "--url", url, "--timeout", "0.5"])
    assert result.exit_code == 1
    assert f"no answer from {url}/healthz: timed out after 0.5 s" in result.output


# --------------------------------------------------------------------------- explain


@pytest.fixture(scope="module")
def tgclstm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dataclasses import replace

    from models.forecasters.tgclstm import TGCLSTM
    from tests.test_tgclstm import TRAIN, ring_panel

    root = tmp_path_factory.mktemp("tgclstm")
    model = TGCLSTM(
        train=replace(TRAIN, epochs=1), hidden=8, graph_hidden=4, embed=2, window=6, horizon=3
    )
    model.fit(ring_panel().slice(0, 200)).save(root / "tgclstm")
    return root / "tgclstm"


def test_explain_writes_neither_file_when_one_cannot_be_written(
    tmp_path: Path, tgclstm_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["explain", str(tgclstm_bundle), "--out", str(out)])
    assert result.exit_code == 1
    assert "No space left" in _error_line(result.output)
    assert list(out.iterdir()) == []


def test_explain_replaces_a_dangling_link_in_its_output_folder(
    tmp_path: Path, tgclstm_bundle: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "influence_map.png").symlink_to(tmp_path / "gone" / "map.png")
    result = CliRunner().invoke(app, ["explain", str(tgclstm_bundle), "--out", str(out)])
    assert result.exit_code == 0, result.output
    png = out / "influence_map.png"
    assert not png.is_symlink() and png.read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "gone").exists()
    assert sorted(p.name for p in out.iterdir()) == ["influence.csv", "influence_map.png"]


def test_explain_names_the_output_folder_it_cannot_create(
    tmp_path: Path, tgclstm_bundle: Path
) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop")
    result = CliRunner().invoke(app, ["explain", str(tgclstm_bundle), "--out", str(loop)])
    assert result.exit_code == 1
    line = _error_line(result.output)
    assert f"output folder {loop}" in line and "--out" in line


# ---------------------------------------------------------------------------- models


def test_rollback_refuses_a_set_that_serves_nothing(tmp_path: Path) -> None:
    from tests.registry_support import make_registry

    bundles = make_registry(tmp_path, 5).bundles
    path = bundles / "serving.json"
    serving = json.loads(path.read_text())
    serving["history"] = [{"models": {}}]
    path.write_text(json.dumps(serving))
    before = path.read_text()
    result = CliRunner().invoke(app, ["models", "rollback", "--models", str(bundles)])
    assert result.exit_code == 1
    assert "serves no model" in _error_line(result.output)
    assert path.read_text() == before
    assert (bundles / "ar").is_symlink()


# ------------------------------------------------------------------------------ data


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nab", "--timeout", "0"], "Invalid value for --timeout: must be a number of seconds"),
        (["nab", "--timeout", "nan"], "Invalid value for --timeout: must be a number of seconds"),
        (["nosuch"], "Invalid value for NAME: unknown data set 'nosuch'"),
    ],
)
def test_fetch_with_an_invalid_value_is_a_usage_error(tmp_path: Path, args, message) -> None:
    """These exited 1, where `train` exits 2 for an invalid option value."""
    result = CliRunner().invoke(app, ["data", "fetch", *args, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not any(tmp_path.iterdir())


def test_fetch_of_a_built_in_data_set_says_there_is_nothing_to_fetch(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(app, ["data", "fetch", "simulated", "--data-dir", str(data_dir)])
    assert result.exit_code == 0
    assert "simulated is built in" in result.output and "nothing to fetch" in result.output
    assert not data_dir.exists()


@pytest.mark.parametrize("start", ["1600-01-01", "2249-12-31T12:00"])
def test_a_simulated_start_outside_the_wire_years_is_refused(start: str) -> None:
    result = CliRunner().invoke(app, ["data", "info", f"simulated:sensors=2,days=1,start={start}"])
    assert result.exit_code == 2
    line = _error_line(result.output)
    assert f"start={start!r}" in line and "1700-2249" in line


# ------------------------------------------------------------------------------ demo


def test_demo_removes_the_output_folder_it_created_when_it_cannot_train(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["demo", "--data", "simulated:sensors=3,hours=3", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--epochs", "1", "--speedup", "0", "--no-progress"])
    assert result.exit_code == 1
    assert "cannot train" in _error_line(result.output)
    assert not out.exists()


def test_demo_refuses_models_that_is_a_file_before_any_work(tmp_path: Path) -> None:
    models = tmp_path / "bundles"
    models.write_text("not a folder")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["demo", "--models", str(models), "--out", str(out)], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 2
    assert "--models" in result.output and "is a file" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["explain", "no-bundle", "--top", "0"], "'--top'"),
        (["evaluate", "no-bundle", "simulated", "--test", "nan"], "--test"),
        (["evaluate", "no-bundle", "simulated", "--valid", "-1"], "--valid"),
    ],
)
def test_explain_and_evaluate_options_out_of_range_are_usage_errors(args, option) -> None:
    """These exited 1 (and explain's only after loading the bundle)."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and f"Invalid value for {option}" in result.output
