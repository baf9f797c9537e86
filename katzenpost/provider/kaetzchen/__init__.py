"""Kaetzchen: provider-side autoresponders reached as a recipient endpoint, answering through the
request's SURB — the built-in `loop` and `keyserver` agents and external CBOR plugins."""
