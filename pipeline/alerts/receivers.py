"""Where alerts are delivered: Prometheus Alertmanager (API v2) and signed webhooks.

A receiver turns alerts into one HTTP request with a deadline and says what came of it
(:class:`Outcome`):

``accepted``
    a 2xx answer.
``rejected``
    400, 409, 412, 413 (too large) or 422: the receiver will not take *this request*;
    ``detail`` holds its reason (the answer's body). A lane halves a request of several
    alerts and sends the halves, until the alerts refused alone are isolated
    (:mod:`pipeline.alerts.lanes`).
``blocked``
    any other 4xx (401, 403, 404, 405, 407, ...) or a redirect: the receiver refuses
    every request until its configuration is fixed (a rotated token, a typo in a path).
    Retried like ``retry``; a lane logs it once.
``retry``
    a 5xx, 408, 425 or 429 (``Retry-After`` honoured), a timeout or a connection error.

The deadline covers name resolution too (:class:`_Resolver`): a host whose DNS server
does not answer costs one deadline, not the system resolver's tens of seconds.

:mod:`pipeline.alerts.delivery` decides what happens next. Receivers are named by
scheme, host and port only: a webhook's path or query often holds a token, and a URL's
user info a password, so neither reaches a log.

Alertmanager
------------
Each alert becomes a postable alert of Alertmanager's API v2 (``POST /api/v2/alerts``):
labels ``alertname`` (:data:`ALERTNAME`), ``sensor``, ``detector``, ``severity`` and
``incident`` (the group key, when there is one) identify it; annotations carry the
summary, the description (the detector's reason, observed and expected values), the
score and ``alert_id``; ``startsAt`` is the episode's ``first_seen``. A resolved alert
gets ``endsAt`` = its resolution time. A firing one gets ``endsAt`` four resend intervals
ahead and is re-sent every interval while it fires (:meth:`AlertmanagerReceiver.resend`),
as Prometheus does (``--rules.alert.resend-delay``, ``ValidUntil = 4 x resend``): an
Alertmanager that restarted learns it again, and one that stops hearing of it (roadcast
gone) resolves it by itself instead of paging forever. When an alert's labels change
(severity rising to ``critical``) the old label set is resolved in the same request.

Webhooks
--------
One alert per request (a firing record of an episode already resolved is stale and
not sent, as for Alertmanager), signed as `Standard Webhooks <https://www.standardwebhooks.com>`_
specify: ``webhook-id`` (also sent as ``Idempotency-Key``) is the same for every delivery
of one alert record, ``webhook-timestamp`` is the time of the attempt, and
``webhook-signature`` is ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`` with
the secret ``ROADCAST_WEBHOOK_SECRET``; receivers verify it with any Standard Webhooks
library. The body is ``{"type": "roadcast.alert.<status>", "timestamp": <ts>, "data":
<the alert's wire form plus "incident">}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal, Protocol, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import httpcore
import httpx
import orjson
from pydantic import SecretStr
from standardwebhooks import Webhook

from pipeline.http_sockets import RequestSockets
from pipeline.kafka.schema import AlertMessage, encode_alert, format_timestamp
from pipeline.settings import shown_url, url_problem

ALERTNAME: Final = "RoadcastAnomaly"
USER_AGENT: Final = "roadcast-alert-delivery"
# Alerts per Alertmanager request: a backlog drains in few requests (256 alerts of ASCII
# ids and short reasons make about 180 KiB; a 413 halves a request until it passes).
ALERTMANAGER_BATCH: Final = 256
# Resolved episodes a receiver remembers, to drop their stale firing records.
MAX_RESOLVED_KEPT = 100_000
# Resent alerts stay valid for this many resend intervals (Prometheus: 4).
VALID_FOR_RESENDS: Final = 4
# The part of an answer's body kept as the reason of a rejection.
MAX_REASON_CHARS: Final = 500
# How often a request in flight checks its deadline and whether delivery is stopping.
ABORT_CHECK_S: Final = 0.2
# Characters of a label value and of an annotation sent to Alertmanager: one alert then
# stays far under any proxy's body limit.
MAX_LABEL_CHARS: Final = 200
MAX_ANNOTATION_CHARS: Final = 2000

Kind = Literal["accepted", "rejected", "blocked", "retry"]
T = TypeVar("T")
# Answers that refuse the request itself (its content or its size), not the receiver's
# address or credentials.
REFUSED: Final = frozenset({400, 409, 412, 413, 422})
# Answers to try again later.
BUSY: Final = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Pending:
    """An alert to deliver: the message of ``roadcast.alerts`` and its incident key."""

    message: AlertMessage
    incident: str = ""


@dataclass(frozen=True)
class Outcome:
    """What came of one request (see the module docstring)."""

    kind: Kind
    detail: str = ""
    status: int | None = None
    retry_after_s: float | None = None


class Receiver(Protocol):
    """A place alerts go to; :mod:`pipeline.alerts.delivery` drives one per thread."""

    name: str
    max_batch: int

    def deliver(self, batch: Sequence[Pending]) -> Outcome:
        """Send ``batch`` (at most ``max_batch`` alerts, in order) in one request. A
        ``rejected`` batch of several alerts is sent again in halves by the lane."""
        ...

    def due(self) -> float:
        """Seconds until :meth:`resend` has work (``inf``: never)."""
        ...

    def resend(self) -> Outcome | None:
        """Re-send what the receiver must keep hearing about (None: nothing to send)."""
        ...

    def abort_on(self, stop: threading.Event) -> None:
        """Cut a request in flight as soon as ``stop`` is set."""
        ...

    def restore(self, firing: Iterable[Pending], resolved: Iterable[str] = ()) -> None:
        """Take the alerts firing before the first record this process delivers, and the
        episodes resolved before it (newest last)."""
        ...

    def close(self) -> None: ...


def safe_name(kind: str, url: str) -> str:
    """``"<kind> <scheme>://<host>[:<port>]"``: a receiver's name without secrets."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{kind} {parts.scheme}://{parts.hostname}{port}"


