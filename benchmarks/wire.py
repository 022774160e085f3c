"""Wire encoding side by side: which library writes the numbers, which frame for v2,
which parser reads the readings.

Four comparisons on the same inputs, one model's forecast at one tick (horizon 12,
mean and interval bounds, float32 like the models' output) for 207, 2,000 and 20,000
sensors; each time is the best of ``--repeats`` rounds of ``--loops`` calls (ms per call):

1. **numbers -> JSON text** (what v1 and the store need): the ``[3 x sensors, 12]`` block
   through the hand-written vectorised formatter roadcast used
   (``benchmarks/wire_handwritten.py``), ``orjson.dumps`` of the numpy array,
   ``msgspec.json`` and the standard library's ``json`` (of ``tolist()``); plus how many
   values read back to exactly the same float32.
2. **v2 frame codecs**: the whole network as one MessagePack map (msgspec, float32
   bytes) and as an Arrow IPC stream of one record batch (pyarrow, a string column and
   three fixed-size-list columns): encode, decode to arrays, bytes.
3. **the service's encoder** (:class:`pipeline.kafka.forecast_wire.ForecastEncoder`) in
   v1 and v2: encode time, records, bytes, and a consumer's decode to per-sensor
   forecasts (:func:`pipeline.kafka.frames.decode_forecast_frame`).

4. **readings decode** (what the service does to every record it consumes): one tick of
   single-reading messages and one batch-form message through
   :func:`pipeline.kafka.schema.decode_readings_partial`, compact bytes (orjson, checked
   by re-encoding) against the same bytes as a ``bytearray`` (the standard library's
   parser that reports a repeated key), with ``orjson.loads`` and ``json.loads`` alone as
   floors.

``python -m benchmarks.wire`` writes ``benchmarks/results/wire.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec
import numpy as np
import orjson
import pandas as pd

from benchmarks.common import write_result
from benchmarks.wire_handwritten import json_rows as handwritten_rows
from flows.reporting.text import print_table

HORIZON = 12
SIZES = (207, 2000, 20000)
ISSUED = pd.Timestamp("2024-05-01 08:00", tz="UTC")
FREQ = pd.Timedelta("5min")


def forecast(sensors: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Sensor ids like PeMS's and a float32 ``[horizon, node]`` forecast with bounds."""
    rng = np.random.default_rng(seed)
    ids = [str(400_000 + 17 * i) for i in range(sensors)]
    mean = rng.normal(55.0, 12.0, (HORIZON, sensors)).astype(np.float32)
    width = rng.uniform(2.0, 9.0, (HORIZON, sensors)).astype(np.float32)
    return ids, mean, mean - width, mean + width


def best_ms(fn: Callable[[], Any], loops: int, repeats: int) -> float:
    """Best of ``repeats`` rounds of ``loops`` calls, in ms per call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - started) / loops)
    return best * 1000


def numbers(block: np.ndarray, loops: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Comparison 1: the ``[row, step]`` block as JSON arrays, each library."""
    rows = np.ascontiguousarray(block)
    encoder = msgspec.json.Encoder()
    ways: dict[str, Callable[[], bytes]] = {
        "handwritten": lambda: handwritten_rows(rows)[0],
        "orjson": lambda: orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY),
        "msgspec": lambda: encoder.encode(rows.tolist()),
        "json (stdlib)": lambda: json.dumps(rows.tolist(), separators=(",", ":")).encode(),
    }
    out = {}
    for name, fn in ways.items():
        text = fn()
        if name == "handwritten":  # one buffer of '[..]' rows, no outer brackets
            text = b"[" + text.replace(b"][", b"],[") + b"]"
        back = np.asarray(orjson.loads(text), np.float64)
        exact = float(np.mean(back.astype(np.float32) == rows))
        out[name] = {
            "ms": round(best_ms(fn, loops, repeats), 4),
            "bytes": len(text),
            "float32_exact_share": round(exact, 4),
            "max_abs_error": float(np.max(np.abs(back - rows.astype(np.float64)))),
        }
    return out


