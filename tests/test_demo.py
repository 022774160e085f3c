"""The main job end to end on a small simulated network: quick models, the embedded
broker, the service as a real process, a replay, the summary and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.demo.run import run_demo

DATA = "simulated:sensors=8,days=2,seed=5"
KEYS = {
    "readings_produced", "readings_valid", "dead_lettered", "ticks", "forecasts_published",
    "alerts_published", "latency_ms", "accuracy", "lost",
}  # fmt: skip


@pytest.mark.integration
@pytest.mark.slow
def test_demo_trains_streams_and_summarises_then_reuses_its_bundles(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = run_demo(
        DATA,
        out=tmp_path,
        max_ticks=15,
        speedup=0,
        models=("persistence", "ar"),
        progress=False,
        log=lines.append,
    )
    assert set(summary) >= KEYS
    assert summary["lost"] == 0 and summary["dead_lettered"] == 0
    assert summary["readings_valid"] == summary["readings_produced"] > 0
    ticks = summary["ticks"]
    assert ticks >= 15 + 12 - 1  # the warm-up window and the test ticks (the last may stay open)
    assert summary["forecasts_published"] == 2 * 8 * ticks
    assert set(summary["accuracy"]) == {"ar", "persistence"}
    for per in summary["accuracy"].values():
        assert set(per) == {str(h) for h in range(1, 13)}
        assert all(m["n"] > 0 and m["rmse"] >= m["mae"] >= 0 for m in per.values())
    assert summary["latency_ms"]["p50"] is not None
    assert "persistence" in summary["versus_persistence"]
    assert summary["versus_persistence"] in (tmp_path / "report.md").read_text()
    assert summary["data"] == DATA  # the spec with its parameters
    assert "replayed as fast as possible" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    report = (tmp_path / "report.md").read_text()
    assert "| ar |" in report and (tmp_path / "error_by_horizon.png").is_file()
    # Alerting ran with the interval detector calibrated on the validation part.
    assert (tmp_path / "bundles" / "detectors" / "interval" / "config.json").is_file()
    alerts = summary["alerts"]
    assert alerts["firing"] + alerts["resolved"] == summary["alerts_published"]
    assert "## Anomaly alerts" in report
    assert any("interval detector calibrated on ar" in line for line in lines)
    assert '"event": "stopped"' in (tmp_path / "service.log").read_text()  # SIGTERM drained
    assert any("training" in line for line in lines)

    again: list[str] = []
    second = run_demo(DATA, out=tmp_path, max_ticks=5, speedup=0, progress=False, log=again.append)
    assert any("reusing ['ar', 'persistence']" in line for line in again)
    assert any("reusing the interval detector on ar" in line for line in again)
    assert second["lost"] == 0 and second["ticks"] >= 5 + 12 - 1  # a fresh store, not "late"


@pytest.mark.integration
@pytest.mark.slow
def test_demo_waits_for_the_grace_to_close_a_tick_a_reading_short(tmp_path: Path) -> None:
    """At --speedup 0 the demo stopped the service once every reading was consumed, before
    the grace closed the tick a reading short: it and every later tick stayed open,
    neither forecast nor counted (17 of 42 ticks)."""
    from flows.demo.run import _live_part
    from flows.demo.setup import choose_panel

    data = "simulated:sensors=5,hours=48"
    replayed = _live_part(choose_panel(data), 30).mask
    assert not replayed.all()  # a reading is missing: the grace, not the last reading, closes it
    summary = run_demo(
        data, out=tmp_path, max_ticks=30, speedup=0, models=("persistence",), progress=False,
        log=lambda _: None,
    )  # fmt: skip
    assert summary["ticks"] == 30 + 12 and summary["lost"] == 0


def test_demo_cli_reports_a_bad_data_spec(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["demo", "--data", "nosuchdata", "--out", str(tmp_path)])
    assert result.exit_code == 2  # an invalid argument value
    assert "error:" in result.output


def test_demo_leaves_a_folder_it_did_not_write_alone(tmp_path: Path) -> None:
    from flows.demo.run import DEMO_MARKS

    (tmp_path / "report.md").write_text("my notes\n")
    (tmp_path / "store.sqlite").write_text("my data\n")
    with pytest.raises(
        ValueError, match=r"report\.md, store\.sqlite, which the demo would replace"
    ):
        run_demo(DATA, out=tmp_path, progress=False, log=lambda _: None)
    assert (tmp_path / "report.md").read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "store.sqlite"]
    (tmp_path / DEMO_MARKS[0]).write_text("")  # an earlier demo's output: checks pass
    with pytest.raises(ValueError, match="--speedup"):
        run_demo(DATA, out=tmp_path, speedup=-1, progress=False, log=lambda _: None)
    # a pace no timer can wait for is refused before training, not after it
    with pytest.raises(ValueError, match="speedup 1e-09 would pace"):
        run_demo(DATA, out=tmp_path, speedup=1e-9, progress=False, log=lambda _: None)
    assert not (tmp_path / "bundles").exists()
    with pytest.raises(ValueError, match=r"--out /proc/roadcast-demo: cannot write in /proc"):
        run_demo(DATA, out=Path("/proc/roadcast-demo"), progress=False, log=lambda _: None)


def test_a_demo_into_the_folder_another_demo_is_running_in_is_refused_at_once(
    tmp_path: Path,
) -> None:
    """A second demo on the same --out deleted the first one's live store and summary,
    then both failed naming other causes. It is now refused before it writes anything."""
    from flows.demo.run import DEMO_MARKS, DemoError
    from pipeline.folder_lock import folder_lock

    (tmp_path / DEMO_MARKS[0]).write_text("written by roadcast demo\n")
    (tmp_path / "summary.json").write_text("{}\n")  # the running demo's
    running = folder_lock(tmp_path / DEMO_MARKS[0], 0.0, lambda: AssertionError("not free"))
    with running, pytest.raises(DemoError, match=r"is in use by another roadcast demo"):
        run_demo(DATA, out=tmp_path, progress=False, log=lambda _: None)
    assert (tmp_path / "summary.json").read_text() == "{}\n"
    assert not (tmp_path / "bundles").exists()


def test_a_service_that_cannot_start_is_named_with_its_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo said only "the service exited with code 1 while joining the consumer
    group"; the cause (here its metrics port taken) was in the service's log alone."""
    import socket

    from flows.demo.run import DemoError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("ROADCAST_METRICS_ENABLED", "true")
        monkeypatch.setenv("ROADCAST_METRICS_HOST", "127.0.0.1")
        monkeypatch.setenv("ROADCAST_METRICS_PORT", str(port))
        with pytest.raises(
            DemoError, match=rf"while starting \(joining the consumer group.*: .*{port}"
        ):
            run_demo(DATA, out=tmp_path, max_ticks=5, speedup=0, progress=False, log=print)


