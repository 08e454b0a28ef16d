"""The Python client against a real local cluster (`thresig dev`).

THRESIG_BIN names the thresig binary (default: `thresig` on PATH). Run by
tests/python_client.rs in the repository (`cargo test`), or by hand:
    pip install './clients/python[test]' && THRESIG_BIN=target/debug/thresig pytest clients/python/tests
"""

import hashlib
import os
import subprocess
import tempfile
import time

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from thresig_client import Client, Endpoint, PayloadKind, Slot, ThresigError, canonical_bytes_v1

BIN = os.environ.get("THRESIG_BIN", "thresig")
POLICY = """
[[client]]
name = "validator"
keys = ["*"]
paths = ["m"]
payloads = ["eth_message", "eth_transaction", "bitcoin_psbt"]
raw_digest = true

[client.bitcoin]
network = "regtest"
destinations = [{ address = "bcrt1qq5zs2pg9q5zs2pg9q5zs2pg9q5zs2pg9ajutfp" }]
max_fee_sat = 20000

[client.eth]
chain_ids = [1337]
recipients = [{ address = "0x1111111111111111111111111111111111111111" }]
max_value = "1 ether"

[[admin]]
name = "ops"
operations = ["*"]
"""


def _start_node(d, name):
    return subprocess.Popen(
        [BIN, "node", "run", "--config", os.path.join(d, "nodes", name, "node.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def cluster():
    """`thresig dev` makes the cluster and its keys; then each node runs as
    its own `thresig node run` process (on the ports dev wrote into each
    node.toml), so that a test can stop one."""
    d = tempfile.mkdtemp(prefix="thresig-py-")
    dev = subprocess.Popen(
        [BIN, "dev", "--dir", d, "--keys", "k:secp256k1,pk:p256"],
        stdout=subprocess.PIPE,
        text=True,
    )
    env = {}
    for line in dev.stdout:
        if line.startswith("export "):
            k, v = line[len("export "):].strip().split("=", 1)
            env[k] = v
        if line.startswith("ready;"):
            break
    dev.terminate()
    assert dev.wait(timeout=60) == 0
    assert "THRESIG_ENDPOINT" in env, "thresig dev did not print its exports"
    endpoints = [Endpoint(env["THRESIG_SERVER"], env["THRESIG_ENDPOINT"])]
    for f in env["THRESIG_FAILOVER"].split(","):
        name, addr = f.split("@")
        endpoints.append(Endpoint(name, addr))
    # This test's policy, read by each node at start.
    with open(os.path.join(d, "policy.toml"), "w") as f:
        f.write(POLICY)
    nodes = {e.name: _start_node(d, e.name) for e in endpoints}
    certs = env["THRESIG_CERTS"]
    deadline = time.time() + 60
    while True:
        try:
            for e in endpoints:
                Client.from_certs(certs, "validator", [e]).public_key("k")
            break
        except ThresigError:
            assert time.time() < deadline, "the nodes did not come up"
            time.sleep(0.2)
    yield certs, endpoints, d, nodes
    for p in nodes.values():
        p.terminate()
        p.wait(timeout=60)


def client(cluster, endpoints=None):
    certs, eps = cluster[0], cluster[1]
    return Client.from_certs(certs, "validator", endpoints or eps)


def test_a_digest_signature_verifies_against_the_key(cluster):
    digest = hashlib.sha256(b"python client").digest()
    sig = client(cluster).sign("k", digest, path="m/1")
    assert len(sig.participants) == 2 and sig.key_type == "secp256k1"
    pk = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), sig.public_key)
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    pk.verify(sig.der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    assert decode_dss_signature(sig.der) == (int.from_bytes(sig.r, "big"), int.from_bytes(sig.s, "big"))
    # The public key read back is the one that signed.
    assert client(cluster).public_key("k", "m/1").public_key == sig.public_key


def test_a_p256_key_signs_too(cluster):
    digest = hashlib.sha256(b"p256").digest()
    sig = client(cluster).sign("pk", digest)
    pk = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sig.public_key)
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    pk.verify(encode_dss_signature(int.from_bytes(sig.r, "big"), int.from_bytes(sig.s, "big")),
              digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_a_repeated_request_id_returns_the_same_signature(cluster):
    c = client(cluster)
    digest = hashlib.sha256(b"idempotent").digest()
    a = c.sign("k", digest, request_id="py-idem-1")
    b = c.sign("k", digest, request_id="py-idem-1")
    assert a.rsv == b.rsv
    with pytest.raises(ThresigError) as e:
        c.sign("k", hashlib.sha256(b"other").digest(), request_id="py-idem-1")
    assert e.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert e.value.reason == "request-id-reused"


def test_a_slot_is_never_signed_twice_for_different_digests(cluster):
    c = client(cluster)
    slot = Slot("py-val", 10, 0, 1)
    c.sign("k", hashlib.sha256(b"vote a").digest(), slot=slot)
    with pytest.raises(ThresigError) as e:
        c.sign("k", hashlib.sha256(b"vote b").digest(), slot=slot)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert e.value.reason == "slot-conflict"
    assert "double-sign" in e.value.message


def test_an_unavailable_endpoint_fails_over_to_the_next(cluster):
    eps = cluster[1]
    dead = Endpoint(eps[0].name, "127.0.0.1:1")
    sig = client(cluster, [dead] + eps[1:]).sign("k", hashlib.sha256(b"failover").digest())
    assert len(sig.rsv) == 65


def test_an_eip191_message_is_signed_and_recovers_the_address(cluster):
    from eth_account import Account
    from eth_account.messages import encode_defunct

    c = client(cluster)
    sig = c.sign_payload("k", PayloadKind.ETH_MESSAGE, b"hello from python", path="m/2")
    signer = Account.recover_message(encode_defunct(b"hello from python"), signature=sig.payload.signature)
    assert signer == c.public_key("k", "m/2").eth_address


def unsigned_eip1559(value: int) -> bytes:
    """The unsigned EIP-1559 signing encoding, built by eth-account's own
    serializer (and checked against its signing hash)."""
    import rlp
    from eth_account._utils.transaction_utils import transaction_rpc_to_rlp_structure
    from eth_account.typed_transactions import TypedTransaction
    from eth_utils import keccak

    tx = TypedTransaction.from_dict({
        "type": 2, "chainId": 1337, "nonce": 0, "to": "0x1111111111111111111111111111111111111111",
        "value": value, "gas": 21000, "maxFeePerGas": 2 * 10**9, "maxPriorityFeePerGas": 10**9,
        "data": b"", "accessList": [],
    }).transaction
    fields = {k: v for k, v in tx.dictionary.items() if k not in ("v", "r", "s")}
    serializer = type(tx)._unsigned_transaction_serializer
    unsigned = b"\x02" + rlp.encode(serializer.from_dict(transaction_rpc_to_rlp_structure(fields)))
    assert keccak(unsigned) == tx.hash()
    return unsigned


def test_an_eip1559_transaction_is_signed_and_its_sender_is_the_key(cluster):
    from eth_account import Account

    c = client(cluster)
    sig = c.sign_payload("k", PayloadKind.ETH_TRANSACTION, unsigned_eip1559(10**15), path="m/4")
    raw = sig.payload.signed_transaction
    assert raw[0] == 2
    address = c.public_key("k", "m/4").eth_address
    assert Account.recover_transaction(raw) == address == sig.payload.sender
    # Over the policy's max_value: refused, naming the knob.
    with pytest.raises(ThresigError) as e:
        c.sign_payload("k", PayloadKind.ETH_TRANSACTION, unsigned_eip1559(2 * 10**18), path="m/5")
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED and "eth.max_value" in e.value.message


def test_a_policy_refusal_names_the_node_and_rule(cluster):
    with pytest.raises(ThresigError) as e:
        client(cluster).sign_payload("k", PayloadKind.ETH_TYPED_DATA, b"{}")
    assert e.value.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
    assert "node " in e.value.message
    with pytest.raises(ThresigError) as e:
        client(cluster).sign("no-such-key", bytes(32))
    assert e.value.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)


def test_the_v1_bytes_are_the_readme_layout():
    b = canonical_bytes_v1("k", bytes(32), "m/0", Slot("s", 1, 2, 3), "r", 7)
    assert b[:4] == (23).to_bytes(4, "big") and b[4:27] == b"thresig/sign-request/v1"
    assert b.endswith((8).to_bytes(4, "big") + (7).to_bytes(8, "big"))
    slot = (1).to_bytes(4, "big") + b"s" + b"".join(i.to_bytes(8, "big") for i in (1, 2, 3))
    assert (len(slot).to_bytes(4, "big") + slot) in b


def test_with_one_node_stopped_the_client_fails_over_and_the_others_sign(cluster):
    certs, eps, d, nodes = cluster
    first = eps[0]
    nodes[first.name].terminate()
    nodes[first.name].wait(timeout=60)
    try:
        sig = client(cluster).sign("k", hashlib.sha256(b"one node down").digest())
        assert first.name not in sig.participants
        assert sorted(sig.participants) == sorted(e.name for e in eps[1:])
    finally:
        nodes[first.name] = _start_node(d, first.name)
        deadline = time.time() + 60
        while True:
            try:
                Client.from_certs(certs, "validator", [first]).public_key("k")
                break
            except ThresigError:
                assert time.time() < deadline, f"node {first.name} did not come back"
                time.sleep(0.2)


def test_a_psbt_input_of_the_key_is_signed_and_finalized(cluster):
    """A one-input P2WPKH PSBT built by embit (a library this project did
    not write), its partial signature checked by embit against its own
    BIP-143 sighash."""
    from embit import hashes
    from embit.ec import PublicKey, Signature as EcSignature
    from embit.psbt import PSBT, DerivationPath
    from embit.script import address_to_scriptpubkey, p2pkh, p2wpkh
    from embit.transaction import Transaction, TransactionInput, TransactionOutput

    c = client(cluster)
    master = c.public_key("k").public_key
    child = PublicKey.parse(c.public_key("k", "m/0/1").public_key)
    fingerprint = hashes.hash160(master)[:4]
    dest = address_to_scriptpubkey("bcrt1qq5zs2pg9q5zs2pg9q5zs2pg9q5zs2pg9ajutfp")
    tx = Transaction(vin=[TransactionInput(bytes([7]) * 32, 0)], vout=[TransactionOutput(90_000, dest)])
    psbt = PSBT(tx)
    psbt.inputs[0].witness_utxo = TransactionOutput(100_000, p2wpkh(child))
    psbt.inputs[0].bip32_derivations[child] = DerivationPath(fingerprint, [0, 1])
    sig = c.sign_payload("k", PayloadKind.BITCOIN_PSBT, psbt.serialize())
    signed = PSBT.parse(sig.payload.psbt)
    partial = signed.inputs[0].partial_sigs[child]
    assert partial[-1] == 1, "SIGHASH_ALL"
    script_code = p2pkh(child)  # BIP-143: a P2WPKH input is signed with the P2PKH script
    assert child.verify(EcSignature.parse(partial[:-1]), signed.tx.sighash_segwit(0, script_code, 100_000))
    final = Transaction.parse(sig.payload.signed_transaction)
    assert final.vin[0].witness.items[1] == child.sec()
