"""Publish a model's complete view through ``lua/publish_view.lua``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hiredis
import orjson
from redis import Redis
from redis.exceptions import ResponseError

from fabric import keys
from fabric.bulk import execute_pipeline
from fabric.keys import Model
from fabric.scripts import script_sha, script_source


@dataclass(frozen=True)
class Publication:
    """``published`` (with the new version), ``prepared`` (a warming epoch's view) or ``refused``."""

    status: str
    version: int
    detail: str = ""

    @property
    def published(self) -> bool:
        """True when subscribers can now see the view."""
        return self.status == "published"


def encode_view(view: dict[str, Any]) -> bytes:
    """The JSON body of a view (without ``version``: the script adds it). NaN/inf become null."""
    if "version" in view:
        raise ValueError("the publish script sets the version; do not pass one")
    body = orjson.dumps(view, option=orjson.OPT_SERIALIZE_NUMPY)
    if len(body) < 3 or body[:1] != b"{":
        raise ValueError("a view is a non-empty JSON object")
    return body


def publish_view(r: Redis, model: Model, underlying: str, epoch: str, view: dict[str, Any]) -> Publication:
    """Publish ``view`` (computed from ``epoch``) if that epoch is active; prepare it if warming."""
    return publish_encoded_view(r, model, underlying, epoch, encode_view(view))


def publish_encoded_view(r: Redis, model: Model, underlying: str, epoch: str, body: bytes) -> Publication:
    """:func:`publish_view` for a view already encoded as a JSON object without ``version``."""
    if len(body) < 3 or body[:1] != b"{" or body[-1:] != b"}" or body.startswith(b'{"version"'):
        raise ValueError("a view is a non-empty JSON object without a version")
    u = underlying.upper()
    command = ("EVALSHA", script_sha("publish_view"), 6, keys.active_epoch(u), keys.model_view(model, u),
               keys.model_version(model, u), keys.epoch_meta(u, epoch), keys.prepared_view(u, epoch, model),
               keys.epoch_ready(u, epoch), epoch, memoryview(body)[1:], keys.MODELS_CHANNEL, model, u)  # fmt: skip
    for attempt in range(2):  # a view is up to a megabyte: sent by execute_pipeline without being copied
        (reply,) = execute_pipeline(r, [command])
        if not isinstance(reply, hiredis.ReplyError):
            break
        if not str(reply).startswith("NOSCRIPT") or attempt:
            raise ResponseError(str(reply))
        r.script_load(script_source("publish_view"))
    status, detail = reply
    if status == "published":
        return Publication(status, int(detail))
    return Publication(status, 0, str(detail))
