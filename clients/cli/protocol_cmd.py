"""`dynamicrl protocol ...`: the published wire contract."""

from __future__ import annotations

import click


@click.group("protocol")
def protocol_group() -> None:
    """The wire protocol (docs/protocol.md) in machine-readable form.

    Example: dynamicrl protocol schema --out protocol.schema.json
    """


@protocol_group.command("schema")
@click.option(
    "--out",
    "-o",
    "out",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="write to this file instead of stdout (docs/protocol.schema.json is such an export)",
)
def schema(out: str | None) -> None:
    """JSON Schema of the envelope and of every message type, keyed by type.

    One JSON document: `envelope` (the payload map: envelope fields plus `body`)
    and `messages` (each type's body), generated from the pydantic models, so a
    peer in any language can validate what it sends and receives.

    Example: dynamicrl protocol schema --out protocol.schema.json
    """
    from dynamicrl.protocol.schema import protocol_schema_json

    text = protocol_schema_json()
    if out is None:
        click.echo(text, nl=False)
        return
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    click.echo(f"wrote {out}", err=True)
