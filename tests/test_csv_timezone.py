"""Local wall-clock timestamps (``--timezone``): a year of naive local times crosses both
daylight-saving changes, where the clocks skip an hour and repeat one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.data.datasets import DatasetError, load_dataset

LA = "America/Los_Angeles"
# 30-minute readings around the autumn change (2024-11-03 01:00-01:59 happens twice in
# Los Angeles) and the spring one (2024-03-10 02:00-02:59 never happens).
AUTUMN = pd.date_range("2024-11-02T22:00", "2024-11-03T05:00", freq="30min", tz=LA)
SPRING = pd.date_range("2024-03-09T22:00", "2024-03-10T05:00", freq="30min", tz=LA)
# Hourly: the two 01:00 rows of 3 Nov are neighbours (a long file's, sensor by sensor).
HOURLY = pd.date_range("2024-11-02T20:00", "2024-11-03T06:00", freq="1h", tz=LA)


def local_csv(path: Path, stamps: pd.DatetimeIndex, *, long: bool = False) -> Path:
    """The readings 0, 1, 2, ... of sensors s1 and s2 (s2 = 100 + s1), stamped with the
    local wall-clock time and no offset."""
    wall = stamps.strftime("%Y-%m-%d %H:%M")
    if long:
        rows = ["time,sensor,value"]
        rows += [
            f"{t},{s},{k + (100 if s == 's2' else 0)}"
            for k, t in enumerate(wall)
            for s in ("s1", "s2")
        ]
    else:
        rows = ["time,s1,s2"] + [f"{t},{k},{100 + k}" for k, t in enumerate(wall)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("long", [False, True], ids=["wide", "long"])
@pytest.mark.parametrize("stamps", [AUTUMN, SPRING, HOURLY], ids=["autumn", "spring", "hourly"])
def test_local_times_across_a_clock_change_land_on_a_regular_utc_grid(tmp_path, stamps, long):
    panel = load_dataset(f"csv:{local_csv(tmp_path / 'd.csv', stamps, long=long)}", timezone=LA)
    assert list(panel.timestamps) == list(stamps.tz_convert("UTC"))
    assert panel.mask.all() and panel.values[:, 0].tolist() == list(range(len(stamps)))


def test_without_the_zone_the_repeated_hour_is_refused_naming_the_option(tmp_path) -> None:
    with pytest.raises(DatasetError, match=r"daylight saving ends\?.*or pass --timezone"):
        load_dataset(f"csv:{local_csv(tmp_path / 'd.csv', AUTUMN)}")


def test_a_time_the_clocks_skip_is_refused_naming_its_line(tmp_path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("time,s1\n2024-03-10 01:30,1\n2024-03-10 02:30,2\n2024-03-10 03:30,3\n")
    with pytest.raises(DatasetError, match=r"'2024-03-10 02:30' at line 3 does not exist in "):
        load_dataset(f"csv:{path}", timezone=LA)


def test_a_repeated_hour_listed_once_is_refused_naming_its_line(tmp_path) -> None:
    wall = AUTUMN.strftime("%Y-%m-%d %H:%M")
    order = [*range(0, 6), *range(8, len(wall))]  # the first 01:00 and 01:30 left out
    path = tmp_path / "d.csv"
    path.write_text("time,s1\n" + "".join(f"{wall[k]},{k}\n" for k in order))
    with pytest.raises(DatasetError, match=r"'2024-11-03 01:00' at line 8 lies in the hour"):
        load_dataset(f"csv:{path}", timezone=LA)


@pytest.mark.parametrize(
    ("first", "stamps"),
    [
        ("time", ["2024-07-01T08:00+02:00", "2024-07-01T09:00+02:00", "2024-07-01T10:00+02:00"]),
        ("time", ["1719813600", "1719817200", "1719820800"]),  # Unix seconds: UTC
    ],
)
def test_timestamps_that_say_their_offset_keep_it(tmp_path, first, stamps) -> None:
    path = tmp_path / "d.csv"
    path.write_text(f"{first},s1\n" + "".join(f"{t},{k}\n" for k, t in enumerate(stamps)))
    shown = load_dataset(f"csv:{path}", timezone=LA).timestamps
    assert shown[0] == pd.Timestamp("2024-07-01T06:00Z")


def test_local_times_in_a_zone_without_clock_changes_are_shifted(tmp_path) -> None:
    stamps = pd.date_range("2024-01-01", periods=48, freq="1h", tz="Asia/Kolkata")
    panel = load_dataset(f"csv:{local_csv(tmp_path / 'd.csv', stamps)}", timezone="Asia/Kolkata")
    assert panel.timestamps[0] == pd.Timestamp("2023-12-31T18:30Z")
    assert np.array_equal(panel.values[:, 1], 100 + np.arange(48))


def test_an_unknown_zone_and_another_data_set_are_refused(tmp_path) -> None:
    path = local_csv(tmp_path / "d.csv", AUTUMN)
    with pytest.raises(DatasetError, match=r"unknown time zone 'Pacific Time': give an IANA"):
        load_dataset(f"csv:{path}", timezone="Pacific Time")
    only = r"--timezone is only for timestamps in a file \(csv:, h5:, parquet:\), not simulated"
    with pytest.raises(DatasetError, match=only):
        load_dataset("simulated:sensors=5,days=1", timezone=LA)


def test_the_commands_that_read_a_csv_take_the_zone(tmp_path) -> None:
    path = local_csv(tmp_path / "d.csv", AUTUMN)
    shown = CliRunner().invoke(app, ["data", "info", f"csv:{path}", "--timezone", LA])
    assert shown.exit_code == 0, shown.output
    refused = CliRunner().invoke(app, ["data", "info", f"csv:{path}"])
    assert refused.exit_code == 1 and "--timezone" in refused.output
    for command in (["train"], ["replay"], ["evaluate", str(tmp_path)]):
        helped = CliRunner().invoke(app, [*command, "--help"])
        assert "--timezone" in helped.output, command
