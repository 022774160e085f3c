"""`roadcast detect` and `--score` on hostile input: every file, directory and label file
either gives defined scores in [0, 1] for every row or one error line naming the file."""

from __future__ import annotations

import json
import signal
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.detect import DetectRunError, detect_nab, score_rows

N = 300
STAMPS = list(pd.date_range("2015-01-01", periods=N, freq="5min").strftime("%Y-%m-%d %H:%M:%S"))
VALUES = [f"{v:.3f}" for v in 50 + np.random.default_rng(0).normal(0, 1, N)]


def csv(stamps: list[str] = STAMPS, values: list[str] = VALUES, header: str = "timestamp,value"):
    return header + "\n" + "".join(f"{t},{v}\n" for t, v in zip(stamps, values, strict=True))


def with_value(row: int, cell: str) -> str:
    values = list(VALUES)
    values[row] = cell
    return csv(values=values)


def nab_dir(root: Path, text: str | bytes, name: str = "cat/f.csv") -> Path:
    path = root / "nab" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return root / "nab"


def one_line_error(root: Path, out: Path, *args: str) -> str:
    result = CliRunner().invoke(
        app, ["detect", "--nab-dir", str(root), "--out", str(out), "--detector", "extreme", *args]
    )
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "unexpected;" not in lines[0], result.output
    assert result.output.strip().endswith(lines[0]), result.output  # nothing after it
    return lines[0]


