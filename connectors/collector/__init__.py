"""Event collector: ``POST /v1/events`` -> the reader-event ingest topic
(``topology().ingest.reader_events``, key ``user_id``), refused events -> ``reader.events.dlq``
(``ingest.reader_events_dlq``).

A front end posts a batch of reader events (``impression``, ``click``, ``dwell``, ``erase``)::

    POST /v1/events
    X-API-Key: <token>                 (or Authorization: Bearer <token>)
    Content-Type: application/json     (or text/plain: a navigator.sendBeacon string, whose
                                        body carries "api_key" since a beacon sends no header)

    {"events": [{"type": "click", "user_id": "U1", "content_id": "<id>",
                 "occurred_at": 1733356800000, "impression_id": "imp-7", "position": 2}]}

Field rules: :func:`connectors.collector.events.check_event`; at most
:data:`~connectors.collector.events.MAX_EVENTS` (500) events and
:data:`~connectors.collector.events.MAX_BODY_BYTES` (512 KiB) per request.

Answers (JSON; errors are ``{"error": code, "reason": text}``):

* 202 ``{"accepted", "rejected", "event_ids", "errors"}``: every record acknowledged
  (``acks=all``): the valid events on reader.events, each refused one on the DLQ (and listed in
  ``errors`` with its ``index``, ``code`` and ``reason``);
* 400 ``invalid_json`` / ``invalid_body`` / ``empty_batch`` / ``too_many_events``: the body as
  a whole;
* 401 ``unauthorized`` / 403 ``forbidden``: no or an unknown key / a key without
  ``events:write``;
* 413 ``body_too_large`` / 415 ``unsupported_media_type``: size and content type;
* 429 ``rate_limited``: the key's token bucket is empty (``Retry-After``); a request takes one
  token whatever its number of events;
* 503 ``kafka_unavailable`` / ``kafka_error``: no ack in time; retry: event ids are
  deterministic, so the click path counts a retried event once.

CORS for the origins of FEEDPIPE_COLLECTOR_CORS_ORIGINS. Metrics:
:mod:`feedpipe.monitoring.collector`. API keys: :mod:`feedpipe.apikeys` (the read endpoint's
keys file). Modules: :mod:`.events` (body -> records and rejects, pure), :mod:`.app` (the ASGI
app), :mod:`.openapi` (its OpenAPI document), :mod:`.server` (uvicorn; the command line).

Run it: ``python -m connectors.collector`` or ``feedpipe collector`` (127.0.0.1:8070 by
default; ``feedpipe up`` starts it).
"""
