"""The ``email`` channel: one multipart (text + HTML) mail per alert transition, sent with stdlib ``smtplib``.

``smtplib`` blocks, so each send runs in its own daemon thread; ``timeout`` bounds the whole delivery (a server
that drips one byte at a time never trips a per-read socket timeout): at the deadline, on cancellation and on
:meth:`EmailChannel.close` the socket is shut down, which ends the thread's read at once, and the failure says
"timed out after N s". Security: ``starttls`` (submission, port 587, RFC 3207), ``ssl`` (implicit TLS,
port 465, RFC 8314) or ``none``; certificates are verified against the system store or ``ca_file`` unless
``verify_tls`` is False. ``LOGIN`` happens when a username is given (smtplib picks CRAM-MD5, PLAIN or LOGIN).

Every attempt of one transition builds the same message: ``Message-ID`` is derived from the idempotency key
(so mail systems can drop a retried copy), ``Date`` is the transition's time, and ``X-Memmon-Idempotency-Key``
carries the key itself.

Classification (RFC 5321 §4.2.1: 4yz is a transient, 5yz a permanent negative reply):

* any SMTP reply 4yz (sender, recipients, data, auth), connection errors, timeouts, disconnects -> retryable;
* 5yz replies: refused sender, all recipients refused, rejected data, failed authentication -> final;
* missing STARTTLS/AUTH support, failed certificate verification -> final (configuration errors).

Some recipients refused and the others accepted counts as delivered (the receipt says who was refused).
The password never appears in a reason, a receipt or the channel's ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Literal, TypeVar

from memmon.alerting.channel import Delivery, DeliveryFailed, Receipt
from memmon.alerting.kinds import is_notice
from memmon.kits.isotime import iso_utc
from memmon.kits.redaction import Redactor, credential_forms
from memmon.model import Alert

Security = Literal["none", "starttls", "ssl"]
T = TypeVar("T")

_NOT_ATEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_HEADER_COLOUR = {"warning": "#F2C744", "critical": "#E01E5A", "emergency": "#8B0000", "resolved": "#2EB67D"}


def message_id(idempotency_key: str) -> str:
    """``<key@memmon>``, the same on every attempt of a transition.

    A key that is not a valid RFC 5322 ``id-left`` (``<alert id>:<state>`` has a colon) has each run of other
    characters turned into a dot and a hash of the whole key appended, so distinct keys stay distinct.
    """
    parts = [part for part in _NOT_ATEXT.split(idempotency_key) if part]
    left = ".".join(parts)
    if left != idempotency_key or len(left) > 120:
        digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:12]
        left = ".".join([*parts, digest]) if len(left) <= 120 else digest
    return f"<{left}@memmon>"


def _smtp_text(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return " ".join(text.split())[:200]


class EmailChannel:
    """Mails each delivery to ``recipients`` through one SMTP server."""

    name = "email"

    def __init__(
        self,
        recipients: Sequence[str],
        *,
        host: str,
        port: int,
        security: Security = "starttls",
        username: str | None = None,
        password: str | None = None,
        from_address: str | None = None,
        timeout: float = 10.0,
        ca_file: str | None = None,
        verify_tls: bool = True,
    ) -> None:
        """``ValueError`` for no recipient or an unknown ``security``; a missing ``ca_file`` raises here too."""
        if isinstance(recipients, str):
            recipients = [recipients]
        if not recipients:
            raise ValueError("the email channel needs at least one recipient")
        if security not in ("none", "starttls", "ssl"):
            raise ValueError(f"unknown SMTP security {security!r}; expected none, starttls or ssl")
        self.recipients = tuple(recipients)
        self.host = host
        self.port = port
        self.security: Security = security
        self.username = username
        self._password = password
        self._hostname = socket.gethostname()
        self.from_address = from_address or f"memmon@{self._hostname}"
        self.timeout = timeout
        self._attempts: set[_Attempt] = set()
        self._tls: ssl.SSLContext | None = None
        if security != "none":
            self._tls = ssl.create_default_context(cafile=ca_file)
            if not verify_tls:
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE

    def __repr__(self) -> str:
        return f"EmailChannel({self.host}:{self.port}, {self.security}, {len(self.recipients)} recipients)"

    # -- the message -------------------------------------------------------------------------------------------

    def subject(self, delivery: Delivery) -> str:
        """``[memmon] CRITICAL: process_memory on web-1`` (``RESOLVED critical``, ``TEST`` marked)."""
        alert = delivery.alert
        status = (
            alert.severity.label.upper() if alert.state == "firing" else f"RESOLVED {alert.severity.label}"
        )
        test = "TEST " if delivery.test else ""
        return f"[memmon] {test}{status}: {alert.component} on {self._host_of(alert)}"

    def build_message(self, delivery: Delivery) -> EmailMessage:
        """The mail for ``delivery``: identical for every attempt (headers included)."""
        alert = delivery.alert
        msg = EmailMessage()
        msg["Subject"] = self.subject(delivery)
        msg["From"] = self.from_address
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(alert.timestamp, usegmt=True)
        msg["Message-ID"] = message_id(delivery.idempotency_key)
        msg["X-Memmon-Idempotency-Key"] = delivery.idempotency_key
        msg["X-Memmon-Alert-Id"] = alert.id
        msg["X-Memmon-Fingerprint"] = alert.fingerprint
        if delivery.test:
            msg["X-Memmon-Test"] = "yes"
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies to alerts
        rows = self._rows(alert)
        msg.set_content(self._text_body(delivery, rows))
        msg.add_alternative(self._html_body(delivery, rows), subtype="html")
        return msg

    def _host_of(self, alert: Alert) -> str:
        host = alert.metadata.get("host")
        return str(host) if host else self._hostname

    def _rows(self, alert: Alert) -> list[tuple[str, str]]:
        rows = [
            ("Severity", alert.severity.label),
            ("State", alert.state),
            ("Component", alert.component),
            ("Target", alert.target),
            ("Host", self._host_of(alert)),
        ]
        if not is_notice(alert):  # a notice (an action and its result) is judged against no threshold
            rows += [("Usage", f"{alert.memory_usage:.1f} MiB"), ("Threshold", f"{alert.threshold:.1f} MiB")]
        percent = alert.metadata.get("percent")
        if isinstance(percent, int | float) and not isinstance(percent, bool):
            source = alert.metadata.get("limit_source")
            rows.append(("Percent", f"{percent:.1f}%" + (f" of the {source} limit" if source else "")))
        rows.append(("Started", iso_utc(alert.started_at) or "?"))
        if alert.resolved_at is not None:
            rows.append(("Resolved", iso_utc(alert.resolved_at) or "?"))
        rows += [("Alert id", alert.id), ("Fingerprint", alert.fingerprint)]
        return rows

    @staticmethod
    def _text_body(delivery: Delivery, rows: list[tuple[str, str]]) -> str:
        lines = []
        if delivery.test:
            lines += ["TEST alert sent by `memmon test-alert`: nothing is wrong.", ""]
        lines += [delivery.alert.message, ""]
        width = max(len(title) for title, _ in rows)
        lines += [f"{title + ':':<{width + 1}} {value}" for title, value in rows]
        lines += ["", f"Idempotency key: {delivery.idempotency_key}", "-- memmon"]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _html_body(delivery: Delivery, rows: list[tuple[str, str]]) -> str:
        alert = delivery.alert
        key = "resolved" if alert.state != "firing" else alert.severity.label
        colour = _HEADER_COLOUR.get(key, "#888888")
        esc = html.escape
        test = (
            "<p><strong>TEST</strong> alert sent by <code>memmon test-alert</code>.</p>"
            if delivery.test
            else ""
        )
        table = "".join(
            f'<tr><th align="left" style="padding-right:1em">{esc(title)}</th><td>{esc(value)}</td></tr>'
            for title, value in rows
        )
        return (
            "<!DOCTYPE html><html><body>"
            f'<div style="border-left:6px solid {colour};padding-left:10px">'
            f"{test}<p><strong>{esc(alert.message)}</strong></p>"
            f"<table>{table}</table>"
            f'<p style="color:#888888">Idempotency key: {esc(delivery.idempotency_key)}</p>'
            "</div></body></html>"
        )

    # -- sending -----------------------------------------------------------------------------------------------

    async def send(self, delivery: Delivery) -> Receipt:
        """Send the mail once, in a worker thread; :class:`DeliveryFailed` when the server does not take it.

        ``timeout`` bounds the whole delivery, not each read: at the deadline (or when the caller cancels) the
        connection is shut down from here, which ends the thread's blocking read at once.
        """
        msg = self.build_message(delivery)
        attempt = _Attempt()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[dict[str, tuple[int, bytes]]] = loop.create_future()
        self._attempts.add(attempt)

        def run() -> None:
            try:
                result = self._send_blocking(msg, attempt)
            except BaseException as exc:  # handed to the loop, raised there
                loop.call_soon_threadsafe(_settle, done, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, done, result, None)

        # A daemon thread, not the default executor: interpreter exit never waits for a stuck server.
        threading.Thread(target=run, name="memmon-smtp", daemon=True).start()
        deadline = loop.call_later(self.timeout, attempt.abort, "timeout")
        try:
            refused = await done  # cancelling this cancels ``done``: the thread's late outcome is dropped
        except asyncio.CancelledError:
            attempt.abort("cancelled")
            raise
        except Exception as exc:
            raise self._failure(exc, timed_out=attempt.reason == "timeout") from None
        finally:
            deadline.cancel()
            self._attempts.discard(attempt)
        accepted = len(self.recipients) - len(refused)
        detail = f"accepted for {accepted} recipients"
        if refused:
            detail += "; refused: " + ", ".join(
                f"{address} ({code} {_smtp_text(text)})" for address, (code, text) in refused.items()
            )
        return Receipt(250, self._scrub(detail)[:200])

    def _send_blocking(self, msg: EmailMessage, attempt: _Attempt) -> dict[str, tuple[int, bytes]]:
        smtp: smtplib.SMTP
        if self.security == "ssl":
            smtp = _TrackedSMTPSSL(attempt, self.host, self.port, timeout=self.timeout, context=self._tls)
        else:
            smtp = _TrackedSMTP(attempt, self.host, self.port, timeout=self.timeout)
        with smtp:
            smtp.ehlo()
            if self.security == "starttls":
                smtp.starttls(context=self._tls)
                smtp.ehlo()
            if self.username is not None:
                smtp.login(self.username, self._password or "")
            # send_message raises SMTPRecipientsRefused only when every recipient is refused.
            return smtp.send_message(msg, self.from_address, list(self.recipients))

    def _failure(self, exc: BaseException, *, timed_out: bool = False) -> DeliveryFailed:
        where = f"SMTP {self.host}:{self.port}"
        retryable = True
        status: int | None = None
        # smtplib turns a read timeout into SMTPServerDisconnected("Connection unexpectedly closed: timed out"),
        # keeping the TimeoutError as the context; our own deadline shows as a disconnect too.
        if timed_out or isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
            return DeliveryFailed(f"{where}: timed out after {self.timeout:g}s")
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in exc.recipients.values()]
            retryable = bool(codes) and all(400 <= code < 500 for code in codes)
            status = codes[0] if codes else None
            refused = ", ".join(
                f"{address} ({code} {_smtp_text(text)})" for address, (code, text) in exc.recipients.items()
            )
            reason = f"{where} refused every recipient: {refused}"
        elif isinstance(exc, smtplib.SMTPResponseException):
            status = exc.smtp_code
            retryable = not 500 <= status < 600
            what = {
                smtplib.SMTPAuthenticationError: f"authentication failed for user {self.username!r}",
                smtplib.SMTPSenderRefused: f"sender {self.from_address} refused",
                smtplib.SMTPDataError: "message refused",
                smtplib.SMTPConnectError: "refused the connection",
                smtplib.SMTPHeloError: "refused HELO/EHLO",
            }.get(type(exc), "answered an error")
            reason = f"{where} {what}: {status} {_smtp_text(exc.smtp_error)}"
        elif isinstance(exc, smtplib.SMTPNotSupportedError):
            retryable = False
            reason = (
                f"{where} does not support a required extension ({_smtp_text(str(exc))}): check security/auth"
            )
        elif isinstance(exc, smtplib.SMTPServerDisconnected):
            reason = f"{where} closed the connection unexpectedly"
        elif isinstance(exc, smtplib.SMTPException):
            # e.g. "No suitable authentication method found": configuration, not luck.
            retryable = False
            reason = f"{where}: {_smtp_text(str(exc))}"
        elif isinstance(exc, ssl.SSLCertVerificationError):
            retryable = False
            reason = f"{where}: TLS certificate verification failed ({exc.verify_message})"
        elif isinstance(exc, ssl.SSLError):
            reason = f"{where}: TLS error ({exc.reason or type(exc).__name__})"
        elif isinstance(exc, ConnectionRefusedError):
            reason = f"{where}: connection refused"
        elif isinstance(exc, socket.gaierror):
            reason = f"{where}: DNS lookup failed ({exc.strerror})"
        elif isinstance(exc, OSError):
            reason = f"{where}: {exc.strerror or type(exc).__name__}"
        else:
            reason = f"{where}: {type(exc).__name__}"
        return DeliveryFailed(self._scrub(reason), retryable=retryable, status=status)

    def secrets(self) -> set[str]:
        """The password, plain and in the base64 forms AUTH PLAIN/LOGIN send (servers may echo them)."""
        return credential_forms(self.username, self._password)

    def _scrub(self, text: str) -> str:
        """``text`` without the password in any form (see :mod:`memmon.kits.redaction`)."""
        return Redactor(self.secrets())(text)

    async def close(self) -> None:
        """Shut down the connections of sends still in flight (their threads end at once); idempotent."""
        for attempt in list(self._attempts):
            attempt.abort("closed")


def _settle(future: asyncio.Future[T], result: T | None, exc: BaseException | None) -> None:
    if future.done():  # the awaiting side was cancelled: nobody wants the outcome
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]


class _Attempt:
    """One send's SMTP connection, shut down from another thread at the deadline, on cancel or on close.

    ``socket.shutdown(SHUT_RDWR)`` wakes a thread blocked in ``recv`` on the same socket (it returns EOF), so
    smtplib's read ends at once with ``SMTPServerDisconnected``; ``close()`` alone would not wake it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._smtp: smtplib.SMTP | None = None
        self.reason: str | None = None
        """Why it was aborted (``timeout``, ``cancelled``, ``closed``), None while it was not."""

    def hold(self, smtp: smtplib.SMTP) -> None:
        """Called by the connection as it starts to connect; raises when the attempt was aborted already."""
        with self._lock:
            self._smtp = smtp
            if self.reason is not None:
                raise smtplib.SMTPServerDisconnected(f"aborted ({self.reason})")

    def abort(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
            sock = getattr(self._smtp, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _TrackedSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` that hands itself to its attempt before connecting: the greeting is read inside
    ``connect()``, and a server may drip it, so the attempt must be able to shut the socket down from then on."""

    def __init__(self, attempt: _Attempt, host: str, port: int, **kwargs: Any) -> None:
        self._attempt = attempt
        super().__init__(host, port, **kwargs)

    def connect(
        self, host: str = "localhost", port: int = 0, source_address: Any = None
    ) -> tuple[int, bytes]:
        self._attempt.hold(self)
        return super().connect(host, port, source_address)


class _TrackedSMTPSSL(smtplib.SMTP_SSL):
    """``smtplib.SMTP_SSL`` tracked like :class:`_TrackedSMTP`."""

    def __init__(self, attempt: _Attempt, host: str, port: int, **kwargs: Any) -> None:
        self._attempt = attempt
        super().__init__(host, port, **kwargs)

    def connect(
        self, host: str = "localhost", port: int = 0, source_address: Any = None
    ) -> tuple[int, bytes]:
        self._attempt.hold(self)
        return super().connect(host, port, source_address)
