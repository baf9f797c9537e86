"""`katzenpost-testnet`: a whole Katzenpost network on 127.0.0.1 in one command (docs/testnet.md)."""