def _check_url(url: str, kind: str) -> None:
    """Refuse an address no request could go to (a ValueError that hides its secrets)."""
    if problem := url_problem(url, alertmanager=kind == "alertmanager"):
        raise ValueError(f"{kind} receiver: {problem}, got {shown_url(url)}")


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _redirect_target(url: str, location: str) -> str:
    """Where a redirect from ``url`` points, without secrets; a relative ``location``
    resolved against ``url``."""
    if not location:
        return "nowhere (no Location)"
    try:
        target = urljoin(url, location)
        relative = not urlsplit(location).netloc
        known = bool(urlsplit(target).hostname)
    except ValueError:
        return "an address that is not a URL"
    if not known:
        return "a relative Location"
    return shown_url(target) + (" (a relative Location)" if relative else "")


def classify(status: int, reason: str, headers: Mapping[str, str], url: str = "") -> Outcome:
    """An HTTP answer to a request to ``url`` as an :class:`Outcome`."""
    if 200 <= status < 300:
        return Outcome("accepted", status=status)
    if status in BUSY or status >= 500:
        return Outcome(
            "retry",
            f"HTTP {status}: {reason}",
            status,
            _retry_after(headers.get("retry-after")),
        )
    if status in REFUSED:
        return Outcome("rejected", f"HTTP {status}: {reason}", status)
    if 300 <= status < 400:
        where = _redirect_target(url, headers.get("location", ""))
        reason = f"redirected to {where}; set the receiver's URL to the final address"
    return Outcome("blocked", f"HTTP {status}: {reason}", status)


def halving(
    batch: list[T], send: Callable[[list[T]], Outcome | None]
) -> Iterator[tuple[list[T], Outcome | None]]:
    """Send ``batch`` in order through ``send``; a part ``rejected`` that holds several
    items is sent again as two halves. Yields each part that was not split, with its
    outcome (None from ``send``: stop; the caller decides)."""
    parts = [batch]  # a stack: the next part last
    while parts:
        part = parts.pop()
        outcome = send(part)
        if outcome is not None and outcome.kind == "rejected" and len(part) > 1:
            half = len(part) // 2
            parts += [part[half:], part[:half]]
            continue
        yield part, outcome


