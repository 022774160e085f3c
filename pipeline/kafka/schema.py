"""The versioned JSON wire format (``"v": 1``) of every message roadcast reads or writes.

Three messages travel on Kafka, each keyed by its sensor id so that a sensor stays ordered:

- ``Reading`` ``{v, sensor, ts, value}`` on ``roadcast.readings``; the batch form
  ``{v, ts, values: {sensor: value, ...}}`` is accepted too and decodes to one
  :class:`Reading` per sensor (:func:`decode_readings_partial` keeps the valid sensors
  of a batch in which some are not).
- ``Forecast`` ``{v, model, sensor, issued_at, targets[], yhat[], lo[], hi[]}`` on
  ``roadcast.forecasts`` (``lo``/``hi`` are ``null`` when the model gives no interval).
- ``Alert`` ``{v, alert_id, dedup_key, status, severity, sensor, ts, observed, expected,
  lo, hi, score, detector, first_seen, last_seen, reason}`` on ``roadcast.alerts``.

Rules, the same for every message:

- Timestamps are ISO-8601 strings with a timezone. ``Z`` and ``+00:00`` are UTC; any
  other offset is converted to UTC; a timestamp without a timezone is rejected
  (``no_timezone``): guessing the zone of a sensor would shift it by hours, silently.
  Encoders always write ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``.
- Numbers are JSON numbers: ``NaN``, ``Infinity`` and values that overflow a float are
  rejected (``non_finite``); ``true``/``false`` are not numbers (``bad_type``). A
  missing reading is *not sent*; ``null`` is not a value. A reading's value must fit
  the models' dtype, float32 (``|value| <= FLOAT32_MAX``, else ``value_out_of_range``):
  a larger double would become ``inf`` in the models.
- Timestamps lie in ``[TS_MIN, TS_MAX)`` (years 1700 to 2249, UTC; else
  ``timestamp_out_of_range``): well inside what nanosecond clocks (pandas, numpy
  ``datetime64[ns]``, years 1677 to 2262) can hold, with room for a model's window
  before a tick and its horizon after it.
- Sensor ids are strings of 1-200 characters, none of them a control, format
  (zero-width) or line-separator character, without surrounding whitespace (else
  ``bad_sensor``). Integers are accepted and converted (``7781`` -> ``"7781"``) because
  the public ids (METR-LA, PeMS) are numeric and many producers send them as numbers;
  encoders always write strings. Whether a sensor is *known* is the service's concern
  (it checks against its model bundles), not the schema's.
- v1 is closed: a field it does not define is rejected (``unknown_field``), so a typo
  never silently drops data; a new field means a new version.

Any input, including arbitrary bytes, either decodes or raises exactly one error type,
:class:`SchemaError`, whose ``reason`` is one of :data:`REASONS` (the service puts it in
the dead-letter headers). The service decodes every reading, so decoding avoids pydantic:
compact bytes (as roadcast's producers write them) are read by orjson when re-encoding
gives them back, anything else by the standard library's parser, which reports a repeated
key (orjson keeps the last one silently).

One module on purpose: the shared rules and the three messages are one versioned contract
that changes as a whole (a new field is a new version of all of it), and the field checks
stay private to it.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn

import orjson

if TYPE_CHECKING:
    from models.forecasters.base import Forecast

SCHEMA_VERSION: Final = 1
# Kafka's default max message size: anything larger is not a reading, and refusing it
# up front bounds the decoder's work.
MAX_MESSAGE_BYTES: Final = 1 << 20
MAX_SENSOR_ID_CHARS: Final = 200
# Unicode categories no sensor id may hold: control (NUL, newline...), format (zero-width
# space, BOM...) and line or paragraph separators. Spaces (NBSP too) are allowed inside.
_INVISIBLE: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})
MAX_TIMESTAMP_CHARS: Final = 64
# The largest finite float32: a reading's value is stored and forecast as float32.
FLOAT32_MAX: Final = 3.4028234663852886e38
# The supported time range (UTC): see the module docstring.
TS_MIN: Final = datetime(1700, 1, 1, tzinfo=UTC)
TS_MAX: Final = datetime(2250, 1, 1, tzinfo=UTC)

REASONS: Final = frozenset(
    {
        "too_large",  # more than MAX_MESSAGE_BYTES
        "not_utf8",  # the bytes are not UTF-8
        "bad_json",  # not JSON (or nested too deep, or an absurdly long number)
        "duplicate_key",  # the same key twice in one JSON object: which one is meant?
        "bad_type",  # a field (or the message) has the wrong JSON type
        "missing_field",  # a required field is absent
        "unknown_field",  # a field v1 does not define
        "bad_version",  # "v" is not 1
        "non_finite",  # NaN, Infinity, or a number that overflows a float
        "no_timezone",  # a timestamp without a timezone
        "bad_timestamp",  # not an ISO-8601 timestamp
        "timestamp_out_of_range",  # before TS_MIN or from TS_MAX on (UTC)
        "value_out_of_range",  # a reading's value does not fit float32
        "bad_sensor",  # empty, too long, padded, not valid Unicode, or invisible characters
        "bad_value",  # well-typed but inconsistent (lengths, order, enum, range)
    }
)

Status = Literal["firing", "resolved"]
Severity = Literal["info", "warning", "critical"]
STATUSES: Final = ("firing", "resolved")
SEVERITIES: Final = ("info", "warning", "critical")


class SchemaError(ValueError):
    """A message that does not follow the wire format.

    Attributes
    ----------
    reason : str
        A short machine-readable code from :data:`REASONS` (e.g. ``"non_finite"``).
    detail : str
        What is wrong, for a human.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[SchemaError], tuple[str, str]]:
        # The default would re-call __init__ with the formatted message only.
        return (SchemaError, (self.reason, self.detail))


