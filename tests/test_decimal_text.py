"""Vectorised decimal text of forecast arrays (pipeline.kafka.decimal_text)."""

from __future__ import annotations

import json
import re
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.kafka.decimal_text import SIGNIFICANT, json_rows

NUMBER = re.compile(r"-?(0|[1-9]\d*)\.\d+")


def _rows(values: np.ndarray) -> list[str]:
    buffer, offsets = json_rows(values)
    assert offsets[0] == 0 and offsets[-1] == len(buffer)
    return [buffer[a:b].decode("ascii") for a, b in pairwise(offsets.tolist())]


def test_known_values_are_plain_short_decimals():
    values = np.array([[55.1, 60.0, 1e-5, -0.0, 0.0, -2.49999, 9.9999996, 1234567.8, 0.5]])
    assert _rows(values) == ["[55.1,60.0,0.00001,0.0,0.0,-2.49999,10.0,1234567.8,0.5]"]
    assert _rows(np.array([[1.0], [-2.25]])) == ["[1.0]", "[-2.25]"]
    # float32 model output: the decimal of 7 digits, not the float32's binary noise
    assert _rows(np.array([[55.1, 0.3]], np.float32)) == ["[55.1,0.3]"]


@settings(max_examples=200)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(1, 13)),
        elements=st.floats(-9e13, 9e13, allow_nan=False).filter(
            lambda v: v == 0 or abs(v) >= 1e-15
        ),
    )
)
def test_every_value_reads_back_to_seven_significant_digits(values):
    for row, text in zip(values, _rows(values), strict=True):
        numbers = text[1:-1].split(",")
        assert text[0] == "[" and text[-1] == "]" and len(numbers) == len(row)
        for word, value in zip(numbers, row, strict=True):
            assert NUMBER.fullmatch(word), word
            assert word.endswith(".0") or not word.endswith("0"), word
            back = float(word)
            tolerance = (
                0.5 * 10.0 ** (np.floor(np.log10(abs(value))) - SIGNIFICANT + 1) if value else 0
            )
            assert abs(back - value) <= tolerance * (1 + 1e-9) + 1e-300, (word, value)
        assert json.loads(text) == [float(w) for w in numbers]


def test_extreme_magnitudes_are_written_exactly_and_errors_name_the_fix():
    rows = _rows(np.array([[1e16, 2.0], [3.5, 4.0], [1e-20, 5.0]]))
    assert [json.loads(r) for r in rows] == [[1e16, 2.0], [3.5, 4.0], [1e-20, 5.0]]
    assert rows[1] == "[3.5,4.0]"
    with pytest.raises(ValueError, match="finite"):
        json_rows(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="col >= 1"):
        json_rows(np.zeros((3, 0)))
