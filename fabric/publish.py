"""Publish a model's complete view through ``lua/publish_view.lua``."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import hiredis
import orjson
from redis import Redis
from redis.exceptions import ResponseError

from fabric import keys
from fabric.bulk import Pieces, execute_pipeline
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


def publish_encoded_view(r: Redis, model: Model, underlying: str, epoch: str, body: bytes, *,
                         stored_version: int | None = None) -> Publication:  # fmt: skip
    """:func:`publish_view` for a view already encoded as a JSON object without ``version``.

    The view is staged with its version (``stored_version`` + 1, the version read now if not given) and
    published by ``publish_view.lua`` in one pipeline; sent without being copied (up to a megabyte).
    """
    if len(body) < 3 or body[:1] != b"{" or body[-1:] != b"}" or body.startswith(b'{"version"'):
        raise ValueError("a view is a non-empty JSON object without a version")
    u = underlying.upper()
    rest = memoryview(body)[1:]
    loaded = False
    staged_key = keys.staged_view(model, u, secrets.token_hex(8))  # this publication's own (every attempt's)
    for _ in range(PUBLISH_ATTEMPTS):
        if stored_version is None:
            stored_version = int(r.get(keys.model_version(model, u)) or 0)
        version = stored_version + 1
        view_keys = (keys.active_epoch(u), keys.model_view(model, u), keys.model_version(model, u),
                     keys.epoch_meta(u, epoch), keys.prepared_view(u, epoch, model), keys.epoch_ready(u, epoch),
                     staged_key)  # fmt: skip
        staged, reply = execute_pipeline(r, [
            ("SET", staged_key, Pieces((b'{"version":%d,' % version, rest)), "PX", STAGED_TTL_MS),
            ("EVALSHA", script_sha("publish_view"), len(view_keys), *view_keys, epoch, version, keys.MODELS_CHANNEL,
             model, u),
        ])  # fmt: skip
        if isinstance(staged, hiredis.ReplyError):
            raise ResponseError(str(staged))
        if isinstance(reply, hiredis.ReplyError):
            if str(reply).startswith("NOSCRIPT") and not loaded:
                r.script_load(script_source("publish_view"))
                loaded = True
                continue
            raise ResponseError(str(reply))
        status, detail = reply
        if status == "stale":  # another publisher moved the version: stage again with the next one
            stored_version = int(detail)
            continue
        if status == "published":
            return Publication(status, int(detail))
        return Publication(status, 0, str(detail))
    raise ResponseError(f"{model} {u}: the view version kept moving under {PUBLISH_ATTEMPTS} attempts")


#: attempts of one publication when other publishers keep moving the version (or a first NOSCRIPT)
PUBLISH_ATTEMPTS = 4
#: a staged view's TTL: the script renames or deletes it at once; this only clears one whose publisher died
#: between the two commands of its pipeline
STAGED_TTL_MS = 60_000
