"""The wire contract as JSON Schema, for third parties that validate without our code.

:func:`protocol_schema` builds one document from the pydantic models: the
payload map (the envelope fields plus ``body``) and the body of every message
type in ``MESSAGE_TYPES``, keyed by type. ``dynamicrl protocol schema`` writes
it; the committed copy is ``docs/protocol.schema.json``.
"""

from __future__ import annotations

import json
from typing import Any

from . import PROTOCOL_VERSION
from .envelope import Envelope
from .messages import MESSAGE_TYPES

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def payload_schema() -> dict[str, Any]:
    """The payload map: the envelope's fields and ``body`` (validated per type with ``messages``)."""
    schema = Envelope.model_json_schema()
    schema["title"] = "Payload"
    schema["description"] = (
        "The msgpack map in frame 1 of every message: the envelope fields and the message body. "
        "`type` must equal the topic frame and name a key of `messages`; validate `body` against "
        "that schema. A receiver refuses a message whose major version (`v`) differs from its own."
    )
    schema["properties"]["body"] = {
        "type": "object",
        "description": "the message's fields: see messages[type]",
    }
    schema["properties"]["type"]["enum"] = sorted(MESSAGE_TYPES)
    schema["required"] = [*schema.get("required", []), "body"]
    return schema


def protocol_schema() -> dict[str, Any]:
    """Every message type's body schema, keyed by type, plus the payload (envelope) schema."""
    messages = {}
    for type_name in sorted(MESSAGE_TYPES):
        cls = MESSAGE_TYPES[type_name]
        messages[type_name] = {"$schema": JSON_SCHEMA_DIALECT, "x-dynamicrl-type": type_name, **cls.model_json_schema()}
    envelope = {"$schema": JSON_SCHEMA_DIALECT, **payload_schema()}
    return {
        "title": "DynamicRL wire protocol",
        "description": (
            "JSON Schema of the DynamicRL wire contract (see docs/protocol.md). A message is the "
            "ZeroMQ multipart [topic, payload, *array_frames]; payload is a msgpack map valid "
            "against `envelope`, whose `body` is valid against `messages[type]`. Arrays in a body "
            'travel as references {"__ndarray__": i, "dtype": ..., "shape": [...]} to frame 2 + i. '
            "Generated from the pydantic models by `dynamicrl protocol schema`."
        ),
        "protocol_version": PROTOCOL_VERSION,
        "envelope": envelope,
        "messages": messages,
    }


def protocol_schema_json() -> str:
    """:func:`protocol_schema` as the text of ``docs/protocol.schema.json`` (stable, newline-terminated)."""
    return json.dumps(protocol_schema(), indent=2, ensure_ascii=False) + "\n"


__all__ = ["JSON_SCHEMA_DIALECT", "payload_schema", "protocol_schema", "protocol_schema_json"]
