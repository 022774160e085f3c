"""Hostile input to ``roadcast train`` and ``roadcast data``: each case is refused with one
line naming the file, line, column or option, before anything is written; valid files that
look odd (day-first dates) still read right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.train_models import train_models
from models.forecasters.comparison import TrainPlan
from pipeline.data.datasets import DatasetError, load_dataset
from pipeline.data.fetch import FetchError, fetch_dataset
from pipeline.data.graph_csv import read_adjacency_csv
from tests.test_train_bad_input import PLAN, panel, readings

IDS = ("a", "b", "c")


def wide_csv(path: Path, rows: int = 60, *, stamps: list[str] | None = None) -> Path:
    """A timestamped CSV of sensors a, b, c every 5 minutes."""
    values = readings(rows, 3)
    if stamps is None:
        stamps = list(pd.date_range("2024-01-01", periods=rows, freq="5min").astype(str))
    lines = ["timestamp,a,b,c"] + [
        f"{t},{v[0]:.3f},{v[1]:.3f},{v[2]:.3f}" for t, v in zip(stamps, values, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def edit(path: Path, line: int, old: str, new: str) -> Path:
    """Replace ``old`` by ``new`` on ``line`` (1 is the header) of ``path``."""
    lines = path.read_text().splitlines()
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_text("\n".join(lines) + "\n")
    return path


def cell(path: Path, line: int, text: str) -> Path:
    """Put ``text`` in sensor column ``b`` of ``line``."""
    lines = path.read_text().splitlines()
    fields = lines[line - 1].split(",")
    fields[2] = text
    lines[line - 1] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    return path


def swap_first_columns(path: Path) -> Path:
    lines = [line.split(",") for line in path.read_text().splitlines()]
    path.write_text("\n".join(",".join([f[1], f[0], *f[2:]]) for f in lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (
            lambda p: edit(p, 12, "2024-01-01 00:50:00", "9999-12-31 23:59:59"),
            r"timestamp '9999-12-31 23:59:59' at line 12 is outside the years",
        ),
        (
            lambda p: edit(p, 12, "2024-01-01 00:50:00", "2255-01-01 00:50:00"),
            r"timestamp '2255-01-01 00:50:00' at line 12 is outside the years 1700-2249",
        ),
        (lambda p: cell(p, 30, "1e400"), r"value '1e400' at line 30, column 'b' is too large"),
        (lambda p: cell(p, 30, "-1e400"), r"value '-1e400' at line 30, column 'b'"),
        (lambda p: cell(p, 30, "1e39"), r"value 1e\+39 at line 30, column 'b' is beyond"),
        (
            lambda p: edit(p, 61, "2024-01-01 04:55:00", "2124-01-01 04:55:00"),
            r"line 61 is 36524d5min after the previous row; .* almost all missing",
        ),
        (
            lambda p: p.write_text(p.read_text().replace(",", ";")),
            r"the header has one field holding ';': the file seems separated by ';'",
        ),
        (
            lambda p: p.write_text(p.read_text().replace(",", "\t")),
            r"separated by '\\t'",
        ),
        (
            lambda p: edit(p, 1, "timestamp,a,b", "timestamp,a,timestamp"),
            r"'timestamp' names both the time or index column and a sensor column",
        ),
        (
            lambda p: p.write_text("".join(p.read_text().splitlines(True)[1:])),
            r"line 1 \(2024-01-01 00:00:00,.*\) holds readings, not column names",
        ),
        (
            lambda p: swap_first_columns(p),
            r"non-numeric value '2024-01-01 00:00:00' at line 2, column 'timestamp'; a time "
            r"column\? pass --index-col timestamp",
        ),
    ],
    ids=["year-9999", "year-2255", "1e400", "-1e400", "1e39", "century-gap", "semicolons",
         "tabs", "ts-twice", "no-header", "ts-not-first"],
)  # fmt: skip
def test_hostile_wide_csv_is_refused_naming_the_place(tmp_path: Path, spoil, message: str):
    path = wide_csv(tmp_path / "data.csv")
    spoil(path)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(f"csv:{path}")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_numeric_headers_still_name_sensors(tmp_path: Path):
    """Sensor ids may be numbers (``los_speed.csv``): only a timestamp in line 1 shows
    that the header is missing."""
    path = tmp_path / "ids.csv"
    path.write_text("773869,767541,12.5\n1.5,2.5,3.5\n2.5,3.5,4.5\n")
    assert load_dataset(f"csv:{path}").sensor_ids == ("773869", "767541", "12.5")


def test_infinite_cells_stay_missing(tmp_path: Path):
    path = cell(cell(wide_csv(tmp_path / "data.csv"), 30, "inf"), 31, "-Infinity")
    values = load_dataset(f"csv:{path}").values
    assert np.isnan(values[28:30, 1]).all() and np.isfinite(values[:28]).all()


@pytest.mark.parametrize("first", ["2024-01-01", "2024-01-12"])
@pytest.mark.parametrize("form", ["%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M"])
def test_day_first_and_month_first_dates_read_in_order(tmp_path: Path, first: str, form: str):
    """Hourly rows over 9 days: whether day or month comes first, the grid is 60 hours
    long (the other reading scatters them over months, or mixes both readings)."""
    truth = pd.date_range(first, periods=60, freq="1h", tz="UTC")
    path = wide_csv(tmp_path / "data.csv", stamps=list(truth.strftime(form)))
    got = load_dataset(f"csv:{path}").timestamps
    assert len(got) == 60 and (got == truth).all()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (",a,b,c\nc,0,1,0\nb,1,0,1\na,0,1,0\n", r"line 2 is labelled 'c' but column 2 .* is 'a'"),
        ("a,a,c\n0,1,0\n1,0,1\n0,1,0\n", r"sensor\(s\) \['a'\] appear twice in the matrix header"),
        ("0,inf,0\n1,0,1\n0,1,0\n", r"adjacency entry 'inf' at line 1, column '2' is not a finite"),
        ("0,1e400,0\n1,0,1\n0,1,0\n", r"value '1e400' at line 1, column '2' is too large"),
        ("0,1,0\n1,nan,1\n0,1,0\n", r"adjacency entry 'nan' at line 2, column '2' is missing"),
        (",a,b,c\na,0,1,0\nb,1,0,-2\nc,0,1,0\n", r"entry '-2' at line 3, column 'c' is not a"),
        ("src,dst,weight\na,b,1\nb,c,inf\n", r"weight 'inf' at line 3, column 'weight' is not a"),
        ("src,dst,distance_km\na,b,-1\n", r"distance_km '-1' at line 2, column 'distance_km'"),
        ("src,dst\na,b\nb,c\na,b\n", r"duplicate link 'a' -> 'b' at lines 2 and 4"),
        ("0,0,0\n0,0,0\n0,0,0\n", r"no link between two different sensors"),
        ("1,0,0\n0,1,0\n0,0,1\n", r"no link between two different sensors"),
        ("src,dst\na,a\n", r"no link between two different sensors"),
        ("src,dst\n", r"the edge list lists no links: line 1 is its header \(src,dst\)"),
        ("0,1\n1,0\n0,1\n", r"expected a 3 x 3 matrix .* got 3 rows x 2 columns"),
        ("0,1,0\n1,0,1\n", r"expected a 3 x 3 matrix .* got 2 rows x 3 columns"),
        ("0;1;0\n1;0;1\n0;1;0\n", r"line 1 has one field holding ';'"),
    ],
    ids=["row-labels-reordered", "header-twice", "inf", "1e400", "nan", "negative",
         "edge-inf", "edge-negative-km", "edge-twice", "zeros", "self-loops", "edge-self-loop",
         "edge-header-only", "3x2", "2x3", "semicolons"],
)  # fmt: skip
def test_hostile_adjacency_is_refused_naming_the_place(tmp_path: Path, text: str, message: str):
    path = tmp_path / "adj.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message) as info:
        read_adjacency_csv(path, IDS)
    assert str(path) in str(info.value)


def test_matrix_row_labels_in_header_order_or_numbered_still_read(tmp_path: Path):
    for text in (",c,a,b\nc,0,0,2\na,0,0,0\nb,0,0,0\n", ",c,a,b\n0,0,0,2\n1,0,0,0\n2,0,0,0\n"):
        path = tmp_path / "adj.csv"
        path.write_text(text)
        graph = read_adjacency_csv(path, IDS)
        assert {(int(s), int(t)) for s, t in graph.edge_index.T} == {(2, 1)}  # c -> b


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 0}, r"--epochs must be >= 1, got 0"),
        ({"epochs": -3}, r"--epochs must be >= 1"),
        ({"test": 0.0}, r"--test must be a share between 0 and 1, got 0.0"),
        ({"test": 1.5}, r"--test must be a share"),
        ({"valid": float("nan")}, r"--valid must be a share between 0 and 1, got nan"),
        ({"valid": 1.0}, r"--valid must be a share"),
    ],
)
def test_train_plan_refuses_settings_out_of_range(change: dict, message: str):
    with pytest.raises(ValueError, match=message):
        TrainPlan(**{"models": ("persistence",), **change})


@pytest.mark.parametrize("nested", [False, True])
def test_an_output_folder_that_is_a_file_is_refused_before_training(tmp_path: Path, nested: bool):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder\n")
    out = blocker / "run" if nested else blocker
    with pytest.raises(NotADirectoryError, match=f"--out {out} is not a folder"):
        train_models(panel(readings()), PLAN, out, log=lambda _: None)
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--threads", "-2"], "--threads must be 1-256, got -2"),
        (["--threads", "0"], "--threads must be 1-256, got 0"),
        (["--threads", "10000"], "--threads must be 1-256, got 10000"),
        (["--label", "a\x1b[31mb"], "--label holds control characters"),
        (["--label", "x" * 201], "--label is 201 characters long, more than 200"),
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--test", "nan"], "--test must be a share between 0 and 1, got nan"),
        (["--out", "{file}"], "is not a folder"),
        (["--out", "{file}/sub"], "is a file"),
        (["--out", " "], "--out is empty; name the output folder"),
    ],
)
def test_cli_train_refuses_bad_options_before_starting(tmp_path: Path, options, message: str):
    """Refused in the command itself (exit 2, one line) before Prefect or any fit starts."""
    data = wide_csv(tmp_path / "data.csv")
    taken = tmp_path / "taken"
    taken.write_text("x\n")
    options = [o.replace("{file}", str(taken)) for o in options]
    args = ["train", f"csv:{data}", "--models", "persistence", "--no-progress"]
    if "--out" not in options:
        args += ["--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, [*args, *options])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "spec", ["simulated:hours=1e9", "simulated:sensors=100000000", "simulated:sensors=500000"]
)
def test_simulated_spec_too_large_is_refused(spec: str):
    with pytest.raises(DatasetError, match=r"simulated: .* readings; at most 100,000,000"):
        load_dataset(spec)


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("nan"), float("inf"), 1e10])
def test_fetch_timeout_must_be_positive(tmp_path: Path, timeout: float):
    with pytest.raises(FetchError, match="--timeout must be a number of seconds > 0"):
        fetch_dataset("los-loop", data_dir=tmp_path, mirror="file:///nowhere", timeout=timeout)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (slice(210, None), r"the validation part \(.*, 24 steps\) has no reading.*--valid"),
        (slice(240, None), r"the test part \(.*, 60 steps\) has no reading.*change --test"),
    ],
)
def test_a_part_without_any_reading_is_refused_before_fitting(tmp_path: Path, rows, message):
    values = readings()
    values[rows] = np.nan
    with pytest.raises(ValueError, match=message):
        train_models(panel(values), PLAN, tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_flow_refuses_a_validation_part_shorter_than_the_horizon():
    """Else every model lacks a validation score and the run fails choosing its champion
    after registering the versions."""
    from flows.train_flow import split_task

    short = TrainPlan(models=("persistence",), window=6, horizon=25, seeds=1, progress=False)
    with pytest.raises(ValueError, match=r"validation part has 24 steps, fewer than --horizon 25"):
        split_task.fn(panel(readings()), short)
    assert split_task.fn(panel(readings()), PLAN).valid.n_time == 24


def test_summary_table_shows_a_horizon_without_score_as_n_a():
    from flows.reporting.tables import compact_rows

    score = {"mae": None, "rmse": None}
    document = {
        "models": {"ar": {"pooled": {"3": score}, "std": {"pooled": {"3": score}}, "seeds": 1}}
    }
    assert compact_rows(document)[1] == [["ar", "n/a"]]


@pytest.mark.parametrize(
    ("window", "horizon"), [(10**9, 3), (6, 10**6), (31, 30), (30, 30)], ids=str
)
def test_window_and_horizon_must_fit_the_test_part(tmp_path: Path, window: int, horizon: int):
    """The test part (60 steps here) holds the inputs and targets of each scored window."""
    plan = TrainPlan(models=("persistence",), window=window, horizon=horizon, seeds=1)
    if window + horizon <= 60:
        document = train_models(panel(readings()), plan, tmp_path / "out", log=lambda _: None)
        assert "persistence" in document["models"]
        return
    with pytest.raises(ValueError, match=rf"test part has 60 steps, fewer than --window {window}"):
        train_models(panel(readings()), plan, tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_a_validation_share_that_leaves_no_training_window_is_refused(tmp_path: Path):
    """--valid 0.99 leaves a training part shorter than one window: refused, not fitted."""
    plan = TrainPlan(models=("persistence", "ar"), window=12, horizon=3, seeds=1, valid=0.99)
    with pytest.raises(ValueError, match=r"training part has \d+ steps, .*--valid \(now 0.99\)"):
        train_models(panel(readings()), plan, tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_data_info_takes_the_index_option_its_errors_suggest(tmp_path: Path):
    path = swap_first_columns(wide_csv(tmp_path / "data.csv"))
    runner = CliRunner()
    refused = runner.invoke(app, ["data", "info", f"csv:{path}"])
    assert refused.exit_code == 1 and "pass --index-col timestamp" in refused.output
    shown = runner.invoke(app, ["data", "info", f"csv:{path}", "--index-col", "timestamp"])
    assert shown.exit_code == 0, shown.output
    assert "5 min" in shown.output and "Traceback" not in shown.output


def test_an_output_folder_without_write_permission_is_refused(tmp_path: Path, monkeypatch):
    """Root may write anywhere, so the permission answer is faked here."""
    import flows.train_models

    monkeypatch.setattr(flows.train_models.os, "access", lambda *_: False)
    with pytest.raises(PermissionError, match=rf"--out {tmp_path}/run: no permission to write"):
        train_models(panel(readings()), PLAN, tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_folder_on_a_file_system_that_refuses_folders_is_refused_first() -> None:
    """/proc lets root "write" by its permissions but makes no folder: the run trained
    every model, then failed with a bare "No such file or directory" naming no option."""
    from flows.demo.run import check_options

    said: list[str] = []
    with pytest.raises(PermissionError, match=r"--out /proc/roadcast-out: cannot write in /proc"):
        train_models(panel(readings()), PLAN, "/proc/roadcast-out", log=said.append)
    assert said == []  # refused before the data was even described
    with pytest.raises(ValueError, match=r"--out /proc/roadcast-out: cannot write in /proc"):
        check_options(Path("/proc/roadcast-out"), max_ticks=1, speedup=0.0, epochs=1)


def test_a_matrix_diagonal_is_left_out_with_a_note(tmp_path: Path):
    """Self-loops in a matrix were dropped without a word (64 entries read as 52 links)."""
    path = tmp_path / "adj.csv"
    path.write_text("1,1,0\n1,1,1\n0,1,0\n")
    graph = read_adjacency_csv(path, IDS)
    assert graph.edge_index.shape[1] == 4
    assert [n for n in graph.notes if "diagonal" in n] == [
        "note: adj.csv: 2 non-zero entries on the diagonal (a sensor linked to itself) left "
        "out: each sensor's own readings are always an input"
    ]
    for usual in ("0,1,0\n1,0,1\n0,1,0\n", "1,1,0\n1,1,1\n0,1,1\n"):  # none, or A + I
        path.write_text(usual)
        assert not [n for n in read_adjacency_csv(path, IDS).notes if "diagonal" in n]


def test_errors_in_small_units_keep_their_digits_in_the_tables():
    """Occupancy shares (0-1) printed as 0.006 / 0.008: one significant digit."""
    from flows.reporting.tables import compact_rows, comparison_table, decimals

    def entry(mae: float, rmse: float) -> dict:
        score = {"mae": mae, "rmse": rmse, "mape": None}
        return {"pooled": {"3": score}, "std": {"pooled": {"3": {"mae": 1e-5, "rmse": 2e-5}}},
                "seeds": 2}  # fmt: skip

    document = {"models": {"persistence": entry(0.00612, 0.00834), "ar": entry(0.00701, 0.0092)}}
    assert compact_rows(document)[1][0] == [
        "persistence",
        "0.00612 / 0.00834 (±0.00001 / ±0.00002)",
    ]
    rows = comparison_table(document, what="test part").rows
    assert rows[1][1:3] == ["0.00701 ± 0.00001", "0.00920 ± 0.00002"]
    assert decimals([5.078, 6.7]) == 3 and decimals([106322.0]) == 3 and decimals([]) == 3


def test_readings_whose_changes_float32_rounds_away_are_noted(tmp_path: Path):
    """A meter at 1.2e8 counting up by about 1 lost its changes to float32 (2000 distinct
    readings became 250), and the only note called a sensor at 1e6 +- 0.02 frozen."""
    rng = np.random.default_rng(0)
    stamps = pd.date_range("2024-01-01", periods=400, freq="15min", tz="UTC")
    table = pd.DataFrame(
        {
            "meter": 123456789 + np.cumsum(rng.uniform(0, 2, 400)),
            "speed": 60 + rng.normal(0, 1, 400),
            "watts": 1000 + rng.normal(0, 0.5, 400),
        },
        index=pd.Index(stamps, name="time"),
    )
    table.to_csv(tmp_path / "meters.csv", float_format="%.4f")
    notes = [n for n in load_dataset(f"csv:{tmp_path / 'meters.csv'}").notes if "32-bit" in n]
    assert len(notes) == 1 and notes[0].startswith("note: meters.csv: 1 sensor(s) change by")
    assert "('meter': steps of about" in notes[0] and "kept to 8)" in notes[0]
    table[["speed", "watts"]].to_csv(tmp_path / "plain.csv", float_format="%.4f")
    assert not [n for n in load_dataset(f"csv:{tmp_path / 'plain.csv'}").notes if "32-bit" in n]
