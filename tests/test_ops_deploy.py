"""``roadcast deploy --cron/--param`` refuse, in one line and before anything is
registered, what would make a deployment do other than asked: a schedule Prefect reads
otherwise or never fires, a number JSON cannot carry, a value every run would refuse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows.deploy import DeployError, customised
from tests.waiting import WAIT_S

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("crons", "params", "message"),
    [
        (["forecast=*/5 * * * * *"], [], "has six fields; Prefect reads the sixth as seconds"),
        (["report=0 0 31 2 *"], [], "'0 0 31 2 *' names no date that exists"),
        (["drift=0 0 30 2 *"], [], "so it would never run"),
        ([], ["drift.ratio=nan"], "--param drift.ratio='nan': not a finite number"),
        ([], ["drift.ratio=Infinity"], "--param drift.ratio='Infinity': not a finite number"),
        ([], ["drift.ratio=0.5"], "drift ratio must be a finite number above 1"),
        ([], ["drift.min_count=0"], "drift min_count must be from 1"),
        ([], ["report.since=yesterday"], "since='yesterday' is neither a duration"),
        ([], ["report.horizon=0"], "horizon must be at least 1 step, got 0"),
        ([], ['train.models=["ar","arima"]'], "unknown model(s) ['arima']"),
        ([], ["train.seeds=0"], "--param train.seeds='0': --seeds must be >= 1, got 0"),
        ([], ["train.test=1.5"], "--test must be a share between 0 and 1, got 1.5"),
        ([], ["train.tune=20x"], "--tune '20x'"),
        ([], ["train.timezone=Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_what_would_not_run_as_asked_is_refused(
    crons: list[str], params: list[str], message: str
) -> None:
    with pytest.raises(DeployError) as raised:
        customised(crons=crons, params=params)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_schedules_and_values_the_flows_take_pass() -> None:
    specs = {
        s.name: s
        for s in customised(
            crons=["train=@daily", "report=0 6 29 2 *", "drift=0 3 * * MON"],
            params=["report.since=6h", "drift.ratio=3", "train.models=ar,lstm", "train.seeds=1"],
        )
    }
    assert specs["weekly"].cron == "@daily" and specs["daily"].cron == "0 6 29 2 *"
    assert specs["every-15-minutes"].parameters == {"ratio": 3}
    assert specs["weekly"].parameters["models"] == "ar,lstm"


def test_the_command_line_refuses_a_seconds_field_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "deploy", "--cron", "forecast=0 */5 * * * *"],
        cwd=REPO, capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: --cron forecast: '0 */5 * * * *' has six fields")
