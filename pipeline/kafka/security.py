"""Deadlines and plain-language causes for Kafka connection setup (TLS, SASL).

kafka-python 3.0 bounds the TCP connect and the SASL exchange by the connection
deadline, but not the TLS handshake: ``KafkaSSLTransport.handshake`` waits in its
selector until the server answers. A plaintext listener that receives a TLS
ClientHello reads it as the start of a Kafka request and waits for the rest, so a
client configured for SSL or SASL_SSL hangs forever, past ``bootstrap_timeout_ms``.

:func:`tls_context` builds the ``ssl.SSLContext`` kafka-python would build from the
same settings, with one difference: its sockets (:class:`_DeadlineSSLSocket`) start
a timer on the first handshake step and shut the socket down when the handshake has
not finished by then, which wakes kafka-python's selector; the handshake then fails
with a message that names the likely cause. :class:`ConnectFailures` collects the
causes kafka-python reports while a client is built (TLS, SASL, disconnects) so that
the factories in :mod:`pipeline.kafka.clients` can say why no broker answered.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from types import TracebackType
from typing import Any, NoReturn

from pipeline.settings import Settings, SettingsError

PROTOCOL_HINT = "is ROADCAST_SECURITY_PROTOCOL right?"
_PLAINTEXT_REASONS = {
    "WRONG_VERSION_NUMBER",
    "RECORD_LAYER_FAILURE",
    "UNKNOWN_PROTOCOL",
    "HTTP_REQUEST",
    "PACKET_LENGTH_TOO_LONG",
    "UNEXPECTED_RECORD",
}


class HandshakeTimeout(TimeoutError):
    """A TLS handshake that did not finish by its deadline."""


class DeadlineTLSContext(ssl.SSLContext):
    """An ``SSLContext`` whose client sockets fail a TLS handshake after ``timeout_s``.

    ``last_failure`` is the cause of the latest failed handshake, in words.
    """

    timeout_s: float = 10.0
    last_failure: str | None = None


class _DeadlineSSLSocket(ssl.SSLSocket):
    """An ``SSLSocket`` whose handshake fails once its context's deadline has passed."""

    _timer: threading.Timer | None = None
    _expired = False

    def do_handshake(self, block: bool = False) -> None:
        context = self.context
        timeout_s = getattr(context, "timeout_s", DeadlineTLSContext.timeout_s)
        timer = self._timer
        if timer is None:
            timer = self._timer = threading.Timer(timeout_s, self._expire)
            timer.daemon = True
            timer.start()
        if self._expired:
            self._fail(HandshakeTimeout(f"no TLS handshake in {timeout_s:g} s"))
        try:
            super().do_handshake(block)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except Exception as exc:
            self._fail(exc)
        timer.cancel()

    def _expire(self) -> None:
        """Timer thread: mark the handshake late and wake the selector waiting on it."""
        self._expired = True
        with contextlib.suppress(OSError):  # already closed by the client
            socket.socket.shutdown(self, socket.SHUT_RDWR)

    def _fail(self, exc: BaseException) -> NoReturn:
        if self._timer is not None:
            self._timer.cancel()
        cause = describe_tls_failure(exc, self.server_hostname)
        context = self.context
        if isinstance(context, DeadlineTLSContext):
            context.last_failure = cause
        raise ConnectionError(cause) from exc


