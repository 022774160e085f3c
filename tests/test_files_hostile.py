"""Hostile files and options for the commands around the models and the store: bundles,
the registry's JSON files, stores, ``evaluate``, ``explain``, ``status``, ``alerts``,
``health``, ``deploy``, ``models`` and ``demo`` options.

Every case must end in a one-line error that names the file or option (a
:class:`BundleError`, :class:`BundleDirError`, :class:`StoreError`, or an ``error:`` /
usage line of the command line), never a traceback, a hang or a half-written output.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from models.bundle import MANIFEST, BundleError, read_bundle, save_bundle
from models.forecasters.registry import load_model
from pipeline.model_dir import BundleDirError, discover_bundles, read_serving
from pipeline.service.store import Store, StoreError
from pipeline.service.store_reads import check_store
from tests.http_support import raw_server
from tests.service_support import store_with

CONFIG = {"model": "persistence", "sensor_ids": ["a", "b"], "window": 3, "horizon": 2}
PAYLOAD_MARK = "roadcast-hostile-payload-ran"


def _rehash(bundle: Path) -> None:
    """Make the manifest agree with the files again, as a deliberate forger would."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    for name in manifest["files"]:
        path = bundle / name
        if path.is_file():
            manifest["files"][name] = hashlib.sha256(path.read_bytes()).hexdigest()
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def _edit_config(bundle: Path, **changes: Any) -> None:
    config = json.loads((bundle / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (bundle / "config.json").write_text(json.dumps(config))
    _rehash(bundle)


def _error_line(output: str) -> str:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


# ---------------------------------------------------------------------------- bundles


class _Payload:
    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.mark,))


def _listed_outside(bundle: Path) -> None:
    outside = bundle.parent / "outside.json"
    outside.write_text("{}")
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"]["../outside.json"] = hashlib.sha256(b"{}").hexdigest()
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def _params_linked_outside(bundle: Path) -> None:
    outside = bundle.parent / "outside.json"
    outside.write_text('{"coef": [1.0]}')
    (bundle / "params.json").unlink()
    (bundle / "params.json").symlink_to(outside)
    _rehash(bundle)


def _hidden_listed(bundle: Path) -> None:
    (bundle / ".x").write_text("{}")
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"][".x"] = hashlib.sha256(b"{}").hexdigest()
    (bundle / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "forge", [_listed_outside, _params_linked_outside, _hidden_listed], ids=lambda f: f.__name__
)
def test_a_manifest_naming_a_path_or_a_link_is_refused(tmp_path: Path, forge: Callable) -> None:
    bundle = tmp_path / "b"
    save_bundle(bundle, config=CONFIG, params={"coef": [0.5]})
    forge(bundle)
    with pytest.raises(BundleError, match="not a plain file of the bundle"):
        read_bundle(bundle)


def test_a_bundle_link_to_a_deleted_version_says_so(tmp_path: Path) -> None:
    link = tmp_path / "bundles" / "ar"
    link.parent.mkdir()
    link.symlink_to(tmp_path / "versions" / "ar" / "v1")
    with pytest.raises(BundleError, match=r"links to .*versions/ar/v1, which does not exist"):
        read_bundle(link)


def test_a_manifest_version_of_true_is_not_version_1(tmp_path: Path) -> None:
    save_bundle(tmp_path / "b", config=CONFIG)
    manifest = json.loads((tmp_path / "b" / MANIFEST).read_text())
    (tmp_path / "b" / MANIFEST).write_text(json.dumps({**manifest, "format_version": True}))
    with pytest.raises(BundleError, match="format version True"):
        read_bundle(tmp_path / "b")


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param(lambda good, mark: good[:40], id="truncated"),
        pytest.param(lambda good, mark: b"", id="empty"),
        pytest.param(lambda good, mark: pickle.dumps(_Payload(mark)), id="pickle-payload"),
        pytest.param(lambda good, mark: struct.pack("<Q", 2**62) + b"{}", id="huge-header"),
    ],
)
def test_unreadable_weights_are_a_bundle_error_and_never_run_code(
    tmp_path: Path, weights: Callable[[bytes, Path], bytes]
) -> None:
    bundle = tmp_path / "b"
    save_bundle(bundle, config=CONFIG, tensors={"w": np.ones((4, 3), np.float32)})
    mark = tmp_path / PAYLOAD_MARK
    path = bundle / "weights.safetensors"
    path.write_bytes(weights(path.read_bytes(), mark))
    _rehash(bundle)
    with pytest.raises(BundleError, match=r"weights\.safetensors is not a readable safetensors"):
        read_bundle(bundle)
    assert not mark.exists()