def test_demo_retrains_bundles_of_another_step_or_data_set(tmp_path: Path) -> None:
    from flows.demo.setup import choose_panel, ensure_bundles
    from models.panel import SensorPanel

    five = choose_panel("simulated:sensors=4,days=3,seed=5")
    kw = {"reuse": None, "models": ("persistence",), "epochs": 1, "device": "cpu"}
    ensure_bundles(five, tmp_path, progress=False, log=lambda _: None, **kw)
    fifteen = choose_panel("simulated:sensors=4,days=9,seed=5,freq=15")
    other = SensorPanel.from_values(five.values, five.timestamps, five.sensor_ids, name="other")
    for panel, why in (
        (fifteen, "trained on 5-minute steps, the data has 15-minute steps"),
        (five, "trained on 15-minute steps, the data has 5-minute steps"),
        (other, "trained on 'simulated', the data is 'other'"),
        (other, None),
    ):
        lines: list[str] = []
        ensure_bundles(panel, tmp_path, progress=False, log=lines.append, **kw)
        if why is None:
            assert any("reusing ['persistence']" in line for line in lines), lines
        else:
            assert any(why in line and "training new ones" in line for line in lines), lines
    with pytest.raises(ValueError, match="--data is empty"):
        choose_panel(" ")
    short = choose_panel("simulated:sensors=2,hours=2")
    with pytest.raises(ValueError, match="the demo cannot train its models on simulated: the test"):
        ensure_bundles(short, tmp_path / "short", progress=False, log=lambda _: None, **kw)


