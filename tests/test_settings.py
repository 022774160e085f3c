"""Settings and command-line options that must be refused, each with a one-line reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from flows.cli import app
from flows.cli.errors import RoadcastGroup
from pipeline.settings import SettingsError, load_settings, unknown_variables

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ("127.0.0.1:0", "port 0 of '127.0.0.1:0' is outside 1-65535"),
        ("kafka:99999", "port 99999 of 'kafka:99999' is outside 1-65535"),
        ("kafka:9092,kafka2", "HOST:PORT"),
        ("kafka 1:9092", "HOST:PORT"),
        (" , ", "at least one"),
    ],
)
def test_bootstrap_ports_and_hosts(servers: str, message: str) -> None:
    with pytest.raises(SettingsError, match=r"bootstrap_servers \(as given\)") as info:
        load_settings(bootstrap_servers=servers)
    assert message in str(info.value)
    assert load_settings(bootstrap_servers="[::1]:65535,kafka:1").bootstrap_servers


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ROADCAST_TOPIC_READINGS", "", "topic name is empty"),
        ("ROADCAST_TOPIC_DLQ", "dead letters", "not a legal topic name"),
        ("ROADCAST_TOPIC_FORECASTS", "..", "not a legal topic name"),
        ("ROADCAST_TOPIC_ALERTS", "a" * 250, "not a legal topic name"),
        ("ROADCAST_CONSUMER_GROUP", " ", "consumer group name is empty"),
        ("ROADCAST_TOPIC_DLQ", "roadcast.readings", "the four topics must differ"),
    ],
)
def test_topic_and_group_names(monkeypatch, variable: str, value: str, message: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_misspelled_variable_is_reported_with_the_closest_name(monkeypatch) -> None:
    monkeypatch.setenv("ROADCAST_TOPIC_READING", "x")
    monkeypatch.setenv("ROADCAST_BOOTSTRAP_SERVER", "kafka:9092")
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = str(info.value)
    assert (
        "ROADCAST_TOPIC_READING: not a roadcast setting; did you mean ROADCAST_TOPIC_READINGS?"
        in text
    )
    assert "did you mean ROADCAST_BOOTSTRAP_SERVERS?" in text
    assert unknown_variables({"ROADCAST_CONFIG": "x", "ROADCAST_DEBUG": "1", "OTHER": "y"}) == []


def test_toml_syntax_error_is_one_line_with_line_and_column(tmp_path, monkeypatch) -> None:
    toml = tmp_path / "roadcast.toml"
    toml.write_text('bootstrap_servers = "kafka:9092"\ntopic_readings = \n')
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = str(info.value)
    assert "\n" not in text and "roadcast.toml: invalid TOML" in text
    assert "line 2" in text and "column" in text
    toml.write_text('topic_reading = "x"\n')
    with pytest.raises(SettingsError, match="unknown setting 'topic_reading'; did you mean"):
        load_settings()
    monkeypatch.setenv("ROADCAST_CONFIG", str(tmp_path / "none.toml"))
    with pytest.raises(SettingsError, match="ROADCAST_CONFIG: no such file"):
        load_settings()


def test_toml_nested_too_deeply_is_invalid_toml_naming_the_file(tmp_path, monkeypatch) -> None:
    """Python's TOML parser recurses per level: 2000 nested arrays were a RecursionError."""
    deep = tmp_path / "deep.toml"
    deep.write_text(f"x = {'[' * 2000}{']' * 2000}\n")
    monkeypatch.setenv("ROADCAST_CONFIG", deep.name)  # the test runs in tmp_path
    with pytest.raises(SettingsError, match=r"^deep\.toml: invalid TOML: nested too deeply$"):
        load_settings()


def test_toml_with_a_byte_order_mark_is_read(tmp_path) -> None:
    (tmp_path / "roadcast.toml").write_bytes(b'\xef\xbb\xbftopic_readings = "bom.readings"\n')
    assert load_settings().topic_readings == "bom.readings"


