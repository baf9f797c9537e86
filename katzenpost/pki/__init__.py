"""PKI: certificates, descriptors, documents, epoch time and the node's side of the PKI (the
Katzenpost Mix Network Specification's directory authority protocol, non-voting).

Modules: `cert`, `canonical_json`, `descriptor`, `document`, `epochtime`, `keyconv` (data and
rules, no I/O); `client` and `worker` (the node side). The authority daemon is its own package,
`katzenpost.authority`. Importing this package starts nothing.
"""