def test_demo_refuses_another_network_in_its_folder_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It trained every model first, then failed with a message cut mid-parenthesis
    that advised more data."""
    import flows.train_models
    from flows.demo.setup import choose_panel, ensure_bundles

    kw = {"reuse": None, "models": ("persistence",), "epochs": 1, "device": "cpu"}
    first = choose_panel("simulated:sensors=4,days=3,seed=5")
    ensure_bundles(first, tmp_path, progress=False, log=lambda _: None, **kw)
    fitted: list[str] = []
    monkeypatch.setattr(flows.train_models, "fit_seeds", lambda name, *a: fitted.append(name))
    smaller = choose_panel("simulated:sensors=3,days=3,seed=5")
    with pytest.raises(ValueError) as refused:
        ensure_bundles(smaller, tmp_path, progress=False, log=lambda _: None, **kw)
    message = str(refused.value)
    assert message.startswith(f"--out {tmp_path} holds models of another network (4 sensors")
    assert "more data" not in message and message.count("(") == message.count(")")
    assert not fitted


def test_the_summary_says_plainly_whether_models_beat_persistence() -> None:
    from flows.demo.summary import persistence_verdict

    def per(*rmse: float) -> dict[str, dict[str, float]]:
        return {str(k + 1): {"rmse": r, "mae": r} for k, r in enumerate(rmse)}

    good = {"persistence": per(1.0, 2.0, 3.0), "lstm": per(1.1, 1.5, 2.0)}
    assert persistence_verdict(good).startswith("Every model (lstm) beats persistence")
    bad = {"persistence": per(1.0, 2.0, 3.0), "lstm": per(0.9, 2.5, 2.0), "ar": per(1, 1, 1)}
    text = persistence_verdict(bad)
    assert text.startswith("Not every model beats persistence: lstm at 2 step(s)")
    assert "quick training" in text
    assert "No persistence baseline" in persistence_verdict({"lstm": per(1.0)})


def test_demo_reads_a_users_network_with_its_adjacency(tmp_path: Path) -> None:
    import pandas as pd
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.demo.setup import choose_panel, ensure_bundles

    net = choose_panel("simulated:sensors=4,days=3,seed=5")
    frame = pd.DataFrame(net.values, index=net.timestamps, columns=list(net.sensor_ids))
    frame.index.name = "time"
    (tmp_path / "speeds.csv").write_text(frame.to_csv())
    ring = [[int(abs(i - j) in (1, 3)) for j in range(4)] for i in range(4)]
    (tmp_path / "adj.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in ring))
    spec = f"csv:{tmp_path / 'speeds.csv'}"
    plain = choose_panel(spec)
    assert plain.graph is None
    lines: list[str] = []
    kw = {"reuse": None, "models": ("persistence",), "epochs": 1, "device": "cpu"}
    ensure_bundles(plain, tmp_path / "a", progress=False, log=lines.append, **kw)
    note = "no TGC-LSTM: speeds has no road graph (give one with --adjacency)"
    assert any(note in line for line in lines), lines
    graph = choose_panel(spec, reading={"adjacency": tmp_path / "adj.csv", "timezone": None})
    assert graph.graph is not None and graph.n_nodes == 4
    again: list[str] = []  # the bundles trained without the graph are not reused with it
    ensure_bundles(graph, tmp_path / "a", progress=False, log=again.append, **kw)
    assert any("trained without a road graph, the data has one" in line for line in again)
    twice: list[str] = []
    ensure_bundles(graph, tmp_path / "a", progress=False, log=twice.append, **kw)
    assert any("reusing ['persistence']" in line for line in twice), twice
    for args in (["--adjacency", "x.csv"], ["--timezone", "UTC", "--no-index"]):
        result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "b"), *args])
        assert result.exit_code == 1, result.output
        assert "need --data" in result.output or "needs --data" in result.output
    assert not (tmp_path / "b").exists()
