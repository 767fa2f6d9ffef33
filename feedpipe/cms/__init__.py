"""CMS rules shared by every path content takes into the pipeline (pure: no I/O, no Kafka).

- :mod:`feedpipe.cms.events`: the ``feedpipe.RawCmsEvent`` record (:func:`cms_event`) and
  :class:`CmsItem`, one item of a CMS response with its id, payload and op;
- :mod:`feedpipe.cms.wordpress`: which WordPress post statuses are public, how a
  ``/wp/v2/posts`` response splits into posts, what makes an object a post;
- :mod:`feedpipe.cms.drupal`: the same for Drupal JSON:API ``node--article`` documents.

The connectors (replay, pollers, webhook receiver, CDC) and the normalisers (``streams``) both
use these modules, so a post is an upsert or a delete by the same rule whichever way it came.
"""