def _fail(reason: str, detail: str) -> NoReturn:
    raise SchemaError(reason, detail)


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Reading:
    """One observation of one sensor at one time (``ts`` is UTC)."""

    sensor: str
    ts: datetime
    value: float
    v: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class ForecastMessage:
    """One model's forecast of one sensor for the steps ``targets`` after ``issued_at``.

    ``yhat``, ``lo`` and ``hi`` have one entry per target; ``lo``/``hi`` are None when
    the model gives no interval.
    """

    model: str
    sensor: str
    issued_at: datetime
    targets: tuple[datetime, ...]
    yhat: tuple[float, ...]
    lo: tuple[float, ...] | None = None
    hi: tuple[float, ...] | None = None
    v: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """A change in an alert's state (``firing`` or ``resolved``).

    ``dedup_key`` (``sensor:detector``) identifies the condition across repeats;
    ``alert_id`` identifies this episode. ``score`` is the anomaly score in [0, 1];
    ``observed``/``expected``/``lo``/``hi`` are None when the detector has no such value
    (e.g. a reconstruction-error detector has no interval). ``reason`` is the detector's
    explanation in words.
    """

    alert_id: str
    dedup_key: str
    status: Status
    severity: Severity
    sensor: str
    ts: datetime
    observed: float | None
    expected: float | None
    lo: float | None
    hi: float | None
    score: float
    detector: str
    first_seen: datetime
    last_seen: datetime
    reason: str = ""
    v: int = SCHEMA_VERSION


# --------------------------------------------------------------------------- parsing