@pytest.mark.parametrize("name", [MANIFEST, "config.json"])
def test_json_nested_too_deep_to_parse_is_a_bundle_error(tmp_path: Path, name: str) -> None:
    save_bundle(tmp_path / "b", config=CONFIG)
    (tmp_path / "b" / name).write_text("[" * 200_000)
    if name != MANIFEST:
        _rehash(tmp_path / "b")
    with pytest.raises(BundleError, match=f"{name} is not valid JSON"):
        read_bundle(tmp_path / "b")


@pytest.mark.parametrize("field", ["window", "horizon"])
def test_a_window_or_horizon_too_large_to_allocate_is_refused(tmp_path: Path, field: str) -> None:
    save_bundle(tmp_path / "b", config=CONFIG)
    _edit_config(tmp_path / "b", **{field: 10**12})
    with pytest.raises(BundleError, match=f"field '{field}' must be an integer from 0 to"):
        read_bundle(tmp_path / "b")


@pytest.fixture(scope="module")
def small_panel():
    from pipeline.data.simulate import simulate_network

    return simulate_network(sensors=3, days=1, seed=1, faults_per_day=0.0, dropout=0.0)


def _persistence(root: Path, panel) -> Path:
    from models.forecasters.baselines import Persistence

    Persistence(window=3, horizon=2).fit(panel).save(root / "persistence")
    return root / "persistence"


def _ar(root: Path, panel) -> Path:
    from models.forecasters.ar import AutoRegressive

    AutoRegressive(window=3, horizon=2).fit(panel).save(root / "ar")
    return root / "ar"


def _params(bundle: Path, text: str) -> None:
    (bundle / "params.json").write_text(text)
    _rehash(bundle)


@pytest.mark.parametrize(
    ("make", "forge", "says"),
    [
        (_persistence, lambda b: _edit_config(b, hyper=[1, 2]), "cannot be rebuilt"),
        (_persistence, lambda b: _edit_config(b, hyper=None), "cannot be rebuilt"),
        (_persistence, lambda b: _edit_config(b, fallback="x"), "cannot be rebuilt"),
        (_persistence, lambda b: _edit_config(b, horizon=0), "from 1 to .* for a forecaster"),
        (_ar, lambda b: _params(b, "[]"), "cannot be rebuilt"),
    ],
    ids=["hyper-list", "hyper-missing", "fallback-text", "horizon-0", "params-list"],
)
def test_a_forecaster_bundle_with_mangled_fields_is_a_bundle_error(
    tmp_path: Path, small_panel, make: Callable, forge: Callable, says: str
) -> None:
    bundle = make(tmp_path, small_panel)
    forge(bundle)
    with pytest.raises(BundleError, match=says) as caught:
        load_model(bundle)
    assert str(bundle) in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------------------- registry


SERVING = {"models": {"ar": "abc123def456"}, "champion": None, "history": []}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (json.dumps({**SERVING, "models": {"ar": "../../../elsewhere"}}), "plain names"),
        (json.dumps({**SERVING, "models": {"../ar": "abc"}}), "plain names"),
        (json.dumps({**SERVING, "models": {".": "abc"}}), "plain names"),
        ('{"models": {"ar": "abc123def456", "ar": "fff"}, "history": []}', "appears twice"),
        (json.dumps({**SERVING, "history": [1]}), "'history' entry 1"),
        (
            json.dumps({**SERVING, "history": [{"models": {"ar": "x"}, "champion": {}}]}),
            "must name the champion model",
        ),
        (
            json.dumps({**SERVING, "champion": {"champion": "ar", "scores": 5}, "history": []}),
            "scores",
        ),
        (json.dumps({**SERVING, "history": [{**SERVING, "history": [SERVING]}]}), "its own"),
        ("[]", "must be an object"),
        ("null", "must be an object"),
        ("[" * 200_000, "maximum recursion depth"),
    ],
    ids=[
        "version-dotdot",
        "model-dotdot",
        "model-dot",
        "duplicate-model",
        "history-int",
        "history-champion-unnamed",
        "champion-scores-int",
        "nested-history",
        "list",
        "null",
        "nested-too-deep",
    ],
)
def test_a_serving_set_naming_paths_or_malformed_is_refused(
    tmp_path: Path, text: str, says: str
) -> None:
    (tmp_path / "serving.json").write_text(text)
    with pytest.raises(BundleDirError, match=says) as caught:
        discover_bundles(tmp_path)
    assert "serving.json" in str(caught.value)