REFUSED = {
    "inf": (with_value(200, "inf"), "value inf in data row 201 is infinite"),
    "-inf": (with_value(200, "-inf"), "value -inf in data row 201 is infinite"),
    "1e308": (with_value(200, "1e308"), "value 1e+308 in data row 201 is infinite or does not"),
    "-1e308": (with_value(7, "-1e308"), "data row 8 is infinite or does not fit float32"),
    "unix times": (
        csv(stamps=[str(1420070400 + 300 * k) for k in range(N)]),
        "does not parse; NAB's timestamps are dates such as",
    ),
    "decimal comma": (with_value(51, "1,5"), "Expected 2 fields in line 53, saw 3)"),
    "ragged row": (csv() + "2015-02-01 00:00:00,1,x,y\n", "not a NAB CSV file"),
    "a field after the value": (
        csv(values=[f"{v}," for v in VALUES[:20]] + [f"{VALUES[20]},x"] + VALUES[21:]),
        "data row 21 has 3 fields, the header 'timestamp,value' has 2; remove the fields after",
    ),
    "binary": (bytes(range(256)) * 10, "not a NAB CSV file"),
    "latin-1": (csv().encode() + b"2015-02-01 00:00:00,caf\xe9\n", "not UTF-8 text"),
    "utf-16": (csv().encode("utf-16"), "UTF-16 text, not UTF-8 text"),
    "semicolons and decimal commas": (
        "timestamp;value\n"
        + "".join(f"{t};{v.replace('.', ',')}\n" for t, v in zip(STAMPS, VALUES, strict=True)),
        "the file seems separated by ';'; save it comma-separated, with decimal points",
    ),
    "a comment line first": (
        "# exported from logger X\n" + csv(),
        "line 1 is a comment ('# exported from logger X'); a NAB file starts with its header",
    ),
    "empty file": (b"", "not a NAB CSV file"),
    "header only": ("timestamp,value\n", "no data rows"),
    "word": (with_value(50, "abc"), "value 'abc' in data row 51 is not a number"),
    "true/false": (csv(values=["True", "False"] * (N // 2)), "value True in data row 1 is not"),
    "true/false/empty": (csv(values=["True", ""] * (N // 2)), "value True in data row 1 is not"),
    "swapped columns": (
        "value,timestamp\n" + "".join(f"{v},{t}\n" for t, v in zip(STAMPS, VALUES, strict=True)),
        "expected NAB's header timestamp,value, found 'value,timestamp'",
    ),
    "semicolons": (csv().replace(",", ";"), "the file seems separated by ';'"),
    "tabs": (csv().replace(",", "\t"), "separated by '\\t'; save it comma-separated"),
    "renamed": (csv(header="time,val"), "found 'time,val'"),
    "bad timestamp": (
        csv(stamps=[*STAMPS[:10], "yesterday", *STAMPS[11:]]),
        "timestamp 'yesterday' in data row 11 is not a date and time",
    ),
    "now": (  # pandas reads it as the wall clock
        csv(stamps=[*STAMPS[:10], "now", *STAMPS[11:]]),
        "timestamp 'now' in data row 11 is not a date and time",
    ),
    "two formats": (
        csv(stamps=["01/01/2015 00:00", *STAMPS[1:]]),
        "timestamp '2015-01-01 00:05:00' in data row 2 is in another format than data row 1",
    ),
    "unparsable timestamp": (
        csv(stamps=[*STAMPS[:10], "2015-13-45 00:00:00", *STAMPS[11:]]),
        "timestamp '2015-13-45 00:00:00' in data row 11 does not parse",
    ),
    "empty timestamp": (
        csv(stamps=[*STAMPS[:10], "", *STAMPS[11:]]),
        "timestamp an empty cell in data row 11 does not parse",
    ),
    "mixed time zones": (
        csv(stamps=[t + ("+02:00" if i % 2 else "+00:00") for i, t in enumerate(STAMPS)]),
        "timestamps do not parse as one series: UTC offsets differ between rows",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_bad_file_is_one_error_line_naming_it_and_the_row(tmp_path, case) -> None:
    text, message = REFUSED[case]
    root = nab_dir(tmp_path, text)
    line = one_line_error(root, tmp_path / "out")
    assert str(root / "cat" / "f.csv") in line and message in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.csv"))


def test_every_bad_file_is_named_in_one_line_and_nothing_is_written(tmp_path) -> None:
    root = nab_dir(tmp_path, csv(), "cat/good.csv")
    bad = {f"cat/bad{k}.csv": with_value(10 + k, "abc") for k in range(5)}
    for name, text in bad.items():
        nab_dir(tmp_path, text, name)
    line = one_line_error(root, tmp_path / "out")
    assert "5 of 6 files cannot be scored, nothing written" in line
    for k in range(3):
        assert f"bad{k}.csv: value 'abc' in data row {11 + k} is not a number" in line
    assert "; and 2 more" in line and "bad3.csv" not in line
    assert not list((tmp_path / "out").rglob("*.csv"))


def test_a_long_header_is_cut_in_the_error(tmp_path) -> None:
    line = one_line_error(nab_dir(tmp_path, "x" * 5000 + "\n1\n"), tmp_path / "out")
    assert "found 'xxxx" in line and "...'" in line and len(line) < 300


DEFINED = {
    "constant": csv(values=["3.5"] * N),
    "zeros": csv(values=["0"] * N),
    "one row": csv(STAMPS[:1], VALUES[:1]),
    "two rows": csv(STAMPS[:2], VALUES[:2]),
    "shorter than probation": csv(STAMPS[:6], VALUES[:6]),
    "all missing": csv(values=[""] * N),
    "leading missing": csv(values=["NaN"] * 100 + VALUES[100:]),
    "missing markers": csv(values=(["nan", "null", "NULL", "N/A", ""] * N)[:N]),
    "huge with tiny variance": csv(values=[f"{1e12 + d:.4f}" for d in np.linspace(0, 1e-3, N)]),
    "near float32 max": csv(values=[f"{3e38 * (1 - i / 1e4):.6e}" for i in range(N)]),
    "both ends of float32": csv(values=["3e38", "-3e38"] * (N // 2)),
    "decreasing timestamps": csv(stamps=STAMPS[::-1]),
    "one timestamp repeated": csv(stamps=[STAMPS[0]] * N),
    "Z suffix": csv(stamps=[t + "Z" for t in STAMPS]),
    "extra columns": "timestamp,value,label\n"
    + "".join(f"{t},{v},0\n" for t, v in zip(STAMPS, VALUES, strict=True)),
    "BOM and CRLF": "\ufeff" + csv().replace("\n", "\r\n"),
    "a trailing comma on every row": csv(values=[f"{v}," for v in VALUES]),
}


@pytest.mark.parametrize("detector", ["ensemble", "extreme", "gaussian", "interval"])
@pytest.mark.parametrize("case", DEFINED)
def test_an_odd_but_readable_file_gets_defined_scores_and_no_warning(
    tmp_path, case, detector
) -> None:
    root = nab_dir(tmp_path, DEFINED[case])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        (written,) = detect_nab(root, tmp_path / "out", detector)
    assert written == tmp_path / "out" / detector / "cat" / f"{detector}_f.csv"
    source = pd.read_csv(root / "cat" / "f.csv")
    result = pd.read_csv(written)
    assert len(result) == len(source)
    assert result["anomaly_score"].notna().all() and result["anomaly_score"].between(0, 1).all()


@pytest.mark.parametrize("case", ["all missing", "leading missing", "huge with tiny variance"])
def test_the_gan_scores_odd_files_without_a_warning(tmp_path, case) -> None:
    root = nab_dir(tmp_path, DEFINED[case])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        (written,) = detect_nab(root, tmp_path / "out", "gan")
    assert pd.read_csv(written)["anomaly_score"].between(0, 1).all()


def test_a_gzip_compressed_file_scores_as_the_plain_one(tmp_path) -> None:
    import gzip

    plain = nab_dir(tmp_path / "plain", csv())
    packed = nab_dir(tmp_path / "packed", gzip.compress(csv().encode()))
    (a,) = detect_nab(plain, tmp_path / "a", "extreme")
    (b,) = detect_nab(packed, tmp_path / "b", "extreme")
    assert a.read_bytes() == b.read_bytes()


def test_every_file_is_checked_before_any_is_scored(tmp_path) -> None:
    root = nab_dir(tmp_path, csv(), "a/good.csv")
    nab_dir(tmp_path, with_value(3, "inf"), "b/bad.csv")
    with pytest.raises(DetectRunError, match=r"bad\.csv: value inf in data row 4"):
        detect_nab(root, tmp_path / "out", "extreme")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_an_output_directory_that_cannot_be_made_is_refused_before_scoring(tmp_path, where) -> None:
    root = nab_dir(tmp_path, csv())
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    out = blocker if where == "a file" else blocker / "sub"
    line = one_line_error(root, out)
    assert f"--out {out}: cannot create" in line


def test_csv_files_outside_the_layout_are_reported_as_skipped(tmp_path) -> None:
    root = nab_dir(tmp_path, csv(), "cat/f.csv")
    nab_dir(tmp_path, csv(), "cat/deeper/g.csv")
    nab_dir(tmp_path, csv(), "top.csv")
    nab_dir(tmp_path, csv(), "cat/upper.CSV")
    nab_dir(tmp_path, "just notes", "cat/notes.txt")
    (root / "cat" / "gone.csv").symlink_to(tmp_path / "missing.csv")
    said: list[str] = []
    written = detect_nab(root, tmp_path / "out", "extreme", progress=said.append)
    assert [p.name for p in written] == ["extreme_f.csv"]
    skipped = [s for s in said if s.startswith("skipped")]
    assert len(skipped) == 4
    assert "scoring 1 files (" in said[len(skipped)] and "in 1 process;" in said[len(skipped)]
    for name in ("cat/deeper/g.csv", "top.csv", "cat/gone.csv", "cat/upper.CSV"):
        assert any(str(root / name) in s for s in skipped), said


@pytest.mark.parametrize("detector", ["extreme", "context", "interval"])
@pytest.mark.parametrize("probation", ["observed", "missing"])
def test_a_spike_on_a_huge_level_is_not_lost_to_float32(detector, probation) -> None:
    """1e12 plus noise: float32 steps 65536 apart there, so without care every reading
    looks the same and the spike scores 0; also when no probationary row was observed
    (it then scores as the same series at level 0 does)."""
    noise = np.random.default_rng(1).normal(0, 0.01, 400)
    noise[250] += 1.0
    if probation == "missing":
        noise[:100] = np.nan
    stamps = pd.date_range("2015-01-01", periods=400, freq="5min")
    spike = score_rows(1e12 + noise, stamps, detector)[250]
    assert spike >= 0.98 and spike == pytest.approx(score_rows(noise, stamps, detector)[250])


@pytest.mark.parametrize("detector", ["ensemble", "changepoint", "spectral", "interval"])
@pytest.mark.parametrize("unit", [2.0**-70, 2.0**60])
def test_a_series_scores_the_same_in_any_unit(detector, unit) -> None:
    """Readings of size 1e-21 (or 1e18) met the detectors' absolute floors: the changepoint
    and spectral members were blind there. A power-of-two change of unit is exact, so the
    scores must be identical."""
    rng = np.random.default_rng(3)
    values = 50 + np.sin(np.arange(600) / 20) * 5 + rng.normal(0, 0.5, 600)
    values[400:420] += 15
    stamps = pd.date_range("2015-01-01", periods=600, freq="5min")
    own = score_rows(values, stamps, detector)
    assert own[400:425].max() >= 0.9
    np.testing.assert_array_equal(score_rows(values * unit, stamps, detector), own)


@pytest.mark.parametrize("size", [1e-40, 1e-310])
def test_readings_far_beyond_a_tiny_probation_are_scored_not_refused(size) -> None:
    """In the probation's unit, ordinary readings after a probation of size 1e-310 are
    beyond float32: they are held at its edge (and score high), not an error."""
    values = np.abs(np.random.default_rng(0).normal(1, 0.1, 600)) * size
    values[400:] = 1.0
    stamps = pd.date_range("2015-01-01", periods=600, freq="5min")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = score_rows(values, stamps, "ensemble")
    assert np.isfinite(scores).all() and scores[400:405].max() >= 0.9


def test_timestamps_at_the_end_of_pandas_dates_get_defined_scores(tmp_path) -> None:
    """Rows a few minutes before 2262-04-11 (and going backwards): the rows' regular grid
    would run past pandas' last date; NAB scores rows, so they are scored anyway."""
    last = pd.Timestamp("2262-04-11 23:00:00")
    stamps = [str(last - pd.Timedelta(minutes=5 * k)) for k in range(N)]
    root = nab_dir(tmp_path, csv(stamps=stamps))
    (written,) = detect_nab(root, tmp_path / "out", "extreme")
    assert len(pd.read_csv(written)) == N


def test_a_failure_part_way_leaves_the_earlier_results_as_they_were(tmp_path) -> None:
    """Results are written aside and moved into place once every file is scored: an output
    path that cannot be written is found before scoring, and no file of the run is left."""
    root = nab_dir(tmp_path, csv(), "a/f.csv")
    nab_dir(tmp_path, csv(), "b/g.csv")
    out = tmp_path / "out"
    (earlier,) = [p for p in detect_nab(root, out, "extreme") if p.parent.name == "a"][:1]
    earlier.write_text("an earlier run\n")
    blocked = out / "extreme" / "b" / "extreme_g.csv"
    blocked.unlink()
    blocked.mkdir()
    with pytest.raises(DetectRunError, match=r"extreme_g\.csv: it is a folder"):
        detect_nab(root, out, "extreme")
    assert earlier.read_text() == "an earlier run\n"
    assert not list(out.rglob("*.partial"))


def test_score_reads_timestamps_as_detect_does_and_skips_stale_categories(tmp_path) -> None:
    """Compact dates (20150101) parse as dates in both, and a category that an earlier
    run left in --out but the data folder no longer has is not scored."""
    days = list(pd.date_range("2015-01-01", periods=N, freq="D").strftime("%Y%m%d"))
    root = nab_dir(tmp_path, csv(stamps=days), "cat/f.csv")
    (root / "cat_windows.json").write_text(json.dumps({"cat/f.csv": [[days[100], days[110]]]}))
    stale = tmp_path / "out" / "extreme" / "gone"
    stale.mkdir(parents=True)
    (stale / "extreme_old.csv").write_text("timestamp,value,anomaly_score\n")
    args = ["--nab-dir", str(root), "--out", str(tmp_path / "out"), "--detector", "extreme"]
    result = CliRunner().invoke(app, ["detect", *args, "--score"])
    assert result.exit_code == 0, result.output
    assert "gone" not in result.output and "NAB scores of 'extreme'" in result.output
    assert "without the ensemble's rest period" in " ".join(result.output.split())


def test_a_labelled_upper_case_csv_is_named_with_the_fix(tmp_path) -> None:
    root = nab_dir(tmp_path, csv(), "cat/f.csv")
    nab_dir(tmp_path, csv(), "cat/g.CSV")
    (root / "cat_windows.json").write_text(json.dumps({"cat/f.csv": [], "cat/g.CSV": []}))
    args = ["--nab-dir", str(root), "--out", str(tmp_path / "o"), "--detector", "extreme"]
    result = CliRunner().invoke(app, ["detect", *args])
    assert "named .CSV; rename it to g.csv" in result.output
    result = CliRunner().invoke(app, ["detect", *args, "--score"])
    assert "rename the file and its entry to .csv" in result.output


@pytest.mark.parametrize("spike", [1e20, -1e30])
def test_a_spike_near_float32_range_scores_high_with_the_gan(spike) -> None:
    """The GAN's statistic of such a window overflowed float32 to inf, which calibrated
    as 'nothing observed': score 0."""
    values = 50 + np.random.default_rng(0).normal(0, 1, 400)
    values[300] = spike
    stamps = pd.date_range("2015-01-01", periods=400, freq="5min")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert score_rows(values, stamps, "gan")[300] >= 0.99


def test_score_rows_names_out_of_range_rows_plainly() -> None:
    values = np.r_[np.zeros(5), np.inf, 1e300]
    stamps = pd.date_range("2015-01-01", periods=7, freq="5min")
    with pytest.raises(DetectRunError, match=r"rows \[5, 6\] is infinite or does not fit"):
        score_rows(values, stamps, "extreme")


# --------------------------------------------------------------------------- --score labels

STAMP_100, STAMP_110 = STAMPS[100], STAMPS[110]
LABELS: dict[str, tuple[str | bytes, str]] = {
    "malformed JSON": ('{"cat/f.csv": [[', "cannot read NAB windows"),
    "latin-1 bytes": (b'{"cat/f.csv": [], "caf\xe9": []}', "cannot read NAB windows"),
    "a list": ('[["a", "b"]]', 'expected an object {"category/file.csv"'),
    "windows null": ('{"cat/f.csv": null}', "'cat/f.csv' must be a list of [start, end]"),
    "windows a dict": ('{"cat/f.csv": {"a": 1}}', "must be a list of [start, end]"),
    "a string": ('{"cat/f.csv": "2015"}', "must be a list of [start, end]"),
    "three stamps": (
        json.dumps({"cat/f.csv": [[STAMP_100, STAMP_110, STAMP_110]]}),
        "must be a list of [start, end]",
    ),
    "numbers": ('{"cat/f.csv": [[5, 10]]}', "timestamp strings"),
    "null stamp": (json.dumps({"cat/f.csv": [[None, STAMP_110]]}), "timestamp strings"),
    "unparseable stamp": (
        json.dumps({"cat/f.csv": [["yesterday", STAMP_110]]}),
        "'cat/f.csv' window ['yesterday',",
    ),
    "year 99999": (json.dumps({"cat/f.csv": [["9999-01-01", "99999-01-01"]]}), "out of range"),
    "NaT": (json.dumps({"cat/f.csv": [["NaT", STAMP_110]]}), "is not a time"),
    "no entry for the file": (json.dumps({"cat/other.csv": []}), "has no windows for cat/f.csv"),
    "an empty object": ("{}", "has no windows for cat/f.csv"),
    "windows of a missing file": (
        json.dumps({"cat/f.csv": [], "cat/ghost.csv": [[STAMP_100, STAMP_110]]}),
        "has windows for cat/ghost.csv, not a data file of",
    ),
    "a key twice": (
        f'{{"cat/f.csv": [["{STAMP_100}", "{STAMP_110}"]], "cat/f.csv": []}}',
        "'cat/f.csv' is listed twice",
    ),
    "nested too deeply": ('{"cat/f.csv": ' + "[" * 5000, "nested too deeply"),
    "now": (json.dumps({"cat/f.csv": [["now", STAMP_110]]}), "['now', "),
    "windows of a file outside the layout": (
        json.dumps({"cat/f.csv": [], "cat/sub/g.csv": []}),
        "has windows for cat/sub/g.csv, not a data file of",
    ),
}


@pytest.mark.parametrize("case", LABELS)
def test_bad_label_windows_are_one_error_line_naming_the_file(tmp_path, case) -> None:
    labels, message = LABELS[case]
    root = nab_dir(tmp_path, csv())
    path = root / "cat_windows.json"
    path.write_bytes(labels if isinstance(labels, bytes) else labels.encode())
    line = one_line_error(root, tmp_path / "out", "--score")
    assert message in line
    if case not in ("no entry for the file", "an empty object"):
        assert str(path) in line
    assert not (tmp_path / "out").exists()  # checked before any file is scored


def day_first(start: str, freq: str) -> list[str]:
    return list(pd.date_range(start, periods=N, freq=freq).strftime("%d/%m/%Y %H:%M"))


@pytest.mark.parametrize(
    ("start", "freq", "window"),
    [("2015-09-01", "5min", "2015-09-01 20:00:00"), ("2015-09-01", "1h", "2015-09-12 06:00:00")],
    ids=["days-up-to-12", "past-day-12"],
)
def test_day_first_dates_are_read_the_way_the_rows_fit(tmp_path, start, freq, window) -> None:
    """01/09/2015 was read as 9 January (pandas takes month-first from the first row);
    past the 12th the error blamed 'another format'."""
    root = nab_dir(tmp_path, csv(stamps=day_first(start, freq)))
    end = str(pd.Timestamp(window) + 10 * pd.Timedelta(freq))
    (root / "cat_windows.json").write_text(json.dumps({"cat/f.csv": [[window, end]]}))
    args = ["--nab-dir", str(root), "--out", str(tmp_path / "out"), "--detector", "extreme"]
    result = CliRunner().invoke(app, ["detect", *args, "--score"])
    assert result.exit_code == 0, result.output
    assert "NAB scores of 'extreme'" in result.output


def test_dates_that_fit_day_first_and_month_first_equally_are_refused(tmp_path) -> None:
    root = nab_dir(
        tmp_path, csv(stamps=["01/02/2015 00:00", "02/01/2015 00:00"], values=["1", "2"])
    )
    line = one_line_error(root, tmp_path / "out")
    assert "read as day/month and as month/day equally well; write ISO-8601" in line


def test_two_digit_years_first_are_read_as_the_rows_fit_or_refused(tmp_path) -> None:
    """15-09-01 was read as 15 September 2001 (pandas' guess), the next days years apart."""
    from flows.detect import read_nab_rows

    stamps = list(pd.date_range("2015-09-01", periods=N, freq="1h").strftime("%y-%m-%d %H:%M"))
    rows, times = read_nab_rows(nab_dir(tmp_path / "a", csv(stamps=stamps)) / "cat" / "f.csv")
    assert rows["timestamp"].iloc[0] == stamps[0]
    assert times[0] == pd.Timestamp("2015-09-01") and times[-1] - times[0] < pd.Timedelta("30D")
    slashed = [s.replace("-", "/") for s in stamps]  # 15/09/01: read as the data reader does
    _, times = read_nab_rows(nab_dir(tmp_path / "s", csv(stamps=slashed)) / "cat" / "f.csv")
    assert times[0] == pd.Timestamp("2015-09-01") and times[-1] - times[0] < pd.Timedelta("30D")
    root = nab_dir(tmp_path / "b", csv(stamps=stamps[:24], values=VALUES[:24]))
    line = one_line_error(root, tmp_path / "out")
    assert "fit two readings equally well (2001-09-15 or 2015-09-01)" in line


def test_a_file_without_readings_is_warned_about(tmp_path) -> None:
    root = nab_dir(tmp_path, csv(values=[""] * N))
    said: list[str] = []
    detect_nab(root, tmp_path / "out", "extreme", progress=said.append)
    assert f"warning: {root / 'cat' / 'f.csv'}: no readings (every value is missing)" in said[0]


def test_windows_without_the_data_time_zone_say_so(tmp_path) -> None:
    root = nab_dir(tmp_path, csv(stamps=[t + "+05:30" for t in STAMPS]))
    (root / "cat_windows.json").write_text(json.dumps({"cat/f.csv": [[STAMP_100, STAMP_110]]}))
    line = one_line_error(root, tmp_path / "out", "--score")
    assert "does not start and end on data rows (the data's timestamps have a time zone" in line


def test_a_file_left_out_of_the_labels_is_not_silently_unscored(tmp_path) -> None:
    root = nab_dir(tmp_path, csv(), "cat/f.csv")
    nab_dir(tmp_path, csv(), "cat/g.csv")
    (root / "cat_windows.json").write_text(json.dumps({"cat/f.csv": [[STAMP_100, STAMP_110]]}))
    line = one_line_error(root, tmp_path / "out", "--score")
    assert "has no windows for cat/g.csv" in line
    (root / "cat_windows.json").write_text(
        json.dumps({"cat/f.csv": [[STAMP_100, STAMP_110]], "cat/g.csv": []})
    )
    args = ["--nab-dir", str(root), "--out", str(tmp_path / "o"), "--detector", "extreme"]
    result = CliRunner().invoke(app, ["detect", *args, "--score"])
    assert result.exit_code == 0, result.output
    assert "NAB scores of 'extreme'" in result.output


def test_hidden_files_are_skipped_not_read(tmp_path) -> None:
    """macOS leaves ``._f.csv`` beside ``f.csv``; it stopped the whole run."""
    root = nab_dir(tmp_path, csv(), "cat/f.csv")
    nab_dir(tmp_path, b"\x00\x05\x16\x07Mac OS X", "cat/._f.csv")
    (root / "cat_windows.json").write_text(json.dumps({"cat/f.csv": []}))
    result = CliRunner().invoke(
        app, ["detect", "--nab-dir", str(root), "--out", str(tmp_path / "out"),
              "--detector", "extreme", "--score"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"skipped {root / 'cat' / '._f.csv'}: a hidden file" in result.output
    assert not (tmp_path / "out" / "extreme" / "cat" / "extreme_._f.csv").exists()


def test_rows_out_of_time_order_are_named_and_not_scored_by_nab(tmp_path) -> None:
    stamps = [*STAMPS[:100], *STAMPS[150:200], *STAMPS[100:150], *STAMPS[200:]]
    root = nab_dir(tmp_path, csv(stamps=stamps))
    (root / "cat_windows.json").write_text(json.dumps({"cat/f.csv": [[STAMPS[20], STAMPS[30]]]}))
    said: list[str] = []
    detect_nab(root, tmp_path / "out", "extreme", progress=said.append)
    assert f"warning: {root / 'cat' / 'f.csv'}: data row 151 is earlier than" in said[0]
    line = one_line_error(root, tmp_path / "out", "--score")
    assert "cat/f.csv: data row 151 (2015-01-01 08:20:00) is earlier than the row before" in line


@pytest.mark.parametrize("value", ["", " "])
@pytest.mark.parametrize("option", ["--nab-dir", "--out"])
def test_an_empty_directory_option_is_a_usage_error(tmp_path, option, value) -> None:
    """``--out ''`` wrote into the working directory, ``--out ' '`` into a folder ' '."""
    root = nab_dir(tmp_path, csv())
    args = {"--nab-dir": str(root), "--out": str(tmp_path / "out"), option: value}
    result = CliRunner().invoke(app, ["detect", *[x for kv in args.items() for x in kv]])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: Invalid value for {option}: is empty; name a directory")


def test_the_score_table_is_whole_when_piped(capsys) -> None:
    from flows.reporting.text import print_table

    profiles = [f"{p} ({t})" for t in ("NAB threshold", "fixed 0.9") for p in ("standard", "low")]
    rows = [["realAWSCloudwatch", 17, 14, -123.45, 12.5, 7.0, 8.0]]
    print_table("NAB scores", ["category", "files", "windows", *profiles], rows)
    out = capsys.readouterr().out
    assert "…" not in out
    for text in ("realAWSCloudwatch", "standard (NAB threshold)", "low (fixed 0.9)", "-123.5"):
        assert text in out, out


def test_files_scored_in_parallel_processes_match_one_by_one(tmp_path) -> None:
    from benchmarks.detect_workers import same_results, simulated_corpus

    simulated_corpus(tmp_path / "nab", files=3, rows=400)
    lines: list[str] = []
    serial = detect_nab(tmp_path / "nab", tmp_path / "one", workers=1)
    parallel = detect_nab(tmp_path / "nab", tmp_path / "two", workers=2, progress=lines.append)
    assert (
        [p.name for p in serial]
        == [p.name for p in parallel]
        == [f"ensemble_s{k}.csv" for k in range(3)]
    )
    assert same_results(tmp_path / "one", tmp_path / "two")
    assert lines[0].startswith("scoring 3 files (1,200 rows) with 'ensemble' in 2 processes")
    assert [line.split(":")[0] for line in lines[1:]] == [f"sim/s{k}.csv" for k in range(3)]


def test_workers_must_be_at_least_one(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["detect", "--nab-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--workers", "0"]
    )
    assert result.exit_code == 2 and "--workers" in result.output, result.output


@pytest.mark.parametrize(
    ("workers", "sig", "status"),
    [("1", signal.SIGINT, 130), ("2", signal.SIGINT, 130), ("2", signal.SIGTERM, 143)],
    ids=["ctrl-c-1", "ctrl-c-2", "sigterm-2"],
)
def test_ctrl_c_or_sigterm_stops_scoring_says_so_and_leaves_nothing(
    tmp_path, workers, sig, status
) -> None:
    """Interrupted while a long file was scored (one by one, or in processes that must not
    outlive it): one line, status 128 + the signal, no result, partial file or folder, no
    process left. SIGTERM (a service manager's stop) killed the command, leaving its
    scoring processes running and their partial files behind."""
    import subprocess
    import sys

    from benchmarks.detect_workers import simulated_corpus
    from tests.processes import alive, children_of, default_sigint
    from tests.waiting import WAIT_S, wait_until

    simulated_corpus(tmp_path / "nab", files=1, rows=300)  # sim/s0.csv: scored first
    for name in ("t1", "t2"):  # long enough to be scored still when the signal comes
        simulated_corpus(tmp_path / name, files=1, rows=40_000)
        (tmp_path / name / "sim" / "s0.csv").rename(tmp_path / "nab" / "sim" / f"{name}.csv")
    output = tmp_path / "out.txt"
    args = [
        sys.executable, "-m", "flows.cli", "detect", "--nab-dir", str(tmp_path / "nab"),
        "--out", str(tmp_path / "out"), "--workers", workers,
    ]  # fmt: skip
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            args, stdout=sink, stderr=subprocess.STDOUT, preexec_fn=default_sigint
        )
    try:
        wait_until(lambda: "sim/s0.csv: 300 rows" in output.read_text(), what="the first file")
        children = children_of(proc.pid)
        proc.send_signal(sig)
        assert proc.wait(WAIT_S) == status, output.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert output.read_text().splitlines()[-1].startswith("error: interrupted before every file")
    assert not (tmp_path / "out").exists()
    wait_until(
        lambda: not any(alive(pid) for pid in children),
        what="the scoring processes to end",
    )
