"""A generic HTTP webhook: a JSON body from a table of templates.

Settings::

    [destinations.crm]
    type = "webhook"
    url = "https://crm.example.com/hooks/tagrelay"
    headers = { Authorization = "Bearer ${CRM_TOKEN}" }
    batch = 1                       # >1 sends a JSON array of bodies
    [destinations.crm.body]         # optional; default: the canonical event
    event = "{{ name }}"
    order_id = "{{ params.transaction_id }}"
    email_sha256 = "{{ user.hashed.em[0] }}"

Templates see the same view as routes, plus ``user.hashed`` (SHA-256 of the
normalised PII); raw PII is not reachable from a template.
"""

from __future__ import annotations

import re
from typing import Any, Mapping
from urllib.parse import urlsplit

import orjson

from ..mapping import Fields, compile_mapping
from ..model import Event, sample_event
from .base import Adapter, ConfigError, Request
from .canonical import canonical_payload

__all__ = ["Webhook"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SECRET_HINTS = ("auth", "token", "key", "secret", "signature", "password")
# What body templates may read: the canonical payload (the event's view
# without "event", with user.hashed), so a typo is refused at load.
_BODY_FIELDS = Fields(canonical_payload(sample_event()), free=("params",), nested=("context",), renamed={"event": "name"})


class Webhook(Adapter):
    type = "webhook"
    max_batch = 1000

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        super().__init__(name, settings)
        problems: list[tuple[str, str]] = []
        url = settings.get("url")
        if url is None:
            problems.append(("url", "required: the http(s) URL to send events to"))
        elif not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            problems.append(("url", "is not an http(s) URL"))
        method = settings.get("method", "POST")
        if method not in ("POST", "PUT", "PATCH"):
            problems.append(("method", f"{method!r}: must be POST, PUT or PATCH"))
        headers = settings.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            problems.append(("headers", "must be a table of header = \"value\""))
            headers = {}
        for key, value in headers.items():
            if not _TOKEN.fullmatch(key):
                problems.append((f"headers.{key}", "not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"))
            if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in value):
                problems.append((f"headers.{key}", "the value has control characters (a newline?)"))
        batch = settings.get("batch", 1)
        if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 1000:
            problems.append(("batch", f"{batch!r}: must be a whole number from 1 to 1000"))
            batch = 1
        body = settings.get("body")
        mapping = None
        if body is not None:
            if not isinstance(body, dict):
                problems.append(("body", "must be a table of field = \"template\""))
            else:
                mapping, mproblems = compile_mapping(body, _BODY_FIELDS.check_read, "body")
                problems.extend((f"body.{k}", m) for k, m in mproblems)
        for key in settings:
            if key not in ("url", "method", "headers", "batch", "body"):
                problems.append((key, "unknown setting for type 'webhook' (known: url, method, headers, batch, body)"))
        if problems:
            raise ConfigError(problems)
        self.url = str(url)
        self.method = str(method)
        self.headers = {"Content-Type": "application/json", **headers}
        self.batch = int(batch)
        self.body = mapping
        self.secrets = tuple(
            v for k, v in headers.items() if any(h in k.lower() for h in _SECRET_HINTS) and v
        )

    @property
    def batch_size(self) -> int:
        return self.batch

    def render(self, event: Event) -> dict[str, Any]:
        view = canonical_payload(event)
        if self.body is None:
            return view
        return self.body.apply({}, view)

    def build(self, payloads: list[dict[str, Any]]) -> Request:
        data: Any = payloads if self.batch > 1 else payloads[0]
        return Request(self.method, self.url, dict(self.headers), orjson.dumps(data), self.secrets)