def describe_tls_failure(exc: BaseException, host: str | None = None) -> str:
    """The likely cause of a failed client TLS handshake, naming the setting to check."""
    where = f" from {host}" if host else ""
    if isinstance(exc, HandshakeTimeout):
        return (
            f"{exc}{where}: the listener is probably plaintext (it waits for a Kafka "
            f"request instead of answering TLS); {PROTOCOL_HINT}"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = exc.verify_message or str(exc)
        if "hostname" in message.lower() or "ip address mismatch" in message.lower():
            return (
                f"the broker's TLS certificate is not for {host or 'this host'} ({message}): "
                "use the name in the certificate in ROADCAST_BOOTSTRAP_SERVERS or set "
                "ROADCAST_SSL_CHECK_HOSTNAME=false"
            )
        return (
            f"the broker's TLS certificate is not trusted ({message}): set "
            "ROADCAST_SSL_CAFILE to the CA that signed it"
        )
    if isinstance(exc, ssl.SSLError) and exc.reason in _PLAINTEXT_REASONS:
        return f"the broker answered in plaintext, not TLS; {PROTOCOL_HINT}"
    if isinstance(exc, ssl.SSLEOFError | ConnectionError | EOFError):
        return (
            f"the broker closed the connection during the TLS handshake: a plaintext "
            f"listener, or one that wants a client certificate (ROADCAST_SSL_CERTFILE); "
            f"{PROTOCOL_HINT}"
        )
    return f"the TLS handshake failed ({exc}); check the ROADCAST_SSL_* settings"


def tls_context(settings: Settings, timeout_s: float) -> DeadlineTLSContext:
    """The context kafka-python builds from ``settings`` (TLS 1.2+, CA file or system
    CAs, client certificate), with a handshake deadline of ``timeout_s``.

    Raises
    ------
    SettingsError
        When a CA, certificate or key file cannot be loaded (naming the variable).
    """
    context = DeadlineTLSContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = settings.ssl_check_hostname
    context.timeout_s = timeout_s
    context.sslsocket_class = _DeadlineSSLSocket
    try:
        if settings.ssl_cafile is not None:
            context.load_verify_locations(str(settings.ssl_cafile))
        else:
            context.load_default_certs()
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(
            f"ROADCAST_SSL_CAFILE: cannot load {settings.ssl_cafile} as PEM CA certificates ({exc})"
        ) from None
    if settings.ssl_certfile is not None:
        password = settings.ssl_password.get_secret_value() if settings.ssl_password else None
        try:
            context.load_cert_chain(
                str(settings.ssl_certfile),
                str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
                password,
            )
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(
                "ROADCAST_SSL_CERTFILE / ROADCAST_SSL_KEYFILE / ROADCAST_SSL_PASSWORD: cannot "
                f"load the client certificate {settings.ssl_certfile} ({exc})"
            ) from None
    return context


class ConnectFailures(logging.Handler):
    """While active (``with``), collects the errors kafka-python reports for connection
    attempts, to explain a failed bootstrap (:meth:`cause`)."""

    _LOGGER = "kafka.net.manager"

    def __init__(self, context: DeadlineTLSContext | None = None) -> None:
        super().__init__(logging.WARNING)
        self.context = context
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        self.errors.extend(a for a in args if isinstance(a, BaseException))

    def __enter__(self) -> ConnectFailures:
        logging.getLogger(self._LOGGER).addHandler(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        logging.getLogger(self._LOGGER).removeHandler(self)

    def cause(self, config: dict[str, Any], error: BaseException | None = None) -> str | None:
        """The likely reason no broker answered, in words, or None when unknown."""
        from kafka.errors import (
            KafkaConnectionError,
            SaslAuthenticationFailedError,
            UnsupportedSaslMechanismError,
        )

        if self.context is not None and self.context.last_failure:
            return self.context.last_failure
        errors = [*self.errors, *([error] if error is not None else [])]
        mechanism = config.get("sasl_mechanism")
        for exc in reversed(errors):
            if isinstance(exc, SaslAuthenticationFailedError):
                return (
                    f"SASL {mechanism} authentication failed ({exc}): check "
                    "ROADCAST_SASL_USERNAME and ROADCAST_SASL_PASSWORD"
                )
            if isinstance(exc, UnsupportedSaslMechanismError):
                return (
                    f"the broker does not offer SASL mechanism {mechanism} on this listener; "
                    f"{PROTOCOL_HINT} (and ROADCAST_SASL_MECHANISM?)"
                )
            plaintext = config.get("security_protocol") in ("PLAINTEXT", "SASL_PLAINTEXT")
            hung_up = any(t in str(exc) for t in ("disconnected", "reset by peer"))
            if plaintext and isinstance(exc, KafkaConnectionError) and hung_up:
                return (
                    "the broker closed the connection without answering: if its "
                    "listener uses TLS, set ROADCAST_SECURITY_PROTOCOL to SSL or SASL_SSL"
                )
        return None
