"""`roadcast detect` and `--score` on hostile input, second probe: result paths that
cannot be written, label windows that read as another day, categories NAB cannot
normalise, and the detectors the first probe did not run."""

from __future__ import annotations

import errno
import json
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import flows.detect
from flows.cli import app
from flows.detect import DetectRunError, detect_nab
from flows.nab_table import score_results
from models.anomaly.nab_score import read_windows
from tests.conftest import _shared_data_dir, skip_locally_fail_in_ci
from tests.test_detect_hostile import (
    DEFINED,
    STAMPS,
    VALUES,
    N,
    csv,
    nab_dir,
    one_line_error,
)


@pytest.fixture
def no_scoring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring fails the test: what it guards must be refused before any file is scored."""

    def refuse(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("scored a file before refusing the run")

    monkeypatch.setattr(flows.detect, "score_rows", refuse)


def test_a_result_name_too_long_to_write_is_refused_before_scoring(tmp_path, no_scoring) -> None:
    """A data file name of 250 bytes is legal; ``likelihood_`` + it is not."""
    name = "x" * 246 + ".csv"
    root = nab_dir(tmp_path, csv(), f"cat/{name}")
    with pytest.raises(DetectRunError, match=r"is too long to write .* shorten the data file"):
        detect_nab(root, tmp_path / "out", "likelihood")
    assert not (tmp_path / "out").exists()


def test_a_file_in_place_of_the_category_folder_is_refused_before_scoring(
    tmp_path, no_scoring
) -> None:
    root = nab_dir(tmp_path, csv())
    (tmp_path / "out" / "extreme").mkdir(parents=True)
    (tmp_path / "out" / "extreme" / "cat").write_text("not a folder")
    with pytest.raises(DetectRunError, match=r"extreme/cat is a file, not a folder"):
        detect_nab(root, tmp_path / "out", "extreme")


def test_a_write_failure_is_reported_even_when_clean_up_fails(tmp_path, monkeypatch) -> None:
    root = nab_dir(tmp_path, csv())

    def full(self: pd.DataFrame, path: Path, **kwargs: object) -> None:
        Path(path).write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    def stuck(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    monkeypatch.setattr(Path, "unlink", stuck)
    with pytest.raises(DetectRunError, match=r"cannot write .*extreme_f\.csv \(No space left"):
        detect_nab(root, tmp_path / "out", "extreme")


DAYS = list(pd.date_range("2015-01-13", periods=N, freq="D").strftime("%d/%m/%Y"))


def test_windows_that_read_as_another_day_are_refused(tmp_path) -> None:
    """Day-first data (13/01/2015, ...) with a window written alike: '05/03/2015' read
    month first is 3 May, also a row of the file, so the wrong window was scored."""
    root = nab_dir(tmp_path, csv(stamps=DAYS))
    labels = root / "cat_windows.json"
    labels.write_text(json.dumps({"cat/f.csv": [["05/03/2015", "10/03/2015"]]}))
    line = one_line_error(root, tmp_path / "out", "--score")
    assert str(labels) in line and "write window times as YYYY-MM-DD HH:MM:SS" in line


@pytest.mark.parametrize("stamp", ["13/03/2015", "2015-03-05", "2015-03-05 00:00:00.000000"])
def test_windows_that_read_one_way_only_are_kept(tmp_path, stamp) -> None:
    labels = tmp_path / "w.json"
    labels.write_text(json.dumps({"cat/f.csv": [[stamp, stamp]]}))
    ((start, _),) = read_windows(labels)["cat/f.csv"]
    assert start == pd.Timestamp(stamp)


def test_score_of_day_first_data_raises_no_warning(tmp_path) -> None:
    root = nab_dir(tmp_path, csv(stamps=DAYS))
    (root / "cat_windows.json").write_text(
        json.dumps({"cat/f.csv": [["2015-03-05", "2015-03-10"]]})
    )
    detect_nab(root, tmp_path / "out", "extreme")
    with warnings.catch_warnings(record=True) as said:  # pandas' Cython drops raised ones
        warnings.simplefilter("always")
        (cat, _) = score_results(root, tmp_path / "out", "extreme", None)
    assert not [str(w.message) for w in said]
    assert cat.windows == 1 and set(cat.nab_threshold) == {"standard", "reward_low_FP_rate",
                                                           "reward_low_FN_rate"}  # fmt: skip


def test_a_category_nab_cannot_normalise_reads_na_in_the_table(tmp_path) -> None:
    """One row, labelled: NAB's null detector (constant 0.5) fires there and scores
    perfectly, so the normalised score is undefined; it stopped the whole table with an
    error that named no category."""
    root = nab_dir(tmp_path, csv(STAMPS[:1], ["1.0"]), "short/f.csv")
    nab_dir(tmp_path, csv(), "cat/g.csv")
    (root / "short_windows.json").write_text(json.dumps({"short/f.csv": [[STAMPS[0]] * 2]}))
    (root / "cat_windows.json").write_text(json.dumps({"cat/g.csv": [[STAMPS[100], STAMPS[110]]]}))
    detect_nab(root, tmp_path / "out", "ensemble")
    cat, short, total = score_results(root, tmp_path / "out", "ensemble", 0.9)
    assert short.category == "short" and short.nab_threshold == {}
    assert set(short.fixed_threshold) == set(cat.nab_threshold) == set(total.nab_threshold)
    args = ["--nab-dir", str(root), "--out", str(tmp_path / "o"), "--detector", "extreme"]
    result = CliRunner().invoke(app, ["detect", *args, "--score"])
    assert result.exit_code == 0, result.output
    assert "n/a" in result.output


# Detectors that tests/test_detect_hostile.py does not run on its odd files.
ODD = ["constant", "zeros", "one row", "two rows", "shorter than probation", "all missing",
       "leading missing", "both ends of float32", "one timestamp repeated"]  # fmt: skip


@pytest.mark.parametrize(
    "detector", ["context", "changepoint", "spectral", "contextpot", "intervalpot", "likelihood"]
)
@pytest.mark.parametrize("case", ODD)
def test_every_detector_gives_odd_files_defined_scores(tmp_path, case, detector) -> None:
    root = nab_dir(tmp_path, DEFINED[case])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        (written,) = detect_nab(root, tmp_path / "out", detector)
    scores = pd.read_csv(written)["anomaly_score"]
    assert len(scores) == len(pd.read_csv(root / "cat" / "f.csv"))
    assert scores.notna().all() and scores.between(0, 1).all()


def test_nab_label_windows_are_all_read() -> None:
    """NAB's own windows (year first, with microseconds) pass the day/month check."""
    nab = _shared_data_dir() / "nab"
    paths = sorted(nab.glob("*_windows.json"))
    if not paths:
        skip_locally_fail_in_ci(f"NAB data not found in {nab}; set ROADCAST_DATA_DIR")
    for path in paths:
        windows = read_windows(path)
        assert all(start <= end for pairs in windows.values() for start, end in pairs), path


