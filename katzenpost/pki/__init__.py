"""PKI: certificates, descriptors, documents, epoch time, the node's PKI worker and the
non-voting authority daemon (`katzenpost-authority`), per spec/server.md §4.

Modules: `cert`, `canonical_json`, `descriptor`, `document`, `epochtime`, `keyconv` (data and
rules, no I/O); `client` and `worker` (the node side); `authority_config`, `authority_store`,
`authority_state`, `authority` and `authority_cli` (the daemon). Importing this package starts
nothing.
"""
