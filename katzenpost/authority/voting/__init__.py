"""The voting directory authority (`katzenpost-authority` with `[[Authorities]]` in its config):
v0.0.15 of the 2021 Katzenpost voting authority, byte-compatible with the Go one.

Modules: `schedule` (the round's deadlines), `store` (SQLite: the non-voting tables plus the
round), `handler` (the Vote and Reveal rules), `state` (the sans-I/O state machine), `peers`
(who is on a connection), `sender` (messages to the peers, fetches from them), `server`
(listeners and the timer-driven worker). The protocol algorithms are `katzenpost.voting`.
Importing this package starts nothing.
"""