def test_iso_times_with_and_without_fractions_are_one_format(tmp_path):
    """``str(datetime)`` drops zero microseconds: ``00:00:00`` beside ``00:05:00.000001``
    was refused as "another format"."""
    from flows.detect import read_nab_rows

    path = tmp_path / "f.csv"
    path.write_text(
        "timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00.000001,2\n"
        "2024-01-01 00:10:00,3\n"
    )
    _, stamps = read_nab_rows(path)
    assert list(stamps.second) == [0, 0, 0] and list(stamps.microsecond) == [0, 1, 0]


def test_a_category_folder_named_all_keeps_a_total_row_of_its_own(tmp_path) -> None:
    root = nab_dir(tmp_path, csv(), "all/f.csv")
    (root / "all_windows.json").write_text(json.dumps({"all/f.csv": [[STAMPS[100], STAMPS[110]]]}))
    detect_nab(root, tmp_path / "out", "ensemble")
    rows = score_results(root, tmp_path / "out", "ensemble", 0.9)
    assert [r.category for r in rows] == ["all", "all categories"]


def test_a_window_inside_the_probation_does_not_score_a_silent_detector(tmp_path) -> None:
    """NAB's null detector misses only windows with a scorable row; the fixed-threshold
    column counted a window inside the probation as missed by it too, so a detector that
    never fires scored 25 there (NAB: 0)."""
    root = nab_dir(tmp_path, csv())
    windows = {"cat/f.csv": [[STAMPS[10], STAMPS[20]], [STAMPS[200], STAMPS[210]]]}
    (root / "cat_windows.json").write_text(json.dumps(windows))
    (written,) = detect_nab(root, tmp_path / "out", "ensemble")
    silent = pd.read_csv(written).assign(anomaly_score=0.0)
    silent.to_csv(written, index=False)
    for row in score_results(root, tmp_path / "out", "ensemble", 0.9):
        assert row.windows == 2
        assert set(row.fixed_threshold.values()) == set(row.nab_threshold.values()) == {0.0}