def post(
    client: httpx.Client,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
    abort: threading.Event | None = None,
) -> Outcome:
    """POST ``body`` and classify the answer; the whole exchange has ``timeout_s``.

    httpx's timeouts bound each network operation, not the exchange: a receiver that
    trickles its answer's headers would hold the request for ever. A watchdog therefore
    shuts the request's socket down at the deadline, or as soon as ``abort`` is set (a
    stop must not wait for a slow receiver); the client opens one connection per request
    (:class:`_Client`). The body is also read against the deadline.
    """
    deadline = time.monotonic() + timeout_s
    sockets = RequestSockets()
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(ABORT_CHECK_S):
            if time.monotonic() >= deadline or (abort is not None and abort.is_set()):
                sockets.cut()
                return

    watchdog = threading.Thread(target=watch, name="roadcast-post-watchdog", daemon=True)
    watchdog.start()
    late = f"no answer within {timeout_s:g} s"
    try:
        with client.stream(
            "POST",
            url,
            content=body,
            headers=dict(headers),
            timeout=timeout_s,
            extensions={"trace": sockets.trace},
        ) as response:
            chunks: list[bytes] = []
            size = 0
            with contextlib.suppress(httpx.HTTPError):  # the status is in: keep what came
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= 4 * MAX_REASON_CHARS or time.monotonic() > deadline:
                        break
            text = b"".join(chunks).decode("utf-8", "replace").strip().strip('"')
            reason = " ".join(text.split())[:MAX_REASON_CHARS] or response.reason_phrase
            return classify(response.status_code, reason, response.headers, url)
    except httpx.TimeoutException as exc:
        if isinstance(exc.__cause__, _NameTimeout):
            return Outcome("retry", str(exc))
        return Outcome("retry", f"{late} ({type(exc).__name__})")
    except httpx.HTTPError as exc:  # connection refused or reset, DNS, protocol errors
        if time.monotonic() >= deadline:
            return Outcome("retry", f"{late} (cut off)")
        return Outcome("retry", f"{type(exc).__name__}: {exc}")
    finally:
        finished.set()
        sockets.close()


AddrInfo = list[tuple[Any, Any, int, str, tuple[Any, ...]]]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _NameTimeout(httpcore.ConnectTimeout):
    """Name resolution did not end by the deadline."""


