"""A hand-written vectorised decimal formatter: the baseline of ``benchmarks/wire.py``,
so that the side-by-side measurement with orjson and msgspec can be repeated.

:func:`json_rows` writes the rows of a float array as JSON arrays with integer
arithmetic on whole arrays (each value rounded to :data:`SIGNIFICANT` significant
digits, plain positional notation). ``orjson.dumps`` of the float32 array does the same
job faster and writes the shortest decimal that reads back to the same float32, so the
service encodes with orjson (:mod:`pipeline.kafka.forecast_wire`); see
``docs/decisions.md``.
"""

from __future__ import annotations

import numpy as np

SIGNIFICANT = 7
_MAX_DECIMALS = 21  # 7 significant digits down to 1e-15
_LIMIT = 1e14  # |x| below this: rint(|x| * 10**decimals) is below 2**53, exact
_POW10F = 10.0 ** np.arange(32)  # [32], exact powers of ten as floats up to 1e22
_ZERO, _DOT, _MINUS, _COMMA, _OPEN, _CLOSE = (ord(c) for c in "0.-,[]")


def json_rows(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Each row of ``values`` as a JSON array of numbers, all in one ASCII buffer.

    Parameters
    ----------
    values : finite floats ``[row, col]`` with ``col >= 1``.

    Returns
    -------
    (buffer, offsets) : row ``r`` is ``buffer[offsets[r]:offsets[r + 1]]``, e.g.
        ``b"[55.1,54.98]"``; ``offsets`` int64 ``[row + 1]``.

    Raises
    ------
    ValueError
        For a non-finite value or an array that is not 2-D with at least one column.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"json_rows needs a [row, col] array with col >= 1, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("json_rows formats finite values only; leave out non-finite rows")
    mag = np.abs(x)
    tiny = (mag < 10.0 ** (SIGNIFICANT - 1 - _MAX_DECIMALS)) & (mag > 0)
    odd = np.asarray(((mag >= _LIMIT) | tiny).any(axis=1))  # [row]
    if odd.any():
        return _mixed(x, odd)
    return _fast(x)


def _fast(x: np.ndarray) -> tuple[bytes, np.ndarray]:
    rows, cols = x.shape
    flat = x.reshape(-1)  # [n], row-major: the numbers of a row are contiguous
    n = flat.size
    mag = np.abs(flat)
    with np.errstate(divide="ignore"):
        exponent = np.floor(np.log10(np.where(mag > 0, mag, 1.0))).astype(np.int64)
    decimals = np.clip(SIGNIFICANT - 1 - exponent, 1, _MAX_DECIMALS)  # [n], >= 1 digit
    scaled = np.rint(mag * _POW10F[decimals])  # [n], integral floats below 2**53
    negative = (flat < 0) & (scaled != 0)  # -0.0, or a value that rounds to 0: no sign
    # All digits of `scaled`, most significant first, left-padded with zeros to `width`
    # columns (enough for the widest number and for "0.000ddd" fractions).
    top = float(scaled.max())
    width = max(int(decimals.max()) + 1, len(str(int(top))) if top > 0 else 1)
    digits = np.empty((n, width), np.uint8)  # [n, width]
    rest = scaled.astype(np.int64)
    point = (width - decimals).astype(np.int16)  # [n]: the column the '.' takes
    lead = np.full(n, width - 1, np.int16)  # first significant digit (one whole digit stays)
    trailing = np.ones(n, bool)  # only zeros so far, from the right
    dropped = np.zeros(n, np.int16)  # trailing fraction zeros dropped (one digit stays)
    for k in range(width - 1, -1, -1):  # a scalar divisor: numpy's fast integer division
        rest, digit = np.divmod(rest, 10)
        digits[:, k] = digit
        nonzero = digit != 0
        lead[nonzero] = k
        trailing &= ~nonzero
        dropped += trailing & (k > point)
    lead = np.minimum(lead, point - 1)
    zero = np.zeros((n, 1), np.uint8)
    col = np.arange(width + 1, dtype=np.int16)[None, :]  # [1, width + 1]: digits and '.'
    dot = point[:, None]  # [n, 1]
    before = np.concatenate([digits, zero], axis=1)  # [n, width + 1]
    after = np.concatenate([zero, digits], axis=1)  # the same shifted right past the '.'
    text = np.where(col < dot, before, after) + np.uint8(_ZERO)
    text[col == dot] = _DOT  # [n, width + 1]
    keep = (col >= lead[:, None]) & (col <= (width - dropped)[:, None])  # [n, width + 1]
    first = np.zeros((rows, cols), bool)  # [row, col]
    first[:, 0] = True
    ends = np.full((rows, cols), _COMMA, np.uint8)  # [row, col]
    ends[:, -1] = _CLOSE
    chars = np.concatenate(
        [
            np.full((n, 1), _OPEN, np.uint8),
            np.full((n, 1), _MINUS, np.uint8),
            text,
            ends.reshape(n, 1),
        ],
        axis=1,
    )  # [n, width + 4]
    mask = np.concatenate(
        [first.reshape(n, 1), negative[:, None], keep, np.ones((n, 1), bool)], axis=1
    )
    buffer = chars[mask].tobytes()
    offsets = np.zeros(rows + 1, np.int64)
    np.cumsum(mask.sum(axis=1).reshape(rows, cols).sum(axis=1), out=offsets[1:])
    return buffer, offsets


def _mixed(x: np.ndarray, odd: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Rows with extreme magnitudes through ``repr``, the others through :func:`_fast`."""
    texts: list[bytes] = [b""] * x.shape[0]
    normal = np.flatnonzero(~odd)
    if len(normal):
        buffer, offsets = _fast(x[normal])
        for j, r in enumerate(normal.tolist()):
            texts[r] = buffer[offsets[j] : offsets[j + 1]]
    for r in np.flatnonzero(odd).tolist():
        texts[r] = ("[" + ",".join(repr(float(v)) for v in x[r]) + "]").encode("ascii")
    offsets = np.zeros(len(texts) + 1, np.int64)
    np.cumsum([len(t) for t in texts], out=offsets[1:])
    return b"".join(texts), offsets