def test_a_result_that_would_overwrite_a_data_file_is_refused(tmp_path, no_scoring) -> None:
    """``--nab-dir out/extreme --out out``: the result of ``f.csv`` is ``extreme_f.csv``,
    a data file beside it, which was overwritten without a word."""
    out = nab_dir(tmp_path, csv(), "extreme/cat/f.csv")
    nab_dir(tmp_path, csv(values=["7"] * N), "extreme/cat/extreme_f.csv")
    data = out / "extreme"
    before = (data / "cat" / "extreme_f.csv").read_bytes()
    line = one_line_error(data, out)
    assert "extreme_f.csv: it is a data file of --nab-dir" in line
    assert (data / "cat" / "extreme_f.csv").read_bytes() == before


def test_windows_of_a_category_file_under_a_key_naming_no_file_of_it_are_refused(
    tmp_path,
) -> None:
    """``./cat/f.csv`` beside ``cat/f.csv`` in ``cat_windows.json`` was left out silently."""
    root = nab_dir(tmp_path, csv())
    detect_nab(root, tmp_path / "out", "extreme")
    windows = {"cat/f.csv": [], "./cat/f.csv": [[STAMPS[200], STAMPS[210]]]}
    (root / "cat_windows.json").write_text(json.dumps(windows))
    with pytest.raises(DetectRunError, match=r"has windows under '\./cat/f\.csv', which name no"):
        score_results(root, tmp_path / "out", "extreme", 0.9)


# --------------------------------------------------------------------------- third probe


def score_args(root: Path, out: Path) -> list[str]:
    return ["detect", "--nab-dir", str(root), "--out", str(out), "--detector", "extreme", "--score"]


def labelled(root: Path, windows: list[list[str]]) -> Path:
    (root / "cat_windows.json").write_text(json.dumps({"cat/f.csv": windows}))
    return root


SCORED_AS_DETECTED = {
    "fractions on some rows": csv(
        stamps=[t + (".5" if i % 7 == 3 else "") for i, t in enumerate(STAMPS)]
    ),
    "T and space mixed": csv(
        stamps=[t.replace(" ", "T") if i % 2 else t for i, t in enumerate(STAMPS)]
    ),
    "a trailing comma on every row": csv(values=[f"{v}," for v in VALUES]),
}
REFUSED_AS_DETECTED = {
    "empty file": "",
    "unix times": csv(stamps=[str(1420070400 + 300 * k) for k in range(N)]),
    "latin-1 byte": csv() + "2015-02-01 00:00:00,caf\xe9\n",
    "mixed UTC offsets": csv(
        stamps=[t + ("+02:00" if i % 2 else "+00:00") for i, t in enumerate(STAMPS)]
    ),
    "repeated header": csv() + "timestamp,value\n",
}


@pytest.mark.parametrize("case", SCORED_AS_DETECTED)
def test_score_reads_every_file_that_detect_reads(tmp_path, case) -> None:
    """``--score`` read the data files again with a weaker reader of its own, which
    refused these files with a raw pandas error."""
    root = labelled(nab_dir(tmp_path, SCORED_AS_DETECTED[case]), [[STAMPS[200], STAMPS[210]]])
    result = CliRunner().invoke(app, score_args(root, tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "NAB scores of 'extreme'" in result.output


@pytest.mark.parametrize("case", REFUSED_AS_DETECTED)
def test_score_refuses_a_bad_file_with_the_error_detect_gives(tmp_path, case) -> None:
    text = REFUSED_AS_DETECTED[case]
    root = labelled(nab_dir(tmp_path, text.encode("latin-1")), [[STAMPS[200], STAMPS[210]]])
    alone = one_line_error(root, tmp_path / "out")
    assert one_line_error(root, tmp_path / "out", "--score") == alone
    assert str(root / "cat" / "f.csv") in alone


def test_a_trailing_comma_on_every_row_reads_the_values(tmp_path) -> None:
    """pandas took the timestamps for an index: 'timestamp '0' does not parse'."""
    root = nab_dir(tmp_path, csv(values=[f"{v}," for v in VALUES]))
    (written,) = detect_nab(root, tmp_path / "out", "extreme")
    result = pd.read_csv(written, dtype={"timestamp": str})
    assert list(result["timestamp"]) == STAMPS
    np.testing.assert_array_equal(result["value"], np.array(VALUES, dtype=float))


Z = [t.replace(" ", "T") + "Z" for t in STAMPS]
BAD_WINDOWS = {
    "end off the data grid": (
        STAMPS,
        [[STAMPS[200], "2015-01-01 17:31:00"]],
        "does not start and end on data rows",
    ),
    "reversed": (STAMPS, [[STAMPS[210], STAMPS[200]]], "windows must be sorted and disjoint"),
    "overlapping": (
        STAMPS,
        [[STAMPS[100], STAMPS[150]], [STAMPS[140], STAMPS[160]]],
        "windows must be sorted and disjoint",
    ),
    "Z window on naive data": (
        STAMPS,
        [[Z[200], Z[210]]],
        "(the data's timestamps have no time zone, the window's not alike)",
    ),
    "naive window on Z data": (
        Z,
        [[STAMPS[200], STAMPS[210]]],
        "(the data's timestamps have a time zone, the window's not alike)",
    ),
    "past the file's end": (
        STAMPS,
        [[STAMPS[290], "2015-01-02 01:00:00"]],
        "does not start and end on data rows",
    ),
    "rows out of order": (
        [*STAMPS[:100], *STAMPS[150:200], *STAMPS[100:150], *STAMPS[200:]],
        [[STAMPS[20], STAMPS[30]]],
        "cat/f.csv: data row 151 (2015-01-01 08:20:00) is earlier than the row before it",
    ),
}


@pytest.mark.parametrize("case", BAD_WINDOWS)
def test_windows_nab_cannot_score_are_refused_before_scoring(tmp_path, no_scoring, case) -> None:
    """These were found only by the scorer, after every file had been scored and written."""
    stamps, windows, message = BAD_WINDOWS[case]
    root = labelled(nab_dir(tmp_path, csv(stamps=stamps)), windows)
    line = one_line_error(root, tmp_path / "out", "--score")
    assert message in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--detector", "windowedGaussian"], "--detector"),
        (["--out", ""], "--out"),
        (["--nab-dir", ""], "--nab-dir"),
    ],
)
def test_an_invalid_option_value_is_a_usage_error(tmp_path, args, option) -> None:
    root = nab_dir(tmp_path, csv())
    given = {"--nab-dir": str(root), "--out": str(tmp_path / "out"), args[0]: args[1]}
    result = CliRunner().invoke(app, ["detect", *[x for kv in given.items() for x in kv]])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: Invalid value for {option}: ")


