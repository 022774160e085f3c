"""CSV input in long format (``time,sensor,value``, one reading per row), and the hint for
local times that repeat an hour when daylight saving ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.datasets import DatasetError, load_dataset


def readings(steps: int = 30, sensors: tuple[str, ...] = ("a", "b", "c")) -> pd.DataFrame:
    times = pd.date_range("2024-03-04", periods=steps, freq="5min")
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.normal(50, 5, (steps, len(sensors))), index=times, columns=sensors)


def long_rows(wide: pd.DataFrame) -> pd.DataFrame:
    long = wide.stack().rename("value").reset_index()
    long.columns = ["time", "sensor", "value"]
    long["time"] = long["time"].dt.strftime("%Y-%m-%d %H:%M:%S")
    return long


def test_a_long_file_reads_as_the_same_panel_as_the_wide_one(tmp_path: Path) -> None:
    wide = readings()
    wide.iloc[4, 1] = np.nan  # one reading missing: absent from the long file
    wide.index.name = "time"
    wide.to_csv(tmp_path / "wide.csv", date_format="%Y-%m-%d %H:%M:%S")
    shuffled = long_rows(wide).sample(frac=1.0, random_state=1)[["sensor", "value", "time"]]
    shuffled.to_csv(tmp_path / "long.csv", index=False)
    a = load_dataset(f"csv:{tmp_path / 'wide.csv'}")
    b = load_dataset(f"csv:{tmp_path / 'long.csv'}")
    assert set(b.sensor_ids) == set(a.sensor_ids)
    order = [b.sensor_ids.index(s) for s in a.sensor_ids]
    assert (b.timestamps == a.timestamps).all()
    np.testing.assert_array_equal(b.mask[:, order], a.mask)
    np.testing.assert_allclose(b.values[:, order][a.mask], a.values[a.mask])
    assert not b.mask[4, b.sensor_ids.index("b")]


def test_long_column_names_are_recognised_in_any_order_and_case(tmp_path: Path) -> None:
    long = long_rows(readings(sensors=("400001", "400017")))
    long.columns = ["Timestamp", "Station_ID", "speed"]
    long.to_csv(tmp_path / "l.csv", index=False)
    panel = load_dataset(f"csv:{tmp_path / 'l.csv'}")
    assert panel.sensor_ids == ("400001", "400017") and panel.n_time == 30


def test_two_readings_of_one_sensor_at_one_time_are_refused_naming_both_lines(
    tmp_path: Path,
) -> None:
    long = long_rows(readings(steps=5))
    long = pd.concat([long, long.iloc[[4]]])  # row 5 (line 6) again, as line 17
    long.to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(DatasetError, match=r"sensor .b. has two readings .*\(lines 6 and 17\)"):
        load_dataset(f"csv:{tmp_path / 'l.csv'}")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2024-03-04 00:00:00,,1.0", r"line 2 has no sensor in column 'sensor'"),
        ("2024-03-04 00:00:00,a,fast", r"non-numeric value 'fast' at line 2, column 'value'"),
        ("yesterday,a,1.0", r"timestamp 'yesterday' at line 2 does not parse"),
        ("2024-03-04 00:00:00,a\u200b,1.0", r"sensor 'a\\u200b' at line 2"),
    ],
)
def test_a_bad_long_row_is_one_error_naming_its_line(tmp_path: Path, row, message) -> None:
    path = tmp_path / "l.csv"
    path.write_text(f"time,sensor,value\n{row}\n2024-03-04 00:05:00,a,2.0\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"csv:{path}")


def test_a_wide_file_with_three_columns_is_not_taken_for_a_long_one(tmp_path: Path) -> None:
    wide = readings(sensors=("north", "south"))
    wide.index.name = "time"
    wide.to_csv(tmp_path / "w.csv", date_format="%Y-%m-%d %H:%M:%S")
    assert load_dataset(f"csv:{tmp_path / 'w.csv'}").sensor_ids == ("north", "south")


def test_local_times_repeating_an_hour_are_refused_with_the_likely_cause(tmp_path: Path) -> None:
    local = pd.date_range("2024-11-03", periods=40, freq="5min", tz="America/Los_Angeles")
    wide = pd.DataFrame({"a": np.arange(40.0)}, index=local.tz_localize(None))
    wide.index.name = "time"
    wide.to_csv(tmp_path / "dst.csv", date_format="%Y-%m-%d %H:%M:%S")
    with pytest.raises(DatasetError, match=r"daylight saving ends\? give them their UTC offset"):
        load_dataset(f"csv:{tmp_path / 'dst.csv'}")
    zoned = wide.set_axis(local.strftime("%Y-%m-%dT%H:%M:%S%z"))
    zoned.index.name = "time"
    zoned.to_csv(tmp_path / "zoned.csv")
    assert load_dataset(f"csv:{tmp_path / 'zoned.csv'}").n_time == 40


def test_a_long_file_saved_with_its_row_index_is_still_long(tmp_path: Path) -> None:
    long_rows(readings(steps=6)).to_csv(tmp_path / "l.csv")  # pandas' default: index kept
    panel = load_dataset(f"csv:{tmp_path / 'l.csv'}")
    assert panel.sensor_ids == ("a", "b", "c") and panel.n_time == 6


@pytest.mark.parametrize("name", ["detector_id", "station_name", "device", "site_id"])
def test_common_names_of_the_sensor_column_are_long_format(tmp_path: Path, name: str) -> None:
    """One station's export read as two sensors, one of them the constant station id."""
    rows = long_rows(readings(sensors=("400001",)))
    rows.columns = ["timestamp", name, "volume"]
    rows.to_csv(tmp_path / "one.csv", index=False)
    panel = load_dataset(f"csv:{tmp_path / 'one.csv'}")
    assert panel.sensor_ids == ("400001",) and panel.n_time == 30


def test_several_sensors_at_one_time_under_another_name_hint_long_format(tmp_path: Path) -> None:
    """Numeric station ids under an unknown name: only 'duplicate timestamp' was said."""
    rows = long_rows(readings(sensors=("400001", "400002")))
    rows.columns = ["timestamp", "loop", "volume"]
    rows.to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(DatasetError, match=r"duplicate timestamp .*One reading per row"):
        load_dataset(f"csv:{tmp_path / 'two.csv'}")