def arrow_frame(ids: list[str], arrays: list[np.ndarray]) -> Callable[[], bytes]:
    """An encoder of the network as one Arrow IPC record batch (ids converted once)."""
    import pyarrow as pa

    sensors = pa.array(ids)
    metadata = {"v": "2", "model": "ar", "issued_at": "2024-05-01T08:00:00Z", "step_ms": "300000"}

    def encode() -> bytes:
        columns = [sensors] + [
            pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(a.T).ravel()), HORIZON)
            for a in arrays
        ]
        batch = pa.RecordBatch.from_arrays(columns, names=["sensor", "yhat", "lo", "hi"])
        batch = batch.replace_schema_metadata(metadata)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        return sink.getvalue().to_pybytes()

    return encode


def arrow_decode(raw: bytes) -> tuple[list[str], list[np.ndarray]]:
    import pyarrow as pa

    batch = pa.ipc.open_stream(raw).read_next_batch()
    arrays = [batch.column(i).flatten().to_numpy().reshape(-1, HORIZON) for i in range(1, 4)]
    return batch.column(0).to_pylist(), arrays


def frames(ids: list[str], arrays: list[np.ndarray], loops: int, repeats: int) -> dict[str, Any]:
    """Comparison 2: one frame of the whole network, MessagePack against Arrow IPC."""
    from pipeline.kafka.frames import encode_frames, read_frame

    def packed() -> bytes:
        return encode_frames(
            "ar", "2024-05-01T08:00:00Z", 300_000, ids, *arrays, max_bytes=1 << 30
        )[0]

    def unpack() -> tuple[tuple[str, ...], np.ndarray]:
        frame = read_frame(raw_pack)
        return frame.sensors, frame.mean

    raw_pack = packed()
    arrow = arrow_frame(ids, arrays)
    raw_arrow = arrow()
    back_ids, back = arrow_decode(raw_arrow)
    assert back_ids == ids and np.array_equal(back[0], arrays[0].T)
    assert np.array_equal(read_frame(raw_pack).mean, arrays[0].T)
    return {
        "msgpack (msgspec)": {
            "encode_ms": round(best_ms(packed, loops, repeats), 4),
            "decode_ms": round(best_ms(unpack, loops, repeats), 4),
            "bytes": len(raw_pack),
        },
        "arrow ipc (pyarrow)": {
            "encode_ms": round(best_ms(arrow, loops, repeats), 4),
            "decode_ms": round(best_ms(lambda: arrow_decode(raw_arrow), loops, repeats), 4),
            "bytes": len(raw_arrow),
        },
    }


def service_encoder(
    ids: list[str], arrays: list[np.ndarray], loops: int, repeats: int
) -> dict[str, Any]:
    """Comparison 3: the service's encoder in each wire, and a consumer's decode."""
    from pipeline.kafka.forecast_wire import ForecastEncoder
    from pipeline.kafka.frames import decode_forecast_frame

    out = {}
    for wire in ("v1", "v2"):
        encoder = ForecastEncoder(ids, wire)  # type: ignore[arg-type]
        encoded = encoder.encode_rows("ar", ISSUED, FREQ, *arrays)

        def encode(encoder: ForecastEncoder = encoder) -> Any:
            return encoder.encode_rows("ar", ISSUED, FREQ, *arrays)

        def decode(
            records: list[tuple[bytes, bytes]] = encoded.records,
            headers: list[tuple[str, bytes]] | None = encoded.headers,
        ) -> int:
            return sum(len(decode_forecast_frame(v, headers)) for _, v in records)

        out[wire] = {
            "encode_ms": round(best_ms(encode, loops, repeats), 4),
            "records": len(encoded.records),
            "bytes": sum(len(k) + len(v) for k, v in encoded.records),
            "decode_ms": round(best_ms(decode, 1, repeats), 4),
            "decoded_forecasts": decode(),
        }
    return out