class _Resolver(httpcore.SyncBackend):
    """httpcore's network backend with name resolution bounded by the connect timeout.

    ``getaddrinfo`` cannot be interrupted: it runs in a daemon thread, waited for until
    the deadline and then abandoned. While an abandoned lookup of a host has not
    returned, connecting to that host fails at once instead of starting another one.
    IP literals connect directly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stuck: dict[str, Future[AddrInfo]] = {}

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if _is_ip(host):
            return super().connect_tcp(host, port, timeout, local_address, socket_options)
        deadline = None if timeout is None else time.monotonic() + timeout
        errors: list[httpcore.ConnectError] = []
        for *_, sockaddr in self._resolve(host, port, timeout):
            numeric = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
            literal = socket.getnameinfo(sockaddr, numeric)[0]  # an IPv6 scope included
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise httpcore.ConnectTimeout("timed out")
            try:
                return super().connect_tcp(literal, port, left, local_address, socket_options)
            except httpcore.ConnectError as exc:
                errors.append(exc)
        raise errors[0] if errors else httpcore.ConnectError(f"no address for {host}")

    def _resolve(self, host: str, port: int, timeout: float | None) -> AddrInfo:
        with self._lock:
            stuck = self._stuck.pop(host, None)
            if stuck is not None and not stuck.done():
                self._stuck[host] = stuck
                raise _NameTimeout(
                    f"name resolution of {host} still pending (an earlier one got no answer)"
                )
            future: Future[AddrInfo] = Future()

            def lookup() -> None:
                try:
                    future.set_result(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
                except BaseException as exc:
                    future.set_exception(exc)

            threading.Thread(target=lookup, name=f"resolve {host}", daemon=True).start()
        if not wait([future], timeout).done:
            with self._lock:
                self._stuck[host] = future
            raise _NameTimeout(f"no answer within {timeout:g} s (name resolution of {host})")
        try:
            return future.result()
        except OSError as exc:
            raise httpcore.ConnectError(f"name resolution of {host}: {exc}") from exc


class _Client:
    """An HTTP client opened on first use and again after :meth:`close`; its connections
    resolve names with :class:`_Resolver`."""

    def __init__(self) -> None:
        self._client: httpx.Client | None = None
        self._resolver = _Resolver()
        self.abort: threading.Event | None = None  # set: cut the request in flight

    def get(self) -> httpx.Client:
        """The client; a ValueError naming the proxy variables when httpx cannot make one."""
        if self._client is None or self._client.is_closed:
            # No kept-alive connections: each request's socket is its own, for post's watchdog.
            try:
                client = httpx.Client(
                    headers={"User-Agent": USER_AGENT},
                    limits=httpx.Limits(max_keepalive_connections=0),
                )
            except (ImportError, ValueError) as exc:  # a proxy httpx cannot use
                raise ValueError(
                    f"cannot make an HTTP client ({exc}); fix or unset the proxy variables "
                    "HTTP_PROXY, HTTPS_PROXY and ALL_PROXY"
                ) from None
            # httpx has no option for httpcore's network backend; set it on every transport
            # (the proxies' from the environment included).
            for transport in (client._transport, *client._mounts.values()):
                if isinstance(transport, httpx.HTTPTransport):
                    transport._pool._network_backend = self._resolver
            self._client = client
        return self._client

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Outcome:
        """:func:`post` on this client; ``retry`` when no client can be made."""
        try:
            client = self.get()
        except ValueError as exc:
            return Outcome("retry", str(exc))
        return post(client, url, body, headers, timeout_s, self.abort)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _printable(text: str, limit: int) -> str:
    """``text`` with control and format characters escaped (a record's text reaches
    notification templates and terminals) and cut to ``limit`` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ResolvedEpisodes:
    """Episodes (``alert_id``) a receiver has resolved, newest last, at most
    :data:`MAX_RESOLVED_KEPT`: a firing record of one of them arriving later (replayed,
    or out of order) is stale, and sent it would page again for an episode that ended."""

    def __init__(self, alert_ids: Iterable[str] = ()) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        for alert_id in alert_ids:
            self.add(alert_id)

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, alert_id: str) -> None:
        self._ids[alert_id] = None
        self._ids.move_to_end(alert_id)
        while len(self._ids) > MAX_RESOLVED_KEPT:
            self._ids.popitem(last=False)

    def current(self, batch: Sequence[Pending]) -> list[Pending]:
        """``batch`` without the firing alerts of episodes resolved before them."""
        kept: list[Pending] = []
        ended: set[str] = set()
        for pending in batch:
            m = pending.message
            if m.status == "resolved":
                ended.add(m.alert_id)
            elif m.alert_id in ended or m.alert_id in self._ids:
                continue
            kept.append(pending)
        return kept


