"""The provider: user database, spool, client retrieval, SURB-ACKs, rate limits and Kaetzchen
(spec: Katzenpost "Provider" behaviour, documented in docs/provider.md). Nothing here touches the
mix pipeline's threads; the node hands terminal packets in and takes reply packets out."""