def _each(fn: Callable[[Any], Any], messages: list[Any]) -> list[Any]:
    return [fn(m) for m in messages]


def readings(sensors: int, loops: int, repeats: int) -> dict[str, Any]:
    """Comparison 4: a tick's readings decoded, single messages and one batch message."""
    from pipeline.kafka.schema import (
        Reading,
        decode_readings_partial,
        encode_reading,
        encode_readings_batch,
    )

    ids, mean, _, _ = forecast(sensors)
    ts = ISSUED.to_pydatetime()
    single = [encode_reading(Reading(s, ts, float(v))) for s, v in zip(ids, mean[0], strict=True)]
    batch = [encode_readings_batch(ts, dict(zip(ids, mean[0].tolist(), strict=True)))]
    out: dict[str, Any] = {}
    for form, messages in (("single", single), ("batch", batch)):
        copies = [bytearray(r) for r in messages]  # not bytes: the checked parser reads them
        ways: dict[str, tuple[Callable[[Any], Any], list[Any]]] = {
            "schema, compact bytes": (decode_readings_partial, messages),
            "schema, checked parser": (decode_readings_partial, copies),
            "orjson.loads alone": (orjson.loads, messages),
            "json.loads alone": (json.loads, messages),
        }
        out[form] = {
            way: round(best_ms(partial(_each, fn, m), loops, repeats), 4)
            for way, (fn, m) in ways.items()
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wire", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the best counts")
    parser.add_argument("--loops", type=int, default=20, help="calls per round (207 sensors)")
    parser.add_argument("--quick", action="store_true", help="207 sensors only, few loops")
    args = parser.parse_args(argv)
    sizes = SIZES[:1] if args.quick else SIZES
    result: dict[str, Any] = {
        "quick": args.quick,
        "horizon": HORIZON,
        "sizes": list(sizes),
        "runs": {},
    }
    for sensors in sizes:
        loops = max(1, args.loops * SIZES[0] // sensors)
        ids, *arrays = forecast(sensors)
        block = np.concatenate([a.T for a in arrays])  # [3 x node, horizon]
        result["runs"][str(sensors)] = {
            "numbers": numbers(block, loops, args.repeats),
            "frames": frames(ids, arrays, loops, args.repeats),
            "encoder": service_encoder(ids, arrays, loops, args.repeats),
            "readings": readings(sensors, loops, args.repeats),
        }
    path = write_result("wire", result)
    runs = result["runs"]
    print_table(
        "numbers -> JSON (ms per model and tick; float32 exact = share read back unchanged)",
        ["sensors", "way", "ms", "bytes", "float32 exact", "x handwritten"],
        [
            [
                n,
                way,
                r["ms"],
                r["bytes"],
                r["float32_exact_share"],
                round(runs[n]["numbers"]["handwritten"]["ms"] / r["ms"], 2),
            ]
            for n in runs
            for way, r in runs[n]["numbers"].items()
        ],
    )
    print_table(
        "v2 frame codecs (one frame of the whole network)",
        ["sensors", "codec", "encode ms", "decode ms", "bytes"],
        [
            [n, codec, r["encode_ms"], r["decode_ms"], r["bytes"]]
            for n in runs
            for codec, r in runs[n]["frames"].items()
        ],
    )
    print_table(
        "the service's encoder per model and tick, and a consumer decoding it all",
        ["sensors", "wire", "encode ms", "records", "bytes", "decode ms"],
        [
            [n, wire, r["encode_ms"], r["records"], r["bytes"], r["decode_ms"]]
            for n in runs
            for wire, r in runs[n]["encoder"].items()
        ],
    )
    print_table(
        "a tick's readings decoded (ms per tick; x checked = the checked parser's time over this)",
        ["sensors", "form", "way", "ms", "x checked"],
        [
            [n, form, way, ms, round(ways["schema, checked parser"] / ms, 2)]
            for n in runs
            for form, ways in runs[n]["readings"].items()
            for way, ms in ways.items()
        ],
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