class AlertmanagerReceiver:
    """One Alertmanager (every replica of an HA cluster is its own receiver, as with
    Prometheus). ``url`` is its base address (``http://host:9093``) or the full
    ``.../api/v2/alerts``. Keeps the alerts it has told Alertmanager are firing, to
    re-send them every ``resend_interval_s``."""

    max_batch = ALERTMANAGER_BATCH

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        resend_interval_s: float = 60.0,
        generator_url: str = "roadcast://alerts/{alert_id}",
    ) -> None:
        _check_url(url, "alertmanager")
        base = url.rstrip("/")
        self.url = base if base.endswith("/api/v2/alerts") else f"{base}/api/v2/alerts"
        self.name = safe_name("alertmanager", url)
        self.timeout_s = timeout_s
        self.resend_interval_s = resend_interval_s
        self.generator_url = generator_url
        self.firing: dict[str, Pending] = {}  # dedup_key -> the latest firing alert
        self.resolved = ResolvedEpisodes()
        self._next_resend = time.monotonic() + resend_interval_s
        self._client = _Client()
        self._client.get()  # a proxy setting httpx cannot use: refused now, not per alert

    # --- payloads ---------------------------------------------------------------------

    @staticmethod
    def labels(pending: Pending) -> dict[str, str]:
        """The labels that identify an alert in Alertmanager."""
        m = pending.message
        labels = {
            "alertname": ALERTNAME,
            "sensor": _printable(m.sensor, MAX_LABEL_CHARS),
            "detector": _printable(m.detector, MAX_LABEL_CHARS),
            "severity": m.severity,
        }
        if pending.incident:
            labels["incident"] = _printable(pending.incident, MAX_LABEL_CHARS)
        return labels

    def payload(
        self, pending: Pending, ends_at: datetime, now: datetime | None = None
    ) -> dict[str, Any]:
        """The postable alert of ``pending``, ending at ``ends_at``; it starts no later
        than ``now`` (default: the clock), whatever a producer's clock said."""
        m = pending.message
        starts = min(m.first_seen, now or datetime.now(UTC))
        seen = f"{m.observed:.6g}" if m.observed is not None else "no reading"
        values = f"Observed {seen}"
        if m.expected is not None:
            values += f", expected {m.expected:.6g}"
        if m.lo is not None and m.hi is not None:
            values += f" (interval {m.lo:.6g} to {m.hi:.6g})"
        values += f" at {format_timestamp(m.ts)}."
        description = f"{m.reason.rstrip('.')}. {values}" if m.reason else values
        annotations = {
            "summary": f"{m.detector} anomaly on sensor {m.sensor} (score {m.score:.6g})",
            "description": description,
            "alert_id": m.alert_id,
            "score": f"{m.score:.6g}",
            "observed": _number(m.observed),
            "expected": _number(m.expected),
            "lower": _number(m.lo),
            "upper": _number(m.hi),
            "last_seen": format_timestamp(m.last_seen),
        }
        link = {
            k: quote(v, safe="", errors="replace")
            for k, v in (("sensor", m.sensor), ("detector", m.detector), ("alert_id", m.alert_id))
        }
        return {
            "labels": self.labels(pending),
            "annotations": {
                k: _printable(v, MAX_ANNOTATION_CHARS) for k, v in annotations.items() if v
            },
            "startsAt": format_timestamp(starts),
            "endsAt": format_timestamp(max(ends_at, starts)),
            "generatorURL": self.generator_url.format(**link),
        }

    def _valid_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=VALID_FOR_RESENDS * self.resend_interval_s)

    # --- requests ---------------------------------------------------------------------

    def deliver(self, batch: Sequence[Pending]) -> Outcome:
        """Send ``batch`` in order; the firing set follows what Alertmanager took. A firing
        alert of an episode already resolved is stale: taken, not sent."""
        now = datetime.now(UTC)
        batch = self.resolved.current(batch)
        if not batch:
            return Outcome("accepted")
        alerts = []
        current: dict[str, Pending | None] = {}  # what the batch so far made of each key
        for pending in batch:
            m = pending.message
            key = m.dedup_key
            before = current[key] if key in current else self.firing.get(key)
            if before is not None and self.labels(before) != self.labels(pending):
                alerts.append(self.payload(before, now, now))  # the old label set ends now
            # A resolution ends it now at the latest: one stamped ahead (a producer's
            # clock) would keep it active in Alertmanager until then.
            ends = min(m.ts, now) if m.status == "resolved" else self._valid_until(now)
            alerts.append(self.payload(pending, ends, now))
            current[key] = None if m.status == "resolved" else pending
        outcome = self._post(alerts)
        # A rejected request of several alerts is sent again in halves: no bookkeeping yet.
        if outcome.kind == "accepted" or (outcome.kind == "rejected" and len(batch) == 1):
            for pending in batch:
                key = pending.message.dedup_key
                if pending.message.status == "resolved":
                    self.firing.pop(key, None)
                    self.resolved.add(pending.message.alert_id)
                elif outcome.kind == "accepted":
                    self.firing[key] = pending
        return outcome

    def due(self) -> float:
        """Seconds until the next resend (0: now)."""
        return max(0.0, self._next_resend - time.monotonic())

    def resend(self) -> Outcome | None:
        """Re-send every firing alert with a fresh ``endsAt`` (None: none is firing)."""
        self._next_resend = time.monotonic() + self.resend_interval_s
        now = datetime.now(UTC)
        alerts = [self.payload(p, self._valid_until(now)) for p in self.firing.values()]
        if not alerts:
            return None
        return self._post_halving(alerts)

    def restore(self, firing: Iterable[Pending], resolved: Iterable[str] = ()) -> None:
        """Start from these firing alerts (read back from Kafka; they are re-sent now) and
        the episodes resolved before them (their later firing records are stale)."""
        self.firing = {p.message.dedup_key: p for p in firing}
        self.resolved = ResolvedEpisodes(resolved)
        self._next_resend = time.monotonic()

    def _post_halving(self, alerts: list[dict[str, Any]]) -> Outcome:
        """Post ``alerts`` in requests of at most ``max_batch``, halving a request that is
        rejected (413: too large) until it passes or holds one alert, which is skipped.
        Ends at the first answer to retry; else the last rejection, or accepted."""
        outcome = Outcome("accepted")
        for start in range(0, len(alerts), self.max_batch):
            for _, answer in halving(alerts[start : start + self.max_batch], self._post):
                if answer is not None and answer.kind != "accepted":
                    outcome = answer
                    if answer.kind != "rejected":
                        return outcome
        return outcome

    def _post(self, alerts: list[dict[str, Any]]) -> Outcome:
        # UTF-8 as it is: escaping non-ASCII text (json.dumps' default) triples its size.
        body = orjson.dumps(alerts)
        headers = {"Content-Type": "application/json"}
        return self._client.post(self.url, body, headers, self.timeout_s)

    def abort_on(self, stop: threading.Event) -> None:
        self._client.abort = stop

    def close(self) -> None:
        self._client.close()


