"""Webhook signatures: ``X-Feedpipe-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}."
+ body)>`` over the signed ``X-Feedpipe-Timestamp`` (the scheme of Stripe and GitHub webhooks)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

TIMESTAMP_HEADER: Final = "x-feedpipe-timestamp"
SIGNATURE_HEADER: Final = "x-feedpipe-signature"
SIGNATURE_PREFIX: Final = "sha256="


def sign(secret: bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Feedpipe-Signature`` value: ``"sha256=" + hex HMAC-SHA256(secret,
    f"{timestamp}.".encode() + body)`` (what a sender computes; used by tests and the bench)."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify_signature(secret: bytes, timestamp: str, body: bytes, header: str) -> bool:
    """True when one of the comma-separated ``sha256=<hex>`` values of ``header`` is the HMAC of
    ``timestamp.body``; every candidate is compared with :func:`hmac.compare_digest`."""
    expected = sign(secret, timestamp, body).encode()
    ok = False
    for part in header.split(","):
        candidate = part.strip().encode("ascii", "replace")
        ok |= hmac.compare_digest(expected, candidate)
    return ok
