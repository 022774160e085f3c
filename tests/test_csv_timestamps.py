"""CSV time columns: compact dates of every width, dotted day-first dates, blank time
cells and a date split from its time of day."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.datasets import DatasetError, load_dataset


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def stamped(tmp_path: Path, first: str, stamps: list[str]) -> Path:
    rows = [f"{first},s1,s2"] + [f"{t},{50 + k % 7},{60 + k % 5}" for k, t in enumerate(stamps)]
    return write(tmp_path / "d.csv", "\n".join(rows) + "\n")


HOURS = pd.date_range("2024-03-01", periods=60, freq="1h", tz="UTC")
DAYS = pd.date_range("2024-03-20", periods=25, freq="1D", tz="UTC")  # crosses a month end


@pytest.mark.parametrize("first", ["timestamp", "hour", "t"])
def test_hourly_compact_dates_of_ten_digits_are_hours_not_unix_seconds(tmp_path, first):
    path = stamped(tmp_path, first, [t.strftime("%Y%m%d%H") for t in HOURS])
    panel = load_dataset(f"csv:{path}")
    assert panel.sensor_ids == ("s1", "s2") and panel.freq == pd.Timedelta("1h")
    assert panel.n_time == 60 and panel.mask.all()
    assert panel.timestamps[0] == HOURS[0] and panel.timestamps[-1] == HOURS[-1]


def test_ten_digit_unix_seconds_in_the_past_stay_unix_seconds(tmp_path):
    """1712010100 is also 1712-01-01 00h, but as Unix seconds it is 2024-04-01: the past."""
    stamps = [str(1712010100 + 3600 * k) for k in range(3)]
    panel = load_dataset(f"csv:{stamped(tmp_path, 'timestamp', stamps)}")
    assert panel.timestamps[0] == pd.Timestamp(1712010100, unit="s", tz="UTC")
    assert panel.freq == pd.Timedelta("1h")


def test_numbers_that_would_be_unix_seconds_in_the_future_are_refused(tmp_path):
    """yymmddHHMM stamps (2403010000: 1 March 2024) read as Unix seconds in 2046."""
    path = stamped(tmp_path, "timestamp", [t.strftime("%y%m%d%H%M") for t in HOURS])
    with pytest.raises(
        DatasetError, match=r"as Unix times \(s\) lie in the future.*yymmddHHMM\)\?"
    ):
        load_dataset(f"csv:{path}")


def test_two_digit_years_first_within_one_day_are_noted(tmp_path):
    """24-03-01 over one day fits 1 March 2024 as well as 24 March 2001: no word was said."""
    path = stamped(tmp_path, "timestamp", [t.strftime("%y-%m-%d %H:%M") for t in HOURS[:24]])
    (note,) = [n for n in load_dataset(f"csv:{path}").notes if "24-03-01" in n]
    assert "fits them as well" in note and "2024-03-01" in note and "2001-03-24" in note
    days = stamped(tmp_path, "timestamp", [t.strftime("%y-%m-%d %H:%M") for t in HOURS])
    assert load_dataset(f"csv:{days}").timestamps[0] == HOURS[0]  # days apart: year first


@pytest.mark.parametrize("first", ["day", "Day", "Datum", "Tag", "when"])
def test_eight_digit_dates_are_dates_whatever_the_column_is_named(tmp_path, first):
    path = stamped(tmp_path, first, [t.strftime("%Y%m%d") for t in DAYS])
    panel = load_dataset(f"csv:{path}")
    assert panel.sensor_ids == ("s1", "s2") and panel.freq == pd.Timedelta("1D")
    assert panel.n_time == 25 and panel.mask.all() and panel.timestamps[0] == DAYS[0]


def test_a_pandas_row_index_before_compact_dates_is_dropped(tmp_path):
    rows = [",day,s1"] + [f"{k},{t.strftime('%Y%m%d')},{k}" for k, t in enumerate(DAYS)]
    panel = load_dataset(f"csv:{write(tmp_path / 'pd.csv', chr(10).join(rows))}")
    assert panel.sensor_ids == ("s1",) and panel.timestamps[0] == DAYS[0]


@pytest.mark.parametrize("form", ["%Y%m%d%H%M", "%Y%m%d%H%M%S"])
def test_unsorted_compact_dates_under_another_name_are_dates(tmp_path, form):
    stamps = [t.strftime(form) for t in HOURS[:20]]
    stamps[3], stamps[4] = stamps[4], stamps[3]
    panel = load_dataset(f"csv:{stamped(tmp_path, 'when', stamps)}")
    assert panel.sensor_ids == ("s1", "s2") and panel.freq == pd.Timedelta("1h")


def test_a_counter_that_is_no_date_is_still_a_row_index(tmp_path):
    path = stamped(tmp_path, "day", [str(20240120 + k) for k in range(25)])  # 20240132...
    panel = load_dataset(f"csv:{path}")
    assert panel.sensor_ids == ("s1", "s2") and panel.freq == pd.Timedelta("5min")


@pytest.mark.parametrize("clock", ["08:00", "8:00"])
def test_dotted_dates_are_day_first_even_within_one_day(tmp_path, clock):
    hour, minute = clock.split(":")
    stamps = [f"01.03.2024 {hour}:{int(minute) + 5 * k:02d}" for k in range(12)]
    panel = load_dataset(f"csv:{stamped(tmp_path, 'timestamp', stamps)}")
    assert panel.timestamps[0] == pd.Timestamp("2024-03-01 08:00", tz="UTC")
    assert panel.freq == pd.Timedelta("5min")


def test_dotted_dates_over_days_are_day_first(tmp_path):
    stamps = [t.strftime("%d.%m.%Y %H:%M") for t in HOURS]
    panel = load_dataset(f"csv:{stamped(tmp_path, 'Zeit', stamps)}")
    assert panel.timestamps[0] == HOURS[0] and panel.timestamps[-1] == HOURS[-1]


@pytest.mark.parametrize(
    "stamps",
    [
        [str(t) for t in HOURS[:10].tz_localize(None)],  # ISO
        [str(1709280000 + 300 * k) for k in range(10)],  # Unix seconds
        [t.strftime("%Y%m%d") for t in DAYS[:10]],  # compact dates
    ],
)
@pytest.mark.parametrize("first", ["timestamp", "when"])
@pytest.mark.parametrize("blank", ["", "NaN"])
def test_a_blank_time_cell_is_named(tmp_path, stamps, first, blank):
    stamps[5] = blank  # line 7
    with pytest.raises(DatasetError, match=rf"time column '{first}' is empty at line 7\b"):
        load_dataset(f"csv:{stamped(tmp_path, first, stamps)}")


@pytest.mark.parametrize(
    ("header", "form", "clock"),
    [("date,time", "%Y-%m-%d", "%H:%M"), ("Datum,Uhrzeit", "%d.%m.%Y", "%H:%M:%S")],
)
def test_a_date_and_its_time_of_day_in_two_columns_are_one_timestamp(tmp_path, header, form, clock):
    rows = [f"{header},s1,s2"] + [
        f"{t.strftime(form)},{t.strftime(clock)},{k},{2 * k}" for k, t in enumerate(HOURS)
    ]
    path = write(tmp_path / "split.csv", "\n".join(rows) + "\n")
    for options in ({}, {"index_col": header.split(",")[1]}):
        panel = load_dataset(f"csv:{path}", **options)
        assert panel.sensor_ids == ("s1", "s2") and panel.freq == pd.Timedelta("1h")
        assert panel.timestamps[0] == HOURS[0] and panel.timestamps[-1] == HOURS[-1]
        np.testing.assert_array_equal(panel.values[:, 1], 2 * np.arange(60))


@pytest.mark.parametrize(
    ("header", "first_hour"), [("Date,Hour", 0), ("date,HE", 1), ("Datum,Stunde", 0)]
)
def test_a_date_and_its_hour_in_two_columns_are_one_timestamp(tmp_path, header, first_hour):
    """Hours 0-23, or 1-24 hour ending (read as the hour's start); was a sensor 'Hour' and
    "duplicate timestamp"."""
    rows = [f"{header},s1"] + [
        f"{t:%Y-%m-%d},{t.hour + first_hour},{k}" for k, t in enumerate(HOURS)
    ]
    path = write(tmp_path / "hours.csv", "\n".join(rows) + "\n")
    panel = load_dataset(f"csv:{path}")
    assert panel.sensor_ids == ("s1",) and panel.freq == pd.Timedelta("1h")
    assert panel.timestamps[0] == HOURS[0] and panel.timestamps[-1] == HOURS[-1]
    np.testing.assert_array_equal(panel.values[:, 0], np.arange(len(HOURS)))


def test_a_sensor_named_hour_is_still_a_sensor(tmp_path):
    rows = ["date,hour,s1"] + [f"{t:%Y-%m-%d},{k * 7},{k}" for k, t in enumerate(DAYS[:10])]
    panel = load_dataset(f"csv:{write(tmp_path / 'daily.csv', chr(10).join(rows) + chr(10))}")
    assert panel.sensor_ids == ("hour", "s1") and panel.freq == pd.Timedelta("1D")


def test_a_time_of_day_column_elsewhere_says_to_join_it_with_the_date(tmp_path):
    rows = ["date,s1,time,s2"] + [f"2024-03-01,{k},08:{k:02d},{k}" for k in range(10)]
    path = write(tmp_path / "split.csv", "\n".join(rows) + "\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(f"csv:{path}")
    message = str(info.value)
    assert "'08:00' at line 2, column 'time'" in message
    assert "time of day in its own column" in message and "--index-col" not in message


@pytest.mark.parametrize("cell", ['"1 200"', "1'200"])
def test_a_thousands_separator_is_named_as_such(tmp_path: Path, cell: str) -> None:
    """The hint was "a time column? pass --index-col s1" and a long-format one."""
    path = tmp_path / "t.csv"
    path.write_text(f"timestamp,s1,s2\n2024-03-01 08:00,{cell},5\n2024-03-01 08:05,1300,6\n")
    with pytest.raises(DatasetError) as error:
        load_dataset(f"csv:{path}")
    message = str(error.value)
    assert "a thousands separator? write numbers without it" in message, message
    assert "--index-col" not in message and "One reading per row" not in message, message


@pytest.mark.parametrize(
    ("name", "cells", "step"),
    [
        ("date", [str(45352 + k) for k in range(10)], "1D"),  # was "not Unix times"
        ("Day", [str(45352 + k) for k in range(10)], "1D"),  # was a row counter, 5 minutes
        ("Date", [f"{45352 + k / 24:.6f}" for k in range(10)], "1h"),
    ],
)
def test_spreadsheet_serial_days_are_dates(tmp_path, name, cells, step):
    rows = [f"{name},s1"] + [f"{c},{k}" for k, c in enumerate(cells)]
    panel = load_dataset(f"csv:{write(tmp_path / 'serial.csv', chr(10).join(rows) + chr(10))}")
    assert panel.timestamps[0] == pd.Timestamp("2024-03-01", tz="UTC")
    assert panel.freq == pd.Timedelta(step) and panel.sensor_ids == ("s1",)


def test_a_sensor_of_large_numbers_is_not_a_date(tmp_path):
    rows = ["flow,s1"] + [f"{45352 + (7 * k) % 5},{k}" for k in range(10)]
    panel = load_dataset(f"csv:{write(tmp_path / 'flow.csv', chr(10).join(rows) + chr(10))}")
    assert panel.sensor_ids == ("flow", "s1")
