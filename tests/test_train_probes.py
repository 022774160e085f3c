"""``roadcast train`` / ``evaluate`` / ``data info`` on unusual networks and settings: each
refusal comes before any fit, in one line naming the model, sensor or option."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.train_models import train_models
from models.forecasters.comparison import MAX_SEEDS, TrainPlan, check_readings, unsupported
from models.panel import SensorPanel, chronological_split
from tests.test_train_bad_input import panel, readings


def daily(n: int = 400, nodes: int = 3) -> SensorPanel:
    """Readings once a day: the seasonal model's period is a week, 7 steps."""
    stamps = pd.date_range("2023-01-01", periods=n, freq="1D", tz="UTC")
    values = readings(n, nodes).astype(np.float32)
    return SensorPanel.from_values(values, stamps, [f"s{i}" for i in range(nodes)], name="daily")


def write_csv(values: np.ndarray, path: Path) -> Path:
    frame = pd.DataFrame(values, columns=[f"s{i}" for i in range(values.shape[1])])
    frame.insert(0, "time", pd.date_range("2024-03-01", periods=len(frame), freq="5min"))
    frame.to_csv(path, index=False)
    return path


def test_a_seasonal_period_shorter_than_the_horizon_is_left_out_by_default():
    """Daily data and --horizon 12: a default run failed fitting the seasonal model."""
    plan = TrainPlan(models=("seasonal",), window=12, horizon=12, seeds=1)
    why = unsupported("seasonal", chronological_split(daily()), plan)
    assert why is not None and "period of 7 steps is shorter than --horizon 12" in why
    short = TrainPlan(models=("seasonal",), window=6, horizon=6, seeds=1)
    assert unsupported("seasonal", chronological_split(daily()), short) is None


def test_a_model_asked_for_that_the_data_cannot_support_is_refused_before_any_fit(
    tmp_path: Path,
):
    """It failed after the models before it (and any --tune search) had been fitted."""
    plan = TrainPlan(models=("persistence", "seasonal"), horizon=12, seeds=1, progress=False)
    said: list[str] = []
    with pytest.raises(ValueError, match=r"^seasonal: its period of 7 steps .* drop it from"):
        train_models(daily(), plan, tmp_path / "out", log=said.append)
    assert "persistence:" not in said and not (tmp_path / "out").exists()


def test_a_cadence_without_a_daily_period_is_named_in_words():
    stamps = pd.date_range("2024-03-01", periods=300, freq="7min", tz="UTC")
    odd = SensorPanel.from_values(readings(300).astype(np.float32), stamps, list("abcd"))
    plan = TrainPlan(models=("seasonal",), window=6, horizon=3, seeds=1)
    why = str(unsupported("seasonal", chronological_split(odd), plan))
    assert "a day is not a whole number of 7-minute steps" in why and "0 days" not in why


def test_more_seeds_than_the_cap_are_refused_before_anything_runs(tmp_path: Path):
    """--seeds 1000000 fitted (and kept in memory) a million models."""
    with pytest.raises(ValueError, match=rf"--seeds {MAX_SEEDS + 1} is more than {MAX_SEEDS}"):
        TrainPlan(models=("lstm",), seeds=MAX_SEEDS + 1)
    assert TrainPlan(models=("lstm",), seeds=MAX_SEEDS).seeds == MAX_SEEDS
    data = write_csv(readings(300, 3), tmp_path / "data.csv")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", f"csv:{data}", "--seeds", "1000000", "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 2 and "--seeds 1000000 is more than" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("column", "message"),
    [(np.nan, r"have no reading at all, e\.g\. \['s1'\]"), (7.0, r"one constant .*\['s1'\] \(7\)")],
)
def test_data_info_names_a_sensor_training_refuses(tmp_path: Path, column: float, message):
    """``data info`` gave a note on an all-missing or constant sensor and no word that
    ``roadcast train`` refuses it."""
    values = readings(300, 3)
    values[:, 1] = column
    with pytest.raises(ValueError, match=message):
        check_readings(panel(values))
    result = CliRunner().invoke(
        app, ["data", "info", f"csv:{write_csv(values, tmp_path / 'd.csv')}"]
    )
    assert result.exit_code == 0, result.output
    assert "`roadcast train` refuses these readings" in result.output
    assert "['s1']" in " ".join(result.output.split())