@pytest.mark.parametrize("kind", ["folder", "pipe"])
def test_a_serving_set_that_is_not_a_file_is_refused_without_blocking(
    tmp_path: Path, kind: str
) -> None:
    import os

    path = tmp_path / "serving.json"
    if kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    with pytest.raises(BundleDirError, match=r"serving\.json cannot be read"):
        read_serving(tmp_path)


@pytest.fixture
def registry(tmp_path: Path):
    from tests.registry_support import make_registry

    return make_registry(tmp_path, 5)


def test_promote_refuses_a_champion_it_would_not_serve(registry) -> None:
    before = (registry.bundles / "serving.json").read_text()
    result = CliRunner().invoke(
        app, ["models", "promote", "ar", "--champion", "gru", "--models", str(registry.bundles)]
    )
    assert result.exit_code == 1
    assert "champion 'gru' would not be served" in _error_line(result.output)
    assert (registry.bundles / "serving.json").read_text() == before


def test_models_list_warns_of_a_served_version_that_is_not_registered(registry) -> None:
    path = registry.bundles / "serving.json"
    serving = json.loads(path.read_text())
    serving["models"]["ar"] = "deadbeef0000"
    path.write_text(json.dumps(serving))
    result = CliRunner().invoke(app, ["models", "list", "--models", str(registry.bundles)])
    assert result.exit_code == 0
    assert "warning:" in result.output and "ar@deadbeef0000, not in the registry" in result.output


@pytest.mark.parametrize(
    "claim", [{"model": "persistence"}, {"version": "ffffffffffff"}], ids=["model", "version"]
)
def test_a_version_record_that_disagrees_with_its_bundle_is_not_believed(
    registry, claim: dict[str, str]
) -> None:
    from pipeline.registry.versions import describe

    record = registry.a.path / "version.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), **claim, "label": "forged"}))
    described = describe(registry.a.path)
    assert (described.model, described.version) == ("ar", registry.a.version)
    assert described.label == ""


def test_a_version_filed_under_another_model_is_neither_promoted_nor_loaded(registry) -> None:
    import shutil

    from pipeline.model_dir import load_bundles
    from pipeline.registry.serving import promote
    from pipeline.registry.versions import RegistryError

    served = json.loads((registry.bundles / "serving.json").read_text())
    source = registry.bundles / "versions" / "persistence" / served["models"]["persistence"]
    shutil.copytree(source, registry.bundles / "versions" / "ar" / source.name)
    with pytest.raises(RegistryError, match="holds a 'persistence' model"):
        promote(registry.bundles, {"ar": source.name})
    served["models"] = {"ar": source.name}
    (registry.bundles / "serving.json").write_text(json.dumps(served))
    with pytest.raises(BundleDirError, match="holds a 'persistence' model, not 'ar'"):
        load_bundles(registry.bundles)