def test_toml_keys_that_differ_in_case_only_are_refused(tmp_path) -> None:
    (tmp_path / "roadcast.toml").write_text('store_path = "/tmp/a"\nSTORE_PATH = "/tmp/b"\n')
    with pytest.raises(SettingsError, match="'store_path' and 'STORE_PATH' name the same"):
        load_settings()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("ROADCAST_STORE_PATH", "'ROADCAST_STORE_PATH'; did you mean store_path? (a TOML key"),
        ("roadcast_topic_reading", "did you mean topic_readings? (a TOML key has no ROADCAST_"),
    ],
)
def test_toml_key_spelled_as_its_variable_suggests_the_key(tmp_path, key, message) -> None:
    (tmp_path / "roadcast.toml").write_text(f'{key} = "x"\n')
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert message in str(info.value)


def test_huge_values_are_cut_in_errors(tmp_path) -> None:
    huge = "a" * 5_000_000
    (tmp_path / "roadcast.toml").write_text(
        f'topic_readings = "{huge}"\nmetrics_host = "{huge} b"\n{"k" * 1000} = 1\n'
        f"metrics_port = {'9' * 1000}\n"
    )
    with pytest.raises(SettingsError) as info:
        load_settings()
    lines = str(info.value).splitlines()
    assert len(lines) == 5 and all(len(line) < 200 for line in lines), lines
    assert "'aaaaaaaaaa" in lines[1] and "a...' is not a legal topic name" in lines[1]
    (tmp_path / "roadcast.toml").write_text(f'security_protocol = "SSL"\nssl_cafile = "{huge}"\n')
    with pytest.raises(SettingsError, match=r"CAFILE: no such file a{40}\.\.\.$"):
        load_settings()  # a name too long to look up is no such file, not an OSError


def test_security_settings_that_cannot_work(tmp_path) -> None:
    with pytest.raises(SettingsError, match="needs ROADCAST_SASL_USERNAME"):
        load_settings(security_protocol="SASL_SSL", sasl_username="user")
    with pytest.raises(SettingsError, match="ROADCAST_SSL_CAFILE: no such file"):
        load_settings(security_protocol="SSL", ssl_cafile=tmp_path / "missing.pem")
    with pytest.raises(SettingsError, match=r"ROADCAST_SSL_CAFILE: .* is a folder, not a file"):
        load_settings(security_protocol="SSL", ssl_cafile=tmp_path)
    with pytest.raises(SettingsError, match="ROADCAST_SSL_CAFILE: empty; name a file"):
        load_settings(security_protocol="SSL", ssl_cafile="")
    ok = load_settings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p")
    assert ok.kafka_config()["sasl_plain_username"] == "u"


def test_secrets_stay_out_of_errors() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(bootstrap_servers="x:0", sasl_password="hunter2-secret")
    assert "hunter2" not in str(info.value)


# ---------------------------------------------------------------- the command line


def test_empty_topic_stops_a_replay_before_it_sends(monkeypatch) -> None:
    monkeypatch.setenv("ROADCAST_TOPIC_READINGS", "")
    result = CliRunner().invoke(app, ["replay", "simulated:sensors=3,hours=1"])
    assert result.exit_code == 2
    assert "ROADCAST_TOPIC_READINGS: the topic name is empty" in result.output


def test_broken_toml_is_one_line_on_the_command_line(tmp_path) -> None:
    (tmp_path / "roadcast.toml").write_text("[kafka\n")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "invalid TOML" in lines[0] and "line 1" in lines[0], lines


@pytest.mark.parametrize(
    ("variable", "value"), [("ROADCAST_METRICS_PORT", "abc"), ("ROADCAST_COMPRESSION", "brotli")]
)
def test_one_bad_variable_is_one_line_on_the_command_line(monkeypatch, variable, value) -> None:
    monkeypatch.setenv(variable, value)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], lines


