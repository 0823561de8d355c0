"""The one place where credentials are scrubbed from what leaves a delivery channel.

Every failure reason and receipt detail a channel produces passes through :func:`send_redacted` (the channel
workers and the test-alert paths both send through it) before it reaches ``/health`` (``last_error``), the log, the
metrics or the test-alert answer. Receivers and proxies echo requests in their error pages, so the scrubbing
does not rely on the channels being careful: a channel's :meth:`~SecretKeeper.secrets` (its URL's credentials,
token-like path and query; the SMTP password) and the generic credential forms of
:class:`memmon.kits.redaction.Redactor` are replaced by ``***``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from memmon.alerting.channel import Channel, Delivery, DeliveryFailed, Receipt
from memmon.kits.redaction import Redactor


@runtime_checkable
class SecretKeeper(Protocol):
    """A channel configured with secrets (webhook, Slack, Alertmanager, email): what its texts must never show."""

    def secrets(self) -> set[str]: ...


def redactor_for(channel: object) -> Redactor:
    """A redactor for ``channel``'s configured secrets (none for a channel without any, such as the log)."""
    return Redactor(channel.secrets() if isinstance(channel, SecretKeeper) else ())


def redacted_failure(failure: DeliveryFailed, redact: Redactor) -> DeliveryFailed:
    """``failure`` with its reason scrubbed (the other fields kept)."""
    return DeliveryFailed(
        redact(failure.reason),
        retryable=failure.retryable,
        retry_after=failure.retry_after,
        status=failure.status,
    )


async def send_redacted(channel: Channel, delivery: Delivery, redact: Redactor | None = None) -> Receipt:
    """``channel.send(delivery)`` with the receipt detail and any failure reason scrubbed.

    A :class:`DeliveryFailed` comes out with a scrubbed reason; any other exception (a channel bug) is turned
    into a retryable :class:`DeliveryFailed` whose reason is the scrubbed exception text, chained to the original
    (whose text is not scrubbed: log it only through :func:`memmon.kits.redaction.redacted_traceback`).
    """
    redact = redact or redactor_for(channel)
    try:
        receipt = await channel.send(delivery)
    except DeliveryFailed as failure:
        raise redacted_failure(failure, redact) from None
    except TimeoutError:
        raise  # the caller's deadline: it reports it itself
    except Exception as exc:
        raise DeliveryFailed(redact(f"{type(exc).__name__}: {exc}")) from exc
    return Receipt(receipt.status, redact(receipt.detail))
