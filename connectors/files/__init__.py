"""Readers of the shared data files: each turns one file into records to publish (pure: no
Kafka). :mod:`connectors.replay` publishes them; tests and benchmarks read them directly.

- :mod:`.cms`: WordPress ``/wp/v2/posts`` answers and Drupal JSON:API documents;
- :mod:`.feeds`: RSS / Atom / JSON Feed documents;
- :mod:`.mind`: MIND ``news.tsv`` (articles) and ``behaviors.tsv`` (reader events).
"""
