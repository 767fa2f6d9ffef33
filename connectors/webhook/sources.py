"""A push source of the webhook receiver and its secret."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from feedpipe.cms import drupal, wordpress
from feedpipe.errors import ConfigError
from feedpipe.settings import secret_from_env

WebhookKind = Literal["wordpress.post", "drupal.node"]
KINDS: Final[tuple[str, ...]] = (wordpress.KIND, drupal.KIND)
DEFAULT_TOLERANCE_S: Final = 300  # Stripe's default tolerance (stripe.com/docs/webhooks/signatures)
DEFAULT_MAX_BODY: Final = 1024 * 1024  # 1 MiB


@dataclass(frozen=True, slots=True)
class WebhookSource:
    """One push source.

    Attributes:
        name: source name (URL path segment and ``RawCmsEvent.source``; part of content_id).
        kind: ``wordpress.post`` or ``drupal.node`` (how the body is read).
        brand: brand of the content.
        secret_env: NAME of the environment variable holding the HMAC secret (UTF-8 text).
        tolerance_s: accepted distance in seconds between the signed timestamp and now.
        max_body_bytes: largest accepted body in bytes.
    """

    name: str
    kind: WebhookKind
    brand: str
    secret_env: str
    tolerance_s: int = DEFAULT_TOLERANCE_S
    max_body_bytes: int = DEFAULT_MAX_BODY

    def secret(self) -> bytes:
        """The secret from the environment: variable ``secret_env``, or the file named by
        ``<secret_env>_FILE`` (:func:`feedpipe.settings.secret_from_env`).

        Raises:
            ConfigError: the variable is unset or empty, or both it and its _FILE are set
                (its value is never put in messages).
        """
        value = secret_from_env(self.secret_env)
        if value is None:
            raise ConfigError(
                f"webhook source {self.name}: environment variable {self.secret_env} "
                f"(or {self.secret_env}_FILE) is not set"
            )
        return value.get_secret_value().encode()


def parse_source_arg(text: str) -> WebhookSource:
    """``NAME:KIND:BRAND:SECRET_ENV`` -> :class:`WebhookSource`. ValueError when malformed."""
    parts = text.split(":")
    if len(parts) != 4 or parts[1] not in KINDS or not all(parts):
        raise ValueError(f"--source {text!r}: expected NAME:KIND:BRAND:SECRET_ENV, KIND in {KINDS}")
    return WebhookSource(parts[0], parts[1], parts[2], parts[3])  # type: ignore[arg-type]
