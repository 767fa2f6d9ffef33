"""CDC: Debezium change events of a WordPress ``wp_posts`` table -> ``feedpipe.RawCmsEvent``.

Modules: :mod:`.debezium` (message shapes, column values), :mod:`.wp_posts` (a ``wp_posts``
change -> a raw event), :mod:`.connector` (the Kafka consumer and publisher).

Accepted message values (Kafka Connect ``JsonConverter``; Debezium docs, "MySQL connector",
"Data change events"):

1. with schema (``value.converter.schemas.enable=true``): ``{"schema": {...}, "payload":
   {"before", "after", "source", "op", "ts_ms"}}``;
2. without schema: ``{"before", "after", "source", "op", "ts_ms"}``;
3. unwrapped rows (``io.debezium.transforms.ExtractNewRecordState``), with or without the
   schema wrapper: the row itself; ``__op`` (``add.fields=op``) and ``__deleted``
   (``delete.handling.mode=rewrite``) are read when present, else the row is an upsert;
4. ``None`` (a tombstone, emitted after each delete for log compaction): skipped.

op ``c`` (create), ``u`` (update), ``r`` (snapshot read) -> the row in ``after``; ``d`` ->
the row in ``before``; ``t`` (truncate) and ``m`` (message) cannot be mapped onto one item and
are rejected. The row is mapped onto a WordPress REST-like post (see :func:`row_to_post`) and
published as kind ``wordpress.post``, so :mod:`streams.normalisers.wordpress` handles it;
op ``delete`` for a ``d`` change, else by the WordPress status rule of
:mod:`feedpipe.cms.wordpress` (only ``publish`` is public: any other status is a delete,
i.e. an unpublish). Rows whose ``post_type`` is not in ``post_types`` (default ``post``: pages,
revisions, attachments, menu items live in the same table) are skipped with a counted reason.

Datetime columns (``post_date_gmt``, ``post_modified_gmt``) arrive as epoch integers or
strings depending on ``time.precision.mode``: ``io.debezium.time.Timestamp`` /
``org.apache.kafka.connect.data.Timestamp`` (ms), ``io.debezium.time.MicroTimestamp`` (µs),
``io.debezium.time.NanoTimestamp`` (ns) -- read from the schema field's ``name`` when there is
a schema, else guessed from the magnitude (see :func:`epoch_to_iso`) -- or strings
(``ZonedTimestamp`` ISO 8601, MySQL ``YYYY-MM-DD HH:MM:SS``). WordPress's zero date
``0000-00-00 00:00:00`` (unscheduled drafts) and null give no date.
"""
