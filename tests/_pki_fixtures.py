"""Shared builders for the PKI tests: deterministic keys, descriptors, documents, a key store."""
from __future__ import annotations

import asyncio
import hashlib

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from katzenpost.pki.descriptor import LAYER_PROVIDER, MixDescriptor, sign_descriptor
from katzenpost.pki.document import Document, sign_document
from katzenpost.pki.epochtime import EpochClock
from katzenpost.pki.worker import NodeSelf

CLOCK = EpochClock()
MIXES = ("mix0", "mix1", "mix2")
PROVIDERS = ("provider1", "provider2")
AUTHORITY_SEED = bytes(range(0xC8, 0xE8))
# A reference descriptor vector: provider1's signed descriptor for epoch 123456.
APPENDIX_A_HEX = (
    "a56756657273696f6e006a45787069726174696f6e1b0000000468912f00674b6579547970656765643235353139"
    "694365727469666965645901e07b22416464726573736573223a7b2274637034223a5b223132372e302e302e313a"
    "3239343833225d7d2c224964656e746974794b6579223a22656256574c6f2f6d56506c41654c4553364b6d4c7035"
    "41666854726d6c623758344f4f52433630456c6d513d222c224b6165747a6368656e223a7b226c6f6f70223a7b22"
    "656e64706f696e74223a222b6c6f6f70227d7d2c224c61796572223a22323535222c224c696e6b4b6579223a2266"
    "5a776b4d575535676c77596c75562f4b426c33526e6b383567792b343631483270304875462b6c58696f3d222c22"
    "4c6f6164576569676874223a2230222c224d69784b657973223a7b22313233343536223a2265615978377434622b"
    "636d5045674d7333713351353642354f592f486872694d7945627369612b4670526f3d222c22313233343537223a"
    "225a4c45427364432b576f6345765165506d4a55414838412b6a702b564976474933524b4e6d4562556847593d22"
    "2c22313233343538223a2244305a4574374f554561383845344f327a776566795479476c5672366e446c4b454475"
    "597463576b6268553d227d2c224e616d65223a2270726f766964657231222c22526567697374726174696f6e4854"
    "5450416464726573736573223a6e756c6c2c2256657273696f6e223a227630227d6a5369676e61747572657381a2"
    "684964656e74697479582079b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664675061"
    "796c6f616458406eed988206eca9f171549ad3375a4e71102b7c777f6a083da7d8e52a8998ef4fe98c7c5ad59173"
    "e9f4cab2ab3025cc11b10b4cef2c0ba37f068cf202305e1e02"
)


def seed_for(name: str) -> bytes:
    return hashlib.sha256(b"pki-test-seed:" + name.encode()).digest()


def public_for(seed: bytes) -> bytes:
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def x25519_public(private: bytes) -> bytes:
    return x25519.X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def link_private_for(name: str) -> bytes:
    return hashlib.sha256(b"pki-test-link:" + name.encode()).digest()


def mix_key_public(name: str, epoch: int) -> bytes:
    return x25519_public(hashlib.sha256(f"mixkey:{name}:{epoch}".encode()).digest())


def make_descriptor(node: str, epoch: int, *, provider: bool = False, port: int = 30000,
                    **overrides) -> MixDescriptor:
    seed = seed_for(node)
    fields = dict(
        name=node, identity_key=public_for(seed),
        link_key=x25519_public(link_private_for(node)),
        mix_keys={e: mix_key_public(node, e) for e in range(epoch, epoch + 3)},
        addresses={"tcp4": [f"127.0.0.1:{port}"]},
        kaetzchen={"loop": {"endpoint": "+loop"}} if provider else None,
        layer=LAYER_PROVIDER if provider else 0)
    fields.update(overrides)
    return MixDescriptor(**fields)


def signed_descriptor(name: str, epoch: int, now: float, **kwargs) -> MixDescriptor:
    desc = make_descriptor(name, epoch, **kwargs)
    desc.raw = sign_descriptor(seed_for(name), desc, CLOCK, now)
    return desc


def make_document(epoch: int, now: float, *, layers: int = 3, per_layer: int = 1,
                  providers: int = 2, **overrides) -> Document:
    topology = [[signed_descriptor(f"mix{layer}-{i}", epoch, now, port=31000 + 10 * layer + i)
                 for i in range(per_layer)] for layer in range(layers)]
    provs = [signed_descriptor(f"provider{i + 1}", epoch, now, provider=True, port=32000 + i)
             for i in range(providers)]
    fields = dict(epoch=epoch, genesis_epoch=epoch, send_rate_per_minute=100,
                  mu=0.001, mu_max_delay=90000, lambda_p=0.0001234, lambda_p_max_delay=30000,
                  lambda_l=0.00025, lambda_l_max_delay=46051, lambda_d=0.00025,
                  lambda_d_max_delay=46051, lambda_m=0.00025, lambda_m_max_delay=46051,
                  topology=topology, providers=provs, shared_random_value=bytes(range(32)),
                  prior_shared_random=[bytes(range(32)), bytes(range(32))])
    fields.update(overrides)
    return Document(**fields)


def signed_document_bytes(doc: Document, now: float, seed: bytes = AUTHORITY_SEED) -> bytes:
    return sign_document(seed, doc, CLOCK, now)


class MemoryMixKeys:
    """A test double of the node's mix-key store (the MixKeyStore protocol)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.keys: dict[int, bytes] = {}
        self.oldest_kept = 0

    def generate(self, base_epoch: int) -> bool:
        created = False
        for e in range(base_epoch, base_epoch + 3):
            if e not in self.keys:
                self.keys[e] = mix_key_public(self.name, e)
                created = True
        self.oldest_kept = base_epoch - 1
        return created

    def prune(self) -> bool:
        old = [e for e in self.keys if e < self.oldest_kept]
        for e in old:
            del self.keys[e]
        return bool(old)

    def public_key(self, epoch: int) -> bytes | None:
        return self.keys.get(epoch)


def authority_config_text(data_dir, *, mixes=MIXES, providers=PROVIDERS, layers=3, port=29999,
                          sections="", debug=""):
    """An authority TOML whitelisting the named test nodes (MinNodesPerLayer 1). `sections` go
    before [Debug], `debug` inside it."""
    text = (f'[Authority]\nIdentifier = "auth"\nAddresses = ["127.0.0.1:{port}"]\n'
            f'DataDir = "{data_dir}"\n{sections}'
            f"[Debug]\nLayers = {layers}\nMinNodesPerLayer = 1\n{debug}")
    for name in mixes:
        text += f'[[Mixes]]\nIdentityKey = "{public_for(seed_for(name)).hex()}"\n'
    for name in providers:
        text += (f'[[Providers]]\nIdentifier = "{name}"\n'
                 f'IdentityKey = "{public_for(seed_for(name)).hex()}"\n')
    return text


def node_self(name: str, provider: bool | None = None, port: int = 31010) -> NodeSelf:
    """A test node as its PKI worker sees it; names starting with "provider" are providers."""
    if provider is None:
        provider = name.startswith("provider")
    return NodeSelf(identifier=name, identity_seed=seed_for(name),
                    identity_public=public_for(seed_for(name)),
                    link_public=x25519_public(link_private_for(name)),
                    addresses={"tcp4": [f"127.0.0.1:{port}"]}, is_provider=provider,
                    kaetzchen_for_pki=(lambda: {"loop": {"endpoint": "+loop"}}) if provider else None)


async def wait_until(condition, what: str = "the condition", limit: float = 5.0) -> None:
    """Poll `condition` on the running loop (so the code under test can progress), bounded."""
    for _ in range(int(limit / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
