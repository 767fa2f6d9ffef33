"""Webhook receiver for push CMSs: ``POST /v1/webhooks/{source}`` -> the CMS ingest topic
(``topology().ingest.cms``).

The CMS pushes its own JSON (a WordPress REST post object, or a Drupal JSON:API document with
one ``node--article``; a list of posts / a JSON:API collection is accepted too, one event per
item) and signs it like Stripe and GitHub webhooks do:

    X-Feedpipe-Timestamp: <unix seconds>
    X-Feedpipe-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}." + raw body)>

The secret is per source and read from the environment variable *named* in the source config
(the value is never logged). The signature is compared in constant time
(:func:`hmac.compare_digest`); a timestamp further than ``tolerance_s`` (default 300 s) from
the server clock is refused, so a captured request cannot be replayed later (the timestamp is
signed, so it cannot be refreshed without the secret). Several ``sha256=`` values separated
by commas are accepted (any one matching), for secret rotation on the sender side.

Answers (JSON bodies, ``{"error": code, "reason": text}`` for errors):

| status | when |
|---|---|
| 202 ``{"event_id", "event_ids", "count"}`` | every event was acknowledged (``acks=all``) |
| 400 ``invalid_json`` / ``bad_timestamp`` | body is not JSON / timestamp header is not an integer |
| 401 ``missing_signature`` / ``bad_signature`` / ``stale_timestamp`` | authentication failed |
| 404 ``unknown_source`` | no such configured source |
| 413 ``body_too_large`` | ``Content-Length`` or the streamed body exceeds ``max_body_bytes`` |
| 422 ``not_a_post`` / ``missing_id`` / ``jsonapi_error`` / ... | JSON that is not a post / node |
| 503 ``kafka_unavailable`` / ``kafka_error`` | no ack within ``ack_timeout_s``; delivery error |

A 503 means "not confirmed": the event may still be delivered later; the sender should retry,
which is safe because event ids are deterministic (source, id, sha256 of the payload) and the
pipeline deduplicates by content id and content hash. Splitting a body and the upsert/delete rule
are those of every other path (:mod:`feedpipe.cms.wordpress`, :mod:`feedpipe.cms.drupal`); the
payload of a single-object body is the raw body, unchanged.

Modules: :mod:`.signature` (signing and verification), :mod:`.sources` (a push source and its
secret), :mod:`.bodies` (a body -> raw events), :mod:`.app` (the ASGI app), :mod:`.server`
(uvicorn, one or several receiver processes, the command line).

Run it: ``python -m connectors.webhook --source NAME:KIND:BRAND:SECRET_ENV [...]`` (binds
127.0.0.1:8090 by default).
"""
