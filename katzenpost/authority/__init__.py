"""The non-voting directory authority (`katzenpost-authority`): a program of its own beside the
node, with its own configuration and store. It uses the PKI formats of `katzenpost.pki`.

Modules: `config` (its TOML file), `store` (SQLite persistence in DataDir), `state` (the
sans-I/O state machine: uploads, documents), `daemon` (listeners and the worker) and `cli`
(the entry point). Importing this package starts nothing.
"""