def _reject_constant(name: str) -> NoReturn:
    _fail("non_finite", f"{name} is not a finite number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                _fail("duplicate_key", f"key {key[:40]!r} appears more than once")
            seen.add(key)
    return obj


# One decoder for all messages: json.loads(..., **kwargs) would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _canonical(raw: bytes) -> Any:
    """``raw`` parsed by orjson when re-encoding it gives ``raw`` back (compact JSON as
    roadcast's producers write it), else None. Equal bytes cannot hold a repeated key,
    which orjson would drop without a word; anything else takes the checked parser."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return obj if type(obj) is dict and orjson.dumps(obj) == raw else None


def _load(raw: bytes | bytearray | memoryview | str | None) -> dict[str, Any]:
    """Bytes -> a JSON object with a valid version, or SchemaError."""
    if raw is None:
        _fail("bad_type", "empty message (a tombstone?): expected a JSON object")
    if not len(raw):
        _fail("bad_json", "empty value: expected a JSON object")
    if type(raw) is bytes and len(raw) <= MAX_MESSAGE_BYTES:
        fast = _canonical(raw)
        if fast is not None and type(fast.get("v")) is int and fast["v"] == SCHEMA_VERSION:
            return fast
    if isinstance(raw, str):
        text = raw
        if len(text) > MAX_MESSAGE_BYTES:
            _fail("too_large", f"{len(text)} characters, the limit is {MAX_MESSAGE_BYTES}")
    elif isinstance(raw, bytes | bytearray | memoryview):
        if len(raw) > MAX_MESSAGE_BYTES:
            _fail("too_large", f"{len(raw)} bytes, the limit is {MAX_MESSAGE_BYTES}")
        try:
            text = (raw if isinstance(raw, bytes | bytearray) else bytes(raw)).decode("utf-8")
        except UnicodeDecodeError as exc:
            _fail("not_utf8", f"invalid UTF-8 at byte {exc.start}")
    else:
        _fail("bad_type", f"expected bytes, got {type(raw).__name__}")
    try:
        obj = _DECODER.decode(text.removeprefix("\ufeff"))  # a byte-order mark is harmless
    except SchemaError:
        raise
    except json.JSONDecodeError as exc:
        what = exc.msg.removesuffix(" at")  # "Invalid control character at"
        _fail("bad_json", f"{what} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        _fail("bad_json", "nested too deeply")
    except ValueError as exc:  # an integer literal longer than Python's digit limit
        digits = "digits" in str(exc)
        _fail("bad_json", "a number with too many digits" if digits else str(exc)[:120])
    if type(obj) is not dict:
        _fail("bad_type", f"expected a JSON object, got {_json_type(obj)}")
    if "v" not in obj:
        _fail("missing_field", 'no "v" (schema version) field')
    version = obj["v"]
    if type(version) is not int:
        _fail("bad_version", f'"v" must be the integer {SCHEMA_VERSION}, got {_json_type(version)}')
    if version != SCHEMA_VERSION:
        _fail("bad_version", f"version {version} is not supported (this reader knows v1)")
    return obj


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_keys(
    obj: Mapping[str, Any], required: frozenset[str], optional: frozenset[str], what: str
) -> None:
    keys = obj.keys()
    missing = required - keys
    if missing:
        _fail("missing_field", f"{what} lacks {sorted(missing)}")
    unknown = keys - required - optional
    if unknown:
        names = sorted(k[:40] for k in unknown)[:5]
        _fail("unknown_field", f"{what} v1 has no field(s) {names}")


def _number(value: Any, field: str) -> float:
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            _fail("non_finite", f"{field} is {value}")
        return value
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            _fail("non_finite", f"{field} overflows a float")
    _fail("bad_type", f"{field} must be a number, got {_json_type(value)}")


def _value(value: Any, field: str) -> float:
    """A reading's value: a finite number that float32 holds."""
    if type(value) is float and -FLOAT32_MAX <= value <= FLOAT32_MAX:
        return value  # the common case, in one comparison (NaN fails it)
    number = _number(value, field)
    if not -FLOAT32_MAX <= number <= FLOAT32_MAX:
        _fail("value_out_of_range", f"{field} {number:g} does not fit float32 (|x| <= 3.4e38)")
    return number


def _optional_number(value: Any, field: str) -> float | None:
    return None if value is None else _number(value, field)


def _sensor(value: Any, field: str = "sensor") -> str:
    kind = type(value)
    if kind is int:
        value = str(value)
    elif kind is not str:
        _fail("bad_type", f"{field} must be a string (or integer) id, got {_json_type(value)}")
    if (problem := sensor_id_problem(value)) is not None:
        _fail("bad_sensor", f"{field} {value[:40]!r} {problem}")
    return value


def sensor_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a sensor id on the wire (None: it can)."""
    if not value or len(value) > MAX_SENSOR_ID_CHARS or value.strip() != value:
        return f"must be 1-{MAX_SENSOR_ID_CHARS} characters without surrounding whitespace"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800"): no text holds it
            return "is not valid Unicode"
    if not value.isprintable() and any(unicodedata.category(c) in _INVISIBLE for c in value):
        return "holds a control or invisible character"
    return None


def _text(value: Any, field: str, *, allow_empty: bool = False) -> str:
    if type(value) is not str:
        _fail("bad_type", f"{field} must be a string, got {_json_type(value)}")
    if not value and not allow_empty:
        _fail("bad_value", f"{field} must not be empty")
    return value


# Seconds written as 60 (RFC 3339's leap second), before a fraction and the offset.
_LEAP_SECOND = re.compile(r"[Tt ]\d\d:\d\d:60(?:[.,]\d+)?(?:[Zz]|[+-]\d\d(?::?\d\d)?)?$")


def _upper_rfc3339(value: str) -> str:
    """RFC 3339's lowercase ``t`` separator and ``z`` zone, which it allows, as
    ``fromisoformat`` reads them (upper case)."""
    if value.endswith("z"):
        value = value[:-1] + "Z"
    if len(value) > 10 and value[10] == "t":
        value = value[:10] + "T" + value[11:]
    return value


def parse_timestamp(value: Any, field: str = "ts") -> datetime:
    """An ISO-8601 string with a timezone -> an aware ``datetime`` in UTC.

    Raises
    ------
    SchemaError
        ``bad_type`` (not a string), ``bad_timestamp`` (not ISO-8601),
        ``no_timezone`` or ``timestamp_out_of_range`` (outside ``[TS_MIN, TS_MAX)``).
    """
    if type(value) is not str:
        _fail("bad_type", f"{field} must be an ISO-8601 string, got {_json_type(value)}")
    if len(value) > MAX_TIMESTAMP_CHARS:
        _fail("bad_timestamp", f"{field} is {len(value)} characters long")
    if not (value.isascii() and value.isprintable()):  # fromisoformat lets NUL through
        _fail("bad_timestamp", f"{field} {value!r} holds a control or non-ASCII character")
    try:
        ts = datetime.fromisoformat(_upper_rfc3339(value))
    except ValueError:
        if _LEAP_SECOND.search(value):
            _fail(
                "bad_timestamp",
                f"{field} {value!r} is a leap second (:60), which roadcast does not "
                "take; send it as :59.999 of that minute",
            )
        _fail("bad_timestamp", f"{field} {value!r} is not ISO-8601")
    offset = ts.utcoffset()
    if offset is None:
        _fail("no_timezone", f"{field} {value!r} has no timezone; append Z for UTC")
    if offset:
        try:
            ts = ts.astimezone(UTC)
        except OverflowError:
            _fail("timestamp_out_of_range", f"{field} {value!r} is out of range in UTC")
    elif ts.tzinfo is not UTC:
        ts = ts.replace(tzinfo=UTC)
    if not TS_MIN <= ts < TS_MAX:
        _fail(
            "timestamp_out_of_range",
            f"{field} {value!r} is outside the supported range "
            f"{TS_MIN.year}-01-01 to {TS_MAX.year}-01-01 (UTC)",
        )
    return ts


def format_timestamp(ts: datetime) -> str:
    """An aware ``datetime`` -> ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` (UTC).

    Raises
    ------
    SchemaError
        ``no_timezone`` for a naive datetime, ``bad_type`` for anything else.
    """
    if not isinstance(ts, datetime):
        _fail("bad_type", f"expected a datetime, got {type(ts).__name__}")
    offset = ts.utcoffset()
    if offset is None:
        _fail("no_timezone", f"{ts!r} is naive; use datetime(..., tzinfo=UTC)")
    if offset:
        try:
            ts = ts.astimezone(UTC)
        except OverflowError:
            _fail("bad_timestamp", f"{ts!r} is out of range in UTC")
    # datetime(...) drops subclass extras (pandas nanoseconds) that fromisoformat rejects.
    plain = datetime(ts.year, ts.month, ts.day, ts.hour, ts.minute, ts.second, ts.microsecond)
    return plain.isoformat() + "Z"


def _wire_timestamp(ts: datetime) -> str:
    """:func:`format_timestamp`, refusing what :func:`parse_timestamp` would refuse."""
    text = format_timestamp(ts)
    parse_timestamp(text)
    return text


def _numbers(value: Any, field: str, length: int) -> tuple[float, ...]:
    if type(value) is not list:
        _fail("bad_type", f"{field} must be an array of numbers, got {_json_type(value)}")
    if len(value) != length:
        _fail("bad_value", f"{field} has {len(value)} entries for {length} targets")
    return tuple(_number(x, f"{field}[{i}]") for i, x in enumerate(value))


# --------------------------------------------------------------------------- readings

_READING_KEYS: Final = frozenset({"v", "sensor", "ts", "value"})
_BATCH_KEYS: Final = frozenset({"v", "ts", "values"})
_NONE: Final[frozenset[str]] = frozenset()


# The readings of a tick share their timestamp and a network's sensors recur every tick,
# so the valid ones are remembered (bounded) and checked once.
_SEEN_TIMES: dict[str, datetime] = {}
_SEEN_SENSORS: set[str] = set()
_SEEN_LIMIT: Final = 1 << 16


def _reading_time(value: Any) -> datetime:
    """:func:`parse_timestamp`, remembered per text."""
    if type(value) is str and (ts := _SEEN_TIMES.get(value)) is not None:
        return ts
    ts = parse_timestamp(value)
    if len(_SEEN_TIMES) >= _SEEN_LIMIT:
        _SEEN_TIMES.clear()
    _SEEN_TIMES[value] = ts
    return ts


def _reading_sensor(value: Any, field: str = "sensor") -> str:
    """:func:`_sensor`, remembered per valid id."""
    if type(value) is str and value in _SEEN_SENSORS:
        return value
    sensor = _sensor(value, field)
    if len(_SEEN_SENSORS) >= _SEEN_LIMIT:
        _SEEN_SENSORS.clear()
    _SEEN_SENSORS.add(sensor)
    return sensor


def decode_readings(raw: bytes | bytearray | memoryview | str | None) -> list[Reading]:
    """Decode one message of ``roadcast.readings`` (single or batch form).

    Parameters
    ----------
    raw
        The message value as received (bytes; ``str`` is accepted too).

    Returns
    -------
    list[Reading]
        One reading for the single form; one per sensor, in message order, for the
        batch form (an empty ``values`` object gives an empty list: a tick where no
        sensor reported).

    Raises
    ------
    SchemaError
        For anything else, with ``reason`` in :data:`REASONS`. No other exception
        escapes, whatever the bytes.
    """
    readings, rejected = decode_readings_partial(raw)
    if rejected:
        raise rejected[0]
    return readings


def decode_readings_partial(
    raw: bytes | bytearray | memoryview | str | None,
) -> tuple[list[Reading], list[SchemaError]]:
    """:func:`decode_readings`, except that a batch-form message's sensor with a bad id or
    value comes back as an error beside the other sensors' readings instead of failing
    the whole message (one bad sensor must not cost a network its tick).

    Raises
    ------
    SchemaError
        When the message as a whole is invalid (not JSON, its ``ts``, its fields...).
    """
    obj = _load(raw)
    if "values" in obj:
        _check_keys(obj, _BATCH_KEYS, _NONE, "batch reading")
        ts = _reading_time(obj["ts"])
        values = obj["values"]
        if type(values) is not dict:
            _fail(
                "bad_type", f"values must be an object {{sensor: value}}, got {_json_type(values)}"
            )
        readings = []
        rejected = []
        for sensor, value in values.items():
            try:
                if type(value) is not float or not -FLOAT32_MAX <= value <= FLOAT32_MAX:
                    value = _value(value, f"values[{sensor[:40]!r}]")
                readings.append(Reading(_reading_sensor(sensor, "values key"), ts, value))
            except SchemaError as exc:
                rejected.append(exc)
        return readings, rejected
    if obj.keys() != _READING_KEYS:
        _check_keys(obj, _READING_KEYS, _NONE, _what_reading(obj))
    reading = Reading(
        _reading_sensor(obj["sensor"]), _reading_time(obj["ts"]), _value(obj["value"], "value")
    )
    return [reading], []


def _what_reading(obj: Mapping[str, Any]) -> str:
    """``reading``, or what roadcast record a non-reading looks like (a producer writing
    forecasts or alerts to the readings topic)."""
    for kind, keys in (("forecast", _FORECAST_KEYS), ("alert", _ALERT_KEYS)):
        if keys <= obj.keys():
            return f"reading (this is a roadcast {kind} record: the wrong topic?)"
    return "reading"


def _dump(obj: dict[str, Any]) -> bytes:
    return _ENCODER.encode(obj).encode("utf-8")


def encode_reading(reading: Reading) -> bytes:
    """Encode one reading as ``{"v":1,"sensor":...,"ts":...,"value":...}`` (UTF-8 JSON).

    Raises
    ------
    SchemaError
        When the reading would not decode (NaN value, naive timestamp, bad sensor id):
        a producer never publishes what the service would dead-letter.
    """
    wire = {
        "v": SCHEMA_VERSION,
        "sensor": _sensor(reading.sensor),
        "ts": _wire_timestamp(reading.ts),
        "value": _value(_plain(reading.value), "value"),
    }
    return _dump(wire)


def encode_readings_batch(ts: datetime, values: Mapping[str, float]) -> bytes:
    """Encode the batch form ``{"v":1,"ts":...,"values":{sensor: value, ...}}``.

    Raises
    ------
    SchemaError
        As :func:`encode_reading`, for any of the values.
    """
    wire_values: dict[str, float] = {}
    for sensor, value in values.items():
        key = _sensor(sensor, "values key")
        if key in wire_values:
            _fail("duplicate_key", f"sensor {key!r} appears twice (as a string and a number?)")
        wire_values[key] = _value(_plain(value), f"values[{key!r}]")
    return _dump({"v": SCHEMA_VERSION, "ts": _wire_timestamp(ts), "values": wire_values})


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars; anything else unchanged (the checks judge it)."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            return value
    return value


# --------------------------------------------------------------------------- forecasts

_FORECAST_KEYS: Final = frozenset({"v", "model", "sensor", "issued_at", "targets", "yhat"})
_FORECAST_OPTIONAL: Final = frozenset({"lo", "hi"})


def _forecast_from_wire(obj: dict[str, Any]) -> ForecastMessage:
    _check_keys(obj, _FORECAST_KEYS, _FORECAST_OPTIONAL, "forecast")
    model = _text(obj["model"], "model")
    sensor = _sensor(obj["sensor"])
    issued_at = parse_timestamp(obj["issued_at"], "issued_at")
    raw_targets = obj["targets"]
    if type(raw_targets) is not list:
        _fail("bad_type", f"targets must be an array of timestamps, got {_json_type(raw_targets)}")
    if not raw_targets:
        _fail("bad_value", "targets must not be empty")
    targets = tuple(parse_timestamp(t, f"targets[{i}]") for i, t in enumerate(raw_targets))
    if any(b <= a for a, b in pairwise(targets)):
        _fail("bad_value", "targets must be strictly increasing")
    n = len(targets)
    yhat = _numbers(obj["yhat"], "yhat", n)
    lo_raw, hi_raw = obj.get("lo"), obj.get("hi")
    if (lo_raw is None) != (hi_raw is None):
        _fail("bad_value", "lo and hi come together: both arrays or both null")
    lo = None if lo_raw is None else _numbers(lo_raw, "lo", n)
    hi = None if hi_raw is None else _numbers(hi_raw, "hi", n)
    if lo is not None and hi is not None and any(a > b for a, b in zip(lo, hi, strict=True)):
        _fail("bad_value", "lo must not exceed hi")
    return ForecastMessage(model, sensor, issued_at, targets, yhat, lo, hi)


def decode_forecast(raw: bytes | bytearray | memoryview | str | None) -> ForecastMessage:
    """Decode one message of ``roadcast.forecasts``.

    Raises
    ------
    SchemaError
        For any invalid input (see :data:`REASONS`), including mismatched lengths of
        ``targets``/``yhat``/``lo``/``hi``, unordered targets or ``lo > hi``
        (``bad_value``).
    """
    return _forecast_from_wire(_load(raw))


def encode_forecast(message: ForecastMessage) -> bytes:
    """Encode a forecast; ``lo``/``hi`` of None are written as ``null``.

    Raises
    ------
    SchemaError
        When the message would not decode (see :func:`decode_forecast`).
    """
    wire = {
        "v": SCHEMA_VERSION,
        "model": message.model,
        "sensor": message.sensor,
        "issued_at": format_timestamp(message.issued_at),
        "targets": [format_timestamp(t) for t in message.targets],
        "yhat": [_plain(x) for x in message.yhat],
        "lo": None if message.lo is None else [_plain(x) for x in message.lo],
        "hi": None if message.hi is None else [_plain(x) for x in message.hi],
    }
    _forecast_from_wire(wire)  # the same checks as the reader: never publish what it rejects
    return _dump(wire)


def forecast_messages(forecast: Forecast) -> list[ForecastMessage]:
    """Split a network-wide :class:`models.forecasters.base.Forecast` into one message per sensor.

    NaN forecasts (a model that cannot forecast a sensor) raise ``SchemaError``
    (``non_finite``) when encoded, rather than being published as numbers.
    """
    issued_at = forecast.issued_at.to_pydatetime()
    targets = tuple(t.to_pydatetime() for t in forecast.targets)
    mean = forecast.mean.T.tolist()  # [node, horizon]
    lower = None if forecast.lower is None else forecast.lower.T.tolist()
    upper = None if forecast.upper is None else forecast.upper.T.tolist()
    return [
        ForecastMessage(
            model=forecast.model,
            sensor=sensor,
            issued_at=issued_at,
            targets=targets,
            yhat=tuple(mean[i]),
            lo=None if lower is None else tuple(lower[i]),
            hi=None if upper is None else tuple(upper[i]),
        )
        for i, sensor in enumerate(forecast.sensor_ids)
    ]


# --------------------------------------------------------------------------- alerts

_ALERT_KEYS: Final = frozenset(
    {
        "v",
        "alert_id",
        "dedup_key",
        "status",
        "severity",
        "sensor",
        "ts",
        "observed",
        "expected",
        "lo",
        "hi",
        "score",
        "detector",
        "first_seen",
        "last_seen",
    }
)
_ALERT_OPTIONAL: Final = frozenset({"reason"})


def _alert_from_wire(obj: dict[str, Any]) -> AlertMessage:
    _check_keys(obj, _ALERT_KEYS, _ALERT_OPTIONAL, "alert")
    status = obj["status"]
    if status not in STATUSES:
        _fail("bad_value", f"status must be one of {STATUSES}, got {str(status)[:40]!r}")
    severity = obj["severity"]
    if severity not in SEVERITIES:
        _fail("bad_value", f"severity must be one of {SEVERITIES}, got {str(severity)[:40]!r}")
    score = _number(obj["score"], "score")
    if not 0.0 <= score <= 1.0:
        _fail("bad_value", f"score must be in [0, 1], got {score}")
    lo = _optional_number(obj["lo"], "lo")
    hi = _optional_number(obj["hi"], "hi")
    if lo is not None and hi is not None and lo > hi:
        _fail("bad_value", "lo must not exceed hi")
    first_seen = parse_timestamp(obj["first_seen"], "first_seen")
    last_seen = parse_timestamp(obj["last_seen"], "last_seen")
    if last_seen < first_seen:
        _fail("bad_value", "last_seen must not precede first_seen")
    return AlertMessage(
        alert_id=_text(obj["alert_id"], "alert_id"),
        dedup_key=_text(obj["dedup_key"], "dedup_key"),
        status=status,
        severity=severity,
        sensor=_sensor(obj["sensor"]),
        ts=parse_timestamp(obj["ts"]),
        observed=_optional_number(obj["observed"], "observed"),
        expected=_optional_number(obj["expected"], "expected"),
        lo=lo,
        hi=hi,
        score=score,
        detector=_text(obj["detector"], "detector"),
        first_seen=first_seen,
        last_seen=last_seen,
        reason=_text(obj.get("reason", ""), "reason", allow_empty=True),
    )


def decode_alert(raw: bytes | bytearray | memoryview | str | None) -> AlertMessage:
    """Decode one message of ``roadcast.alerts``.

    Raises
    ------
    SchemaError
        For any invalid input (see :data:`REASONS`); ``bad_value`` for an unknown
        status or severity, a score outside [0, 1], ``lo > hi`` or
        ``last_seen < first_seen``.
    """
    return _alert_from_wire(_load(raw))


def encode_alert(message: AlertMessage) -> bytes:
    """Encode an alert.

    Raises
    ------
    SchemaError
        When the message would not decode (see :func:`decode_alert`).
    """
    wire = {
        "v": SCHEMA_VERSION,
        "alert_id": message.alert_id,
        "dedup_key": message.dedup_key,
        "status": message.status,
        "severity": message.severity,
        "sensor": message.sensor,
        "ts": format_timestamp(message.ts),
        "observed": _plain(message.observed),
        "expected": _plain(message.expected),
        "lo": _plain(message.lo),
        "hi": _plain(message.hi),
        "score": _plain(message.score),
        "detector": message.detector,
        "first_seen": format_timestamp(message.first_seen),
        "last_seen": format_timestamp(message.last_seen),
        "reason": message.reason,
    }
    _alert_from_wire(wire)
    return _dump(wire)
