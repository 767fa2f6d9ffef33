"""WordPress REST API posts (``/wp-json/wp/v2/posts``): status rule, response splitting and
what makes an object a post.

Status rule. WordPress registers these post statuses (REST API handbook, "Posts" reference,
developer.wordpress.org/rest-api/reference/posts/, argument ``status``; ``register_post_status``
in wp-includes/post.php): ``publish`` (the only *public* one), ``future`` (scheduled),
``draft``, ``pending`` (awaiting review), ``private`` (visible to editors only), ``trash``, and
the internal ``auto-draft`` and ``inherit`` (revisions, attachments). Only a ``publish`` post
may be shown to readers, so a post with any other status is a **delete** (unpublish): a post
that was published and then scheduled again, sent back to review, made private or trashed must
disappear from every feed. A post without a ``status`` member (a trimmed ``_fields`` answer of
the public API, which only lists published posts) is an upsert. A delete response
``{"deleted": true, "previous": {...}}`` is a delete whatever ``previous.status`` says.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from feedpipe.cms.events import DELETE, UPSERT, CmsItem, Op, resource_id
from feedpipe.errors import RejectedInput

KIND: Final = "wordpress.post"
CONTENT_TYPE: Final = "application/json"
PUBLIC_STATUS: Final = "publish"
NOT_PUBLIC_STATUSES: Final = frozenset(
    {"future", "draft", "pending", "private", "trash", "auto-draft", "inherit"}
)
"""The other statuses WordPress registers; any status outside these and ``publish`` is read as
not public too (the normaliser adds a warning)."""


def is_public(status: Any) -> bool:
    """True when a post with this ``status`` may be shown: ``publish``, or no status at all."""
    return status is None or status == PUBLIC_STATUS


def unwrap_deleted(post: Any) -> tuple[Any, bool]:
    """``(post, deleted)``: a delete response ``{"deleted": ..., "previous": {post}}`` gives
    ``(previous, True)``; anything else is returned unchanged with False."""
    if isinstance(post, dict) and "deleted" in post and isinstance(post.get("previous"), dict):
        return post["previous"], True
    return post, False


def post_op(post: Any) -> Op:
    """``delete`` for a delete response or a post whose status is not public (see the module
    docstring), else ``upsert`` (also for objects that are not posts: the normaliser refuses
    those with its own reason)."""
    body, deleted = unwrap_deleted(post)
    if deleted:
        return DELETE
    status = body.get("status") if isinstance(body, dict) else None
    return UPSERT if is_public(status) else DELETE


def check_post(post: Any) -> dict[str, Any]:
    """The post object of ``post`` (a delete response unwrapped), checked to be one.

    Raises:
        RejectedInput: ``not_a_post`` (not a JSON object; a list must be split first with
            :func:`split_posts`), ``wordpress_error`` (a WordPress error object ``{"code",
            "message", "data": {"status"}}``; the reason is ``"[<status> ]<code>: <message>"``),
            ``missing_id`` (no usable ``id``).
    """
    if isinstance(post, list):
        raise RejectedInput(
            "not_a_post", f"payload is a list of {len(post)} items; split it with split_posts"
        )
    if not isinstance(post, dict):
        raise RejectedInput("not_a_post", f"payload is a JSON {type(post).__name__}, not a post")
    body, _ = unwrap_deleted(post)
    if "code" in body and "message" in body and "id" not in body:
        data = body.get("data")
        status = data.get("status") if isinstance(data, dict) else None
        prefix = f"{status} " if status is not None else ""
        raise RejectedInput("wordpress_error", f"{prefix}{body.get('code')}: {body.get('message')}")
    if resource_id(body.get("id")) is None:
        raise RejectedInput("missing_id", "post has no usable 'id'")
    return dict(body)


def split_posts(doc: Any) -> list[Any]:
    """The members of a decoded ``/wp/v2/posts`` answer: the items of a list, or ``[doc]`` for
    one object (a post, a delete response or an error object). Members are not checked.

    Raises:
        RejectedInput: ``not_a_post`` for an empty list or a JSON scalar.
    """
    if isinstance(doc, dict):
        return [doc]
    if isinstance(doc, list) and doc:
        return list(doc)
    raise RejectedInput(
        "not_a_post", f"expected a post object or a non-empty list of posts, got {doc!r:.80}"
    )


def post_items(doc: Any, raw: bytes) -> list[CmsItem]:
    """One :class:`CmsItem` per member of a decoded ``/wp/v2/posts`` answer (``raw`` its bytes).

    A single object keeps ``raw`` as its payload; the members of a list are serialised one by
    one (``orjson.dumps(post)``); see :func:`post_item`.

    Raises:
        RejectedInput: ``not_a_post`` (see :func:`split_posts`).
    """
    single = isinstance(doc, dict)
    return [post_item(post, raw if single else orjson.dumps(post)) for post in split_posts(doc)]


def post_item(post: Any, payload: bytes) -> CmsItem:
    """The :class:`CmsItem` of one member of a ``/wp/v2/posts`` answer, published as
    ``payload``: ``source_id`` the post's ``id`` (of ``previous`` for a delete response; None
    without a usable one), op per :func:`post_op`, ``error`` what :func:`check_post` raises."""
    body, _ = unwrap_deleted(post)
    error: RejectedInput | None = None
    try:
        check_post(post)
    except RejectedInput as exc:
        error = exc
    return CmsItem(
        source_id=resource_id(body.get("id")) if isinstance(body, dict) else None,
        payload=payload,
        op=post_op(post),
        error=error,
    )