def test_a_serving_set_that_cannot_be_written_leaves_the_champion_as_it_was(
    registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.registry.serving as serving

    def read_only(*args: object) -> None:
        raise PermissionError(13, "Permission denied", str(registry.bundles / "serving.json"))

    from pipeline.model_dir import Champion

    serving.promote(
        registry.bundles,
        {"persistence": None},
        champion=Champion("persistence", (), {}, "", "", ""),
    )
    before = {n: (registry.bundles / n).read_bytes() for n in ("serving.json", "champion.json")}
    monkeypatch.setattr(serving, "write_serving", read_only)
    result = CliRunner().invoke(
        app, ["models", "promote", "ar", "--champion", "ar", "--models", str(registry.bundles)]
    )
    assert result.exit_code == 1 and "Permission denied" in _error_line(result.output)
    assert {n: (registry.bundles / n).read_bytes() for n in before} == before


def test_importing_two_plain_bundles_of_one_model_is_refused_and_changes_nothing(
    tmp_path: Path, small_panel
) -> None:
    from models.forecasters.baselines import Persistence

    for name, level in (("p1", 0.9), ("p2", 0.8)):
        Persistence(window=3, horizon=2, level=level).fit(small_panel).save(tmp_path / name)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(
        app, ["models", "promote", "persistence", "--models", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "both hold model 'persistence'" in _error_line(result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("command", [["list"], ["promote", "ar"], ["rollback"]])
@pytest.mark.parametrize("kind", ["missing", "file"])
def test_models_commands_refuse_a_folder_that_is_not_one(
    tmp_path: Path, command: list[str], kind: str
) -> None:
    folder = tmp_path / "models"
    if kind == "file":
        folder.write_text("x")
    result = CliRunner().invoke(app, ["models", *command, "--models", str(folder)])
    assert result.exit_code == 2 and "--models" in result.output, result.output
    assert "Traceback" not in result.output
    assert folder.is_file() if kind == "file" else not folder.exists()  # nothing created


def test_promote_refuses_an_empty_version_after_the_at(registry) -> None:
    result = CliRunner().invoke(
        app, ["models", "promote", "ar@", "--models", str(registry.bundles)]
    )
    assert result.exit_code == 2 and "MODEL@VERSION" in result.output


# ---------------------------------------------------------------------------- stores


def _not_sqlite(path: Path) -> None:
    path.write_text("not a database\n" * 20)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _other_schema(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE foo (x)")


def _newer(path: Path) -> None:
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")


STORES = {
    "not-sqlite": (_not_sqlite, "is not a roadcast store"),
    "empty": (_empty, "is not a roadcast store"),
    "other-schema": (_other_schema, "is not a roadcast store"),
    "newer-schema": (_newer, "has store schema '99'"),
    "folder": (Path.mkdir, "is a folder, not a store"),
}


@pytest.mark.parametrize("kind", sorted(STORES))
def test_check_store_refuses_what_is_not_a_roadcast_store(tmp_path: Path, kind: str) -> None:
    make, says = STORES[kind]
    path = tmp_path / "s.sqlite"
    make(path)
    with pytest.raises(StoreError, match=says):
        check_store(path)


@pytest.mark.parametrize("command", ["status", "alerts"])
@pytest.mark.parametrize("kind", sorted(STORES))
def test_status_and_alerts_name_a_store_that_is_not_one(
    tmp_path: Path, command: str, kind: str
) -> None:
    make, says = STORES[kind]
    path = tmp_path / "s.sqlite"
    make(path)
    result = CliRunner().invoke(app, [command, "--store", str(path)])
    assert result.exit_code == 1
    line = _error_line(result.output)
    assert says in line and str(path) in line


def test_alerts_limit_beyond_what_sqlite_holds_is_refused_naming_the_option(tmp_path) -> None:
    Store(tmp_path / "s.sqlite").close()
    result = CliRunner().invoke(
        app, ["alerts", "--store", str(tmp_path / "s.sqlite"), "--limit", str(2**63)]
    )
    assert result.exit_code == 2 and "--limit" in result.output
    assert "unexpected" not in result.output


def test_a_store_locked_by_a_writer_is_an_error_not_a_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.service.store_reads as store_reads
    from flows.io_tasks import is_transient

    monkeypatch.setattr(store_reads, "CHECK_TIMEOUT_S", 0.2)
    path = tmp_path / "s.sqlite"
    Store(path).close()
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=DELETE")
        writer.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match="is locked by a writer") as info:
            check_store(path)
        assert is_transient(info.value)  # the flows' I/O tasks retry it
        with (
            pytest.raises(StoreError, match="is locked by a writer") as info,
            store_reads.reading_store(path) as store,
        ):
            store.state()
        assert is_transient(info.value)
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@pytest.mark.parametrize(
    "args", [["status", "--last", "-1"], ["alerts", "--limit", "-1"]], ids=lambda a: a[0]
)
def test_negative_counts_are_refused(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    result = CliRunner().invoke(app, [*args, "--store", str(path)])
    assert result.exit_code == 2 and args[1] in result.output


ALERT = (
    "INSERT INTO alerts VALUES('a', 'firing', 'd', 'high', 's1', {ts}, 'det', {score}, "
    "{payload}, NULL)"
)


def test_alerts_lists_a_stored_alert(tmp_path: Path) -> None:
    row = ALERT.format(ts=1_700_000_000_000, score=2.5, payload='\'{"reason": "spike"}\'')
    path = store_with(tmp_path / "s.sqlite", row)
    result = CliRunner().invoke(app, ["alerts", "--store", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2023-11-14 22:13" in result.output and "2.5000" in result.output
    assert "spike" in result.output


def test_alerts_on_a_narrow_terminal_keeps_each_alert_on_few_whole_lines(tmp_path: Path) -> None:
    reason = "59.62 is above the 90% interval [34.49, 45.8] (expected 40.15)"
    row = ALERT.format(ts=1_700_000_000_000, score=2.5, payload=f'\'{{"reason": "{reason}"}}\'')
    path = store_with(tmp_path / "s.sqlite", row)
    result = CliRunner().invoke(app, ["alerts", "--store", str(path)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()  # the title above may wrap with the store's path
    head = lines.index("2023-11-14 22:13 UTC  firing  high  s1  det  2.5000")
    assert lines[head + 1 :] == [f"  {reason}"]


@pytest.mark.parametrize(
    ("command", "statement", "says"),
    [
        ("alerts", ALERT.format(ts="'notatime'", score=1.0, payload="'{'"), "alert row"),
        ("alerts", ALERT.format(ts=2**63 - 1, score=1.0, payload="'[1]'"), "alert row"),
        ("status", "INSERT INTO counters VALUES('consumed', 'abc')", "cannot read"),
        ("status", "INSERT INTO state VALUES('sensors_down', '[1,2')", "'sensors_down'"),
    ],
    ids=["alert-ts-text", "alert-ts-huge", "counter-text", "down-state-garbage"],
)
def test_values_of_the_wrong_type_in_a_store_name_the_store(
    tmp_path: Path, command: str, statement: str, says: str
) -> None:
    path = store_with(tmp_path / "s.sqlite", statement)
    result = CliRunner().invoke(app, [command, "--store", str(path)])
    assert result.exit_code == 1
    line = _error_line(result.output)
    assert str(path) in line and says in line


# ---------------------------------------------------------------------------- health


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """An HTTP server that answers 200 and then one byte every 0.1 s, until the client
    leaves."""

    def trickle(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        while True:  # ends with the OSError of a client that is gone
            conn.sendall(b"x")
            time.sleep(0.1)

    with raw_server(trickle) as url:
        yield url


def test_health_gives_up_on_a_server_that_trickles_its_answer(trickling_server: str) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(app, ["health", "--url", trickling_server, "--timeout", "0.5"])
    assert result.exit_code == 1
    assert "timed out" in result.output
    assert time.monotonic() - started < 20  # a bound on the deadline, not a speed test


@pytest.mark.parametrize(
    ("status", "body"),
    [(404, b""), (404, b"<html><body>Not Found</body></html>"),
     (200, b"\x1b[2J\x1b]0;title\x07pwned\nline2"), (200, b'["status"]')],
)  # fmt: skip
def test_health_names_the_status_of_an_answer_that_is_not_the_service(
    status: int, body: bytes
) -> None:
    """Whatever else answers on the port (even with 200) is not a healthy service, and
    its body is not printed."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = CliRunner().invoke(app, ["health", "--url", url, "--timeout", "5"])
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1
    assert f"HTTP {status} from {url}/healthz: not a roadcast health answer" in result.output
    assert "<html>" not in result.output and "\x1b" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/?a=b", "http://127.0.0.1:9/x#frag"])
def test_health_refuses_a_url_the_endpoint_path_cannot_follow(url: str) -> None:
    result = CliRunner().invoke(app, ["health", "--url", url])
    assert result.exit_code == 2 and "query or fragment" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--wait", "inf"],
        ["--timeout", "inf"],
        ["--timeout", "nan"],
        ["--wait", "nan"],
        ["--timeout", "1e10"],
        ["--wait", "1e12"],
    ],
)
def test_health_refuses_endless_durations(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["health", "--url", "http://127.0.0.1:9", *args])
    assert result.exit_code == 2 and args[0] in result.output


@pytest.mark.parametrize("url", ["http://[::1", "ftp://127.0.0.1:21", "not a url", "http://"])
def test_health_refuses_a_url_that_names_no_http_host(url: str) -> None:
    result = CliRunner().invoke(app, ["health", "--url", url, "--timeout", "0.5"])
    assert result.exit_code == 2 and "--url" in result.output
    assert "Traceback" not in result.output


def test_health_does_not_print_a_password_in_the_url() -> None:
    result = CliRunner().invoke(
        app, ["health", "--url", "http://ops:s3cret@127.0.0.1:9", "--timeout", "1"]
    )
    assert result.exit_code == 1 and "ops:***@127.0.0.1" in result.output
    assert "s3cret" not in result.output


# ------------------------------------------------------------------- deploy, demo, evaluate


@pytest.mark.parametrize("kind", ["folder", "pipe", "under-a-file"])
def test_deploy_refuses_a_yaml_path_it_cannot_write_as_a_file(tmp_path: Path, kind: str) -> None:
    import os

    target = tmp_path / "prefect.yaml"
    if kind == "folder":
        target.mkdir()
    elif kind == "pipe":
        os.mkfifo(target)
    else:
        target.write_text("x")
        target = target / "prefect.yaml"
    result = CliRunner().invoke(app, ["deploy", "--write-yaml", str(target)])
    assert result.exit_code == 2 and "--write-yaml" in result.output


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_deploy_refuses_a_limit_below_one(limit: str) -> None:
    result = CliRunner().invoke(app, ["deploy", "--serve", "--limit", limit])
    assert result.exit_code == 2 and "--limit" in result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--max-ticks", "-1"], "--max-ticks must be 0 (all) or more"),
        (["--speedup", "-1"], "--speedup must be 0"),
        (["--speedup", "nan"], "--speedup must be 0"),
        (["--epochs", "0"], "--epochs must be >= 1"),
    ],
    ids=["max-ticks", "speedup-negative", "speedup-nan", "epochs"],
)
def test_demo_refuses_options_out_of_range_before_writing(
    tmp_path: Path, args: list[str], says: str
) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--no-progress", *args])
    assert result.exit_code == 2 and says in _error_line(result.output)  # as `train`'s
    assert not out.exists()


def test_demo_refuses_an_output_folder_that_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.write_text("x")
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--no-progress"])
    assert result.exit_code == 2 and "is a file" in _error_line(result.output)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--window", "0"], "--window"),
        (["--window", "-3"], "--window"),
        (["--out", "."], "--out"),
        (["--out", "PIPE"], "--out"),
    ],
)
def test_evaluate_refuses_bad_options_before_reading_anything(
    tmp_path: Path, args: list[str], option: str
) -> None:
    import os

    if "PIPE" in args:
        os.mkfifo(tmp_path / "pipe")
        args = [str(tmp_path / "pipe") if a == "PIPE" else a for a in args]
    result = CliRunner().invoke(
        app, ["evaluate", str(tmp_path / "nothing"), "simulated:sensors=3", *args]
    )
    assert result.exit_code == 2 and option in result.output


# ---------------------------------------------------------------------------- explain


@pytest.fixture(scope="module")
def tgclstm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dataclasses import replace

    from models.forecasters.tgclstm import TGCLSTM
    from tests.test_tgclstm import SMALL, TRAIN, ring_panel

    root = tmp_path_factory.mktemp("tgclstm")
    TGCLSTM(train=replace(TRAIN, epochs=1), **SMALL).fit(ring_panel().slice(0, 200)).save(
        root / "tgclstm"
    )
    return root / "tgclstm"


def _nan_weights(bundle: Path) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(bundle / "weights.safetensors"))
    save_file(
        {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v for k, v in tensors.items()},
        str(bundle / "weights.safetensors"),
    )
    _rehash(bundle)


@pytest.mark.parametrize(
    ("forge", "says"),
    [
        (lambda b: _edit_config(b, coords=[[1.0]]), "'coords' must be 6 finite"),
        (_nan_weights, "holds NaN or infinite values"),
    ],
    ids=["coords-shape", "nan-weights"],
)
def test_explain_refuses_a_bundle_with_mangled_graph_data(
    tmp_path: Path, tgclstm_bundle: Path, forge: Callable, says: str
) -> None:
    import shutil

    bundle = tmp_path / "tgclstm"
    shutil.copytree(tgclstm_bundle, bundle)
    forge(bundle)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["explain", str(bundle), "--out", str(out)])
    assert result.exit_code == 1 and says in _error_line(result.output)
    assert not out.exists()


def test_explain_refuses_an_output_folder_that_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("x")
    result = CliRunner().invoke(app, ["explain", str(tmp_path / "b"), "--out", str(out)])
    assert result.exit_code == 2 and "--out" in result.output
