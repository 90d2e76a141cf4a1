"""The message bus: one well-known place to publish (XSUB) and to subscribe (XPUB)."""
