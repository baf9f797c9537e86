#!/usr/bin/env python3
"""Write a node's (or, with --authority, a non-voting authority's) key files into a directory
and print the public keys, without starting anything. Existing key files are loaded, never
overwritten.

    .venv/bin/python scripts/genkeys.py /var/lib/katzenpost-mix1
    .venv/bin/python scripts/genkeys.py --authority /var/lib/katzenpost-authority
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from katzenpost import keys  # noqa: E402


def describe(label: str, public: bytes, created: bool) -> str:
    state = "new" if created else "existing"
    return (f"{label}: {keys.public_key_hex(public)} "
            f"(base64 {keys.public_key_base64(public)}, {state})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="the DataDir (created 0700 if missing; must be 0700)")
    parser.add_argument("--authority", action="store_true",
                        help="an authority key set: identity only; its link key is derived "
                             "from the identity (ToECDH)")
    args = parser.parse_args(argv)
    os.umask(0o077)
    directory = os.path.abspath(args.directory)
    try:
        keys.ensure_data_dir(directory)
        identity_key, identity_created = keys.load_or_create_identity_key(directory)
        print(describe("identity public key", identity_key.public, identity_created))
        if args.authority:
            print(describe("link public key (derived from the identity)",
                           identity_key.to_x25519_public(), identity_created))
        else:
            link_key, link_created = keys.load_or_create_link_key(directory)
            print(describe("link public key", link_key.public, link_created))
    except (keys.KeyFileError, OSError) as err:
        print(f"genkeys: {err}", file=sys.stderr)
        return 1
    print(f"key files in {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