@pytest.mark.parametrize(
    ("args", "environ", "says"),
    [
        (["replay", "simulated", "--bootstrap", "host:notaport"], {}, "--bootstrap: expected"),
        (["replay", "simulated", "--topic", "bad topic!"], {}, "--topic: 'bad topic!' is not"),
        (["replay", "simulated", "--speedup", "inf"], {}, "--speedup: inf: must be a finite"),
        (["tail", "readings", "--bootstrap", ":9092"], {}, "--bootstrap: expected HOST:PORT"),
        (["tail", "readings"], {"ROADCAST_METRICS_PORT": "abc"}, "ROADCAST_METRICS_PORT: "),
        (["status"], {"ROADCAST_METRICS_PORT": "abc"}, "ROADCAST_METRICS_PORT: "),
        (["alerts"], {"ROADCAST_METRICS_PORT": "abc"}, "ROADCAST_METRICS_PORT: "),
        (["models", "list"], {"ROADCAST_METRICS_PORT": "abc"}, "ROADCAST_METRICS_PORT: "),
        (["serve", "--group", "bad group!"], {}, "--group: 'bad group!' is not a legal"),
        (["alerts", "deliver"], {"ROADCAST_METRICS_PORT": "abc"}, "ROADCAST_METRICS_PORT: "),
        (["data", "list"], {"ROADCAST_METRICS_PORT": "abc"}, "ROADCAST_METRICS_PORT: "),
        (["data", "fetch", "nab"], {"ROADCAST_METRICS_PORT": "abc"}, "ROADCAST_METRICS_PORT: "),
        (
            ["alerts", "deliver", "--alertmanager", "http://127.0.0.1:99999"],
            {},
            "--alertmanager: port 99999 is outside 1-65535, got http://127.0.0.1:99999",
        ),
    ],
)
def test_an_invalid_setting_exits_2_from_every_command(monkeypatch, args, environ, says) -> None:
    """replay, tail, status, alerts and models exited 1 where serve and alerts deliver
    exited 2, for the same option or variable; an option's error named the setting
    (``bootstrap_servers (as given)``) instead of the option."""
    for variable, value in environ.items():
        monkeypatch.setenv(variable, value)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--tick", "abc"], "--tick"),
        (["--tick", "0s"], "--tick"),
        (["--allowed-lateness", "-1min"], "--allowed-lateness"),
        (["--allowed-lateness", "100000d"], "--allowed-lateness"),
        (["--retain", "4000 days"], "--retain"),
    ],
)
def test_duration_options_name_the_option(tmp_path, args: list[str], option: str) -> None:
    """A duration over the service's cap was named by its field (allowed_lateness)."""
    result = CliRunner().invoke(app, ["serve", "--models", str(tmp_path), *args])
    assert result.exit_code == 2
    assert f"Invalid value for {option}" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("text", "hours"), [("1d", 24), ("1d2h", 26), ("2 days", 48), ("1.5d", 36), ("90min", 1.5)]
)
def test_durations_in_days_are_read_without_pandas_deprecation(text: str, hours: float) -> None:
    """pandas deprecates (and will drop) the lowercase day unit that people write."""
    import warnings

    from flows.cli.options import parse_duration

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        span = parse_duration(text, "--last")
        assert span is not None and span.total_seconds() == hours * 3600


def test_unexpected_errors_are_one_line_unless_debug(monkeypatch) -> None:
    from flows.cli import errors

    monkeypatch.setitem(errors._state, "debug", False)
    toy = typer.Typer(cls=RoadcastGroup)

    @toy.callback()
    def options(debug: bool = typer.Option(False, "--debug")) -> None:
        errors.set_debug(debug)

    @toy.command()
    def boom() -> None:
        raise KeyError("sensor")

    quiet = CliRunner().invoke(toy, ["boom"])
    assert quiet.exit_code == 1
    assert quiet.output.strip().splitlines() == [
        "error: KeyError: 'sensor' (unexpected; `roadcast --debug ...` shows the traceback)"
    ]
    loud = CliRunner().invoke(toy, ["--debug", "boom"])
    assert isinstance(loud.exception, KeyError)