def test_evaluate_names_the_versions_of_a_model_registered_but_not_served(tmp_path: Path):
    """After ``train --no-promote`` there is no DIR/bundles/<model>: evaluate said to
    train one, though its versions were there."""
    from models.forecasters.baselines import Persistence
    from pipeline.registry.versions import register

    values = readings(300, 3)
    bundles = tmp_path / "bundles"
    model = Persistence(window=6, horizon=3).fit(panel(values))
    version = register(bundles, model, label="probe", run_id="run1")
    data = write_csv(values, tmp_path / "data.csv")
    result = CliRunner().invoke(app, ["evaluate", str(bundles / "persistence"), f"csv:{data}"])
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "registered but not served" in text
    assert version.version in text
    assert "roadcast models promote persistence" in text
    missing = CliRunner().invoke(app, ["evaluate", str(bundles / "lstm"), f"csv:{data}"])
    assert missing.exit_code == 1 and "manifest.json missing" in missing.output
    # a served model whose link leads nowhere was said to be "registered but not served"
    (bundles / "persistence").symlink_to(tmp_path / "gone", target_is_directory=True)
    dangling = CliRunner().invoke(app, ["evaluate", str(bundles / "persistence"), f"csv:{data}"])
    text = " ".join(dangling.output.split())
    assert dangling.exit_code == 1 and "links to" in text and "which does not exist" in text


@pytest.mark.integration
def test_the_flow_refuses_an_asked_model_before_tuning(prefect_harness, tmp_path: Path):
    """Through the train flow: the refusal comes before --tune searches anything."""
    from flows.train_flow import train_flow

    values = daily().values.reshape(400, 3)
    frame = pd.DataFrame(values, columns=["s0", "s1", "s2"])
    frame.insert(0, "date", pd.date_range("2023-01-01", periods=400, freq="1D").strftime("%F"))
    frame.to_csv(tmp_path / "daily.csv", index=False)
    with pytest.raises(ValueError, match=r"^seasonal: its period of 7 steps"):
        train_flow(
            data=f"csv:{tmp_path / 'daily.csv'}", models="ar,seasonal", seeds=1, epochs=1,
            tune="2", valid=0.2, out=str(tmp_path / "out"), device="cpu",
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_a_run_writes_its_models_only_while_no_other_run_writes_into_the_same_out(
    tmp_path: Path, monkeypatch
):
    """Two trains into one --out interleaved their writing: metrics.json named one run's
    versions and serving.json served the other's."""
    import fcntl
    import json
    import os

    from flows import train_models as module

    values = readings(300, 3)
    plan = TrainPlan(models=("persistence",), window=6, horizon=3, seeds=1, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    other = os.open(out, os.O_RDONLY)  # another run, writing
    fcntl.flock(other, fcntl.LOCK_EX)
    monkeypatch.setattr(module, "OUT_LOCK_WAIT_S", 0.0)
    try:
        with pytest.raises(ValueError, match=rf"--out {out}: another run has been writing"):
            train_models(panel(values), plan, out, report=False)
    finally:
        os.close(other)
    assert list(out.iterdir()) == []
    train_models(panel(values), plan, out, report=False)
    written = json.loads((out / "metrics.json").read_text())["versions"]
    served = json.loads((out / "bundles" / "serving.json").read_text())["models"]
    assert written == served


def test_a_time_budget_under_a_second_names_its_share_as_it_is():
    """--tune 1s with three tuned models said a trial took longer than "its 0 s share"."""
    import time

    from models.forecasters.comparison import split_panel
    from models.forecasters.tuning import Budget, TuningError, tune_model
    from tests.test_tuning import PLAN, toy_panel

    def slow(*_: object) -> float:
        time.sleep(0.5)
        return 1.0

    split = split_panel(toy_panel(), PLAN)
    with pytest.raises(TuningError, match=r"took .* s, more than its 0\.3 s share"):
        tune_model("lstm", split, PLAN, Budget(seconds=1.0), seconds=0.3, run=slow, log=print)


@pytest.mark.integration
@pytest.mark.slow
def test_a_terminal_ctrl_c_ends_a_training_at_once_naming_what_was_kept(tmp_path: Path):
    """A terminal's Ctrl-C reaches the whole process group: it killed Prefect's temporary
    server too, and the command then retried against it for minutes before blaming the
    server. The server now runs in a session of its own: the run is recorded as crashed,
    and the command says it was interrupted and what the output folder keeps."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    from tests.processes import alive, children_of
    from tests.waiting import WAIT_S, wait_until

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    args = [
        sys.executable, "-m", "flows.cli", "train", "simulated:sensors=6,days=4", "--models",
        "lstm", "--seeds", "1", "--epochs", "100000", "--out", str(tmp_path), "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # a group of its own, as a terminal gives a command
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("Beginning flow run" in line for line in lines), what="the run")
        server = [pid for pid, cmd in children_of(proc.pid).items() if "uvicorn" in cmd]
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        code = proc.wait(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=WAIT_S)
    text = "".join(lines)
    assert code == 130, text[-3000:]
    assert "interrupted before the run finished" in text and "stopped answering" not in text
    assert server and not any(alive(pid) for pid in server)  # stopped with the command