def test_nab_s_own_layout_is_found_from_inside_its_data_folder(tmp_path, monkeypatch) -> None:
    """``--nab-dir .`` inside NAB's ``data/``: ``Path('.').parent`` is ``.``, so
    ``../labels/combined_windows.json`` was not found."""
    data = nab_dir(tmp_path, csv())
    data = data.rename(tmp_path / "data")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "combined_windows.json").write_text(
        json.dumps({"cat/f.csv": [[STAMPS[200], STAMPS[210]]]})
    )
    monkeypatch.chdir(data)
    result = CliRunner().invoke(app, score_args(Path("."), tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "NAB scores of 'extreme'" in result.output


def test_a_file_name_in_another_unicode_form_than_its_label_is_matched(tmp_path) -> None:
    """macOS writes file names decomposed (NFD), NAB's labels are composed (NFC): the
    names look the same, yet the file 'had no windows'."""
    name = "Straße_ü.csv"
    root = nab_dir(tmp_path, csv(), f"cat/{unicodedata.normalize('NFD', name)}")
    windows = {f"cat/{unicodedata.normalize('NFC', name)}": [[STAMPS[200], STAMPS[210]]]}
    (root / "cat_windows.json").write_text(json.dumps(windows))
    result = CliRunner().invoke(app, score_args(root, tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "NAB scores of 'extreme'" in result.output


def test_a_failed_run_leaves_the_output_folder_as_it_was(tmp_path, monkeypatch) -> None:
    """A failure while scoring left the folders the run had made, and its progress named
    result files that it then did not write."""
    root = nab_dir(tmp_path, csv(), "a/f.csv")
    out = tmp_path / "out"
    (earlier,) = detect_nab(root, out, "extreme")
    earlier.write_text("an earlier run\n")
    before = sorted(out.rglob("*"))
    nab_dir(tmp_path, csv(), "b/g.csv")
    nab_dir(tmp_path, csv(), "c/h.csv")
    scored: list[str] = []

    def fail_on_the_third(values: np.ndarray, stamps: pd.DatetimeIndex, *args, **kwargs):
        scored.append(args[1])
        if len(scored) % 3 == 0:
            raise KeyboardInterrupt
        return np.zeros(len(values))

    monkeypatch.setattr(flows.detect, "score_rows", fail_on_the_third)
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        detect_nab(root, out, "extreme", progress=said.append, workers=1)
    assert sorted(out.rglob("*")) == before
    assert earlier.read_text() == "an earlier run\n"
    assert not [line for line in said if str(out) in line]
    with pytest.raises(KeyboardInterrupt):
        detect_nab(root, tmp_path / "new" / "out", "extreme", workers=1)
    assert not (tmp_path / "new").exists()