def _utf8(message: AlertMessage) -> AlertMessage:
    """``message`` with any text UTF-8 cannot encode (a lone surrogate that a hostile
    record's JSON escapes decode to) replaced by ``?``."""
    fixed: dict[str, Any] = {
        f.name: value.encode("utf-8", "replace").decode()
        for f in dataclasses.fields(message)
        if isinstance(value := getattr(message, f.name), str)
        and value.encode("utf-8", "replace").decode() != value
    }
    return dataclasses.replace(message, **fixed) if fixed else message


def idempotency_key(message: AlertMessage) -> str:
    """The same for every delivery of one alert record (``msg_`` + 32 hex digits)."""
    text = f"{message.alert_id}|{message.status}|{format_timestamp(message.ts)}"
    return "msg_" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class WebhookReceiver:
    """A generic webhook: one signed POST per alert (see the module docstring)."""

    max_batch = 1

    def __init__(self, url: str, secret: SecretStr, *, timeout_s: float = 10.0) -> None:
        _check_url(url, "webhook")
        self.url = url
        self.name = safe_name("webhook", url)
        self.timeout_s = timeout_s
        self._webhook = Webhook(secret.get_secret_value())
        self.resolved = ResolvedEpisodes()
        self._client = _Client()
        self._client.get()  # a proxy setting httpx cannot use: refused now, not per alert

    @staticmethod
    def body(pending: Pending) -> str:
        m = _utf8(pending.message)
        data = json.loads(encode_alert(m))
        data["incident"] = pending.incident.encode("utf-8", "replace").decode()
        doc = {"type": f"roadcast.alert.{m.status}", "timestamp": data["ts"], "data": data}
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))

    def deliver(self, batch: Sequence[Pending]) -> Outcome:
        """Send the alert, signed; a firing alert of an episode already resolved is
        stale: taken, not sent."""
        current = self.resolved.current(batch)
        if not current:
            return Outcome("accepted")
        (pending,) = current
        body = self.body(pending)
        key = idempotency_key(pending.message)
        now = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": key,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._webhook.sign(key, now, body),
            "Idempotency-Key": key,
        }
        outcome = self._client.post(self.url, body.encode(), headers, self.timeout_s)
        if pending.message.status == "resolved" and outcome.kind in ("accepted", "rejected"):
            self.resolved.add(pending.message.alert_id)
        return outcome

    def due(self) -> float:
        return float("inf")

    def resend(self) -> Outcome | None:
        return None

    def restore(self, firing: Iterable[Pending], resolved: Iterable[str] = ()) -> None:
        """Webhooks get each record once: nothing to re-send; ``resolved`` makes the
        episodes' later firing records stale."""
        self.resolved = ResolvedEpisodes(resolved)

    def abort_on(self, stop: threading.Event) -> None:
        self._client.abort = stop

    def close(self) -> None:
        self._client.close()