def _write_panel_csv(path: Path, dead: str) -> None:
    """Three sensors on a 5-minute grid; ``dead`` reports only in the last fifth."""
    stamps = pd.date_range("2024-03-04", periods=400, freq="5min", tz="UTC")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            s: 50 + 5 * np.sin(np.arange(400) / 20 + k) + rng.normal(0, 1, 400)
            for k, s in enumerate(["s1", "s2", "s3"])
        },
        index=stamps.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    frame.loc[frame.index[:320], dead] = np.nan
    frame.index.name = "timestamp"
    frame.to_csv(path)


@pytest.mark.integration
@pytest.mark.slow
def test_train_failure_in_a_prefect_task_is_one_line(prefect_server, tmp_path) -> None:
    """``roadcast train`` on data with an all-missing sensor: the Prefect task fails, the
    user sees its one-line reason naming the sensor, and a traceback only with --debug."""
    data = tmp_path / "dead.csv"
    _write_panel_csv(data, dead="s2")
    env = {k: v for k, v in prefect_server.items() if not k.startswith("ROADCAST_")}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "flows.cli", "train", f"csv:{data}", "--models",
               "persistence", "--out", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    quiet = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert quiet.returncode == 1, quiet.stderr[-3000:]
    assert "Traceback" not in quiet.stderr, quiet.stderr[-3000:]
    errors = [line for line in quiet.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "s2" in errors[0] and "training part" in errors[0], errors
    loud = subprocess.run(
        [sys.executable, "-m", "flows.cli", "--debug", *command[3:]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert loud.returncode == 1 and "Traceback" in loud.stderr, loud.stderr[-3000:]


@pytest.mark.parametrize("url", [":{alert_id}", "%zz{alert_id}", "http://x/a b{sensor}"])
def test_a_generator_url_alertmanager_would_refuse_is_refused_at_start(url) -> None:
    """Alertmanager answers 422 to an alert whose generatorURL is not a URI: every alert
    was dropped, with a warning each batch."""
    with pytest.raises(SettingsError, match="expected an absolute URI"):
        load_settings(alert_generator_url=url)
    assert load_settings(alert_generator_url="https://g.example/d?s={sensor}&x=%20")


def test_a_duration_setting_written_with_a_unit_is_told_it_is_in_seconds(monkeypatch) -> None:
    monkeypatch.setenv("ROADCAST_ALERT_TIMEOUT_S", "5 minutes")
    with pytest.raises(SettingsError, match=r"ROADCAST_ALERT_TIMEOUT_S: .*in seconds, e\.g\. 30"):
        load_settings()


@pytest.mark.parametrize(("path", "prefect"), [("/api/flow_runs/", True), ("/healthz", False)])
def test_a_prefect_api_that_stops_answering_is_named_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, path: str, prefect: bool
) -> None:
    """A temporary Prefect server that died mid-run showed as "ConnectError: [Errno 111]
    Connection refused (unexpected; ...)"."""
    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli.errors import describe
    from pipeline.kafka.broker import free_port

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    port = free_port()  # nothing listens there
    with pytest.raises(httpx.ConnectError) as info:
        httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # as without a server
        line = describe(info.value)
    if prefect:
        assert line.startswith(f"the Prefect API at http://127.0.0.1:{port} stopped answering")
        assert "temporary Prefect server started for this command stopped" in line
        monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{port}/api")
        assert describe(info.value).endswith("check the server PREFECT_API_URL names")
    else:
        assert line.startswith("ConnectError:") and "unexpected" in line


@pytest.mark.parametrize("device", ["cuda:0", " CUDA ", "cpu"])
def test_the_device_setting_takes_what_device_takes(monkeypatch, device):
    """ROADCAST_DEVICE=cuda:0 was refused by every command (even `data list`), while
    --device cuda:0 was taken."""
    monkeypatch.setenv("ROADCAST_DEVICE", device)
    assert load_settings().device == device.strip().lower()
    monkeypatch.setenv("ROADCAST_DEVICE", "mps")
    with pytest.raises(SettingsError, match="ROADCAST_DEVICE: unknown device 'mps'"):
        load_settings()
