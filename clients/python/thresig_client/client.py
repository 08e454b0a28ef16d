"""The client: TLS with the client certificate, request signatures, failover."""

from __future__ import annotations

import enum
import os
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ._proto.thresig.signer.v1 import signer_pb2, signer_pb2_grpc

TAG_V1 = b"thresig/sign-request/v1"
TAG_V2 = b"thresig/sign-request/v2"
#: TLS 1.3 SignatureScheme codes the nodes accept for request signatures.
ECDSA_P256_SHA256 = 0x0403
ECDSA_P384_SHA384 = 0x0503
ED25519 = 0x0807
#: How long a request stays valid (nodes refuse more than 600 s ahead).
DEFAULT_EXPIRY_SECS = 120
#: gRPC codes after which the same request goes to the next endpoint.
FAILOVER_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


class PayloadKind(str, enum.Enum):
    """Typed payload kinds: every node decodes these and applies its policy."""

    ETH_TRANSACTION = "eth_transaction"
    ETH_MESSAGE = "eth_message"
    ETH_TYPED_DATA = "eth_typed_data"
    BITCOIN_PSBT = "bitcoin_psbt"
    COSMOS_SIGN_DOC = "cosmos_sign_doc"


@dataclass(frozen=True)
class Endpoint:
    """A node: its name (the certificate's DNS name) and client address."""

    name: str
    address: str


@dataclass(frozen=True)
class Slot:
    """Double-sign protection: a position per key and scope."""

    scope: str
    height: int
    round: int = 0
    step: int = 0

    def encode(self) -> bytes:
        s = self.scope.encode()
        return struct.pack(">I", len(s)) + s + struct.pack(">QQQ", self.height, self.round, self.step)


@dataclass
class Signature:
    """A finished signature and, for a typed payload, what the caller needs next."""

    r: bytes
    s: bytes
    recovery_id: int
    der: bytes
    rsv: bytes
    public_key: bytes
    participants: List[str]
    request_id: str
    key_type: str
    payload: Optional[signer_pb2.PayloadResult] = None


class ThresigError(Exception):
    """A refusal or failure: the gRPC code, the node's message (naming the
    node, rule and knob for a policy refusal) and its reason label (e.g.
    `permission-denied`, `slot-conflict`, `window-exceeded`)."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: Optional[str], endpoint: str):
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.endpoint = endpoint


def _field(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def canonical_bytes_v1(
    key_id: str, digest: bytes, path: str, slot: Optional[Slot], request_id: str, expiry_unix: int
) -> bytes:
    """The bytes a client signs for a raw-digest request (README, "Request signatures")."""
    return b"".join(
        [
            _field(TAG_V1),
            _field(key_id.encode()),
            _field(digest),
            _field(path.encode()),
            _field(slot.encode() if slot else b""),
            _field(request_id.encode()),
            _field(struct.pack(">Q", expiry_unix)),
        ]
    )


def canonical_bytes_v2(
    key_id: str, kind: PayloadKind, payload: bytes, path: str, request_id: str, expiry_unix: int
) -> bytes:
    """The bytes a client signs for a typed-payload request."""
    return b"".join(
        [
            _field(TAG_V2),
            _field(key_id.encode()),
            _field(PayloadKind(kind).value.encode()),
            _field(payload),
            _field(path.encode()),
            _field(b""),
            _field(request_id.encode()),
            _field(struct.pack(">Q", expiry_unix)),
        ]
    )


def _canonical_path(path: str) -> str:
    """The path as the nodes render it: "m", or "m/0/1" (no leading zeros).
    Hardened steps are refused: threshold keys derive publicly."""
    if path in ("", "m"):
        return "m"
    parts = path.split("/")
    if parts[0] != "m" or len(parts) < 2:
        raise ValueError(f"path {path!r}: expected m or m/<index>/...")
    out = ["m"]
    for p in parts[1:]:
        if not p.isdigit() or int(p) >= 2**31:
            raise ValueError(f"path {path!r}: {p!r} is not a non-hardened index (0 to 2^31-1)")
        out.append(str(int(p)))
    return "/".join(out)


class Client:
    """A client of a thresig cluster, as one client identity."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        ca_pem: bytes,
        cert_pem: bytes,
        key_pem: bytes,
        timeout: float = 30.0,
    ):
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self._endpoints = list(endpoints)
        self._timeout = timeout
        self._key = serialization.load_pem_private_key(key_pem, password=None)
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            self._scheme = {"secp256r1": ECDSA_P256_SHA256, "secp384r1": ECDSA_P384_SHA384}.get(
                self._key.curve.name
            )
        elif isinstance(self._key, ed25519.Ed25519PrivateKey):
            self._scheme = ED25519
        else:
            self._scheme = None
        if self._scheme is None:
            raise ValueError("the client key must be ECDSA P-256, P-384 or Ed25519")
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
        )
        # Dialled by address, verified as the node's name (its certificate's DNS SAN).
        self._stubs = [
            signer_pb2_grpc.SignerStub(
                grpc.secure_channel(
                    e.address, creds, options=[("grpc.ssl_target_name_override", e.name)]
                )
            )
            for e in self._endpoints
        ]
        self._preferred = 0

    @classmethod
    def from_certs(cls, certs: str, identity: str, endpoints: Sequence[Endpoint], **kw) -> "Client":
        """Reads `thresig certs init`'s layout: ca.pem and clients/<identity>.{pem,key}."""

        def read(*p: str) -> bytes:
            with open(os.path.join(certs, *p), "rb") as f:
                return f.read()

        return cls(
            endpoints,
            read("ca.pem"),
            read("clients", f"{identity}.pem"),
            read("clients", f"{identity}.key"),
            **kw,
        )

    def _sign_bytes(self, data: bytes) -> bytes:
        if self._scheme == ECDSA_P256_SHA256:
            return self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        if self._scheme == ECDSA_P384_SHA384:
            return self._key.sign(data, ec.ECDSA(hashes.SHA384()))
        return self._key.sign(data)

    def _call(self, method: str, request):
        """Calls `method` on the preferred endpoint, failing over in order."""
        last: Optional[ThresigError] = None
        n = len(self._stubs)
        for i in range(n):
            at = (self._preferred + i) % n
            try:
                answer = getattr(self._stubs[at], method)(request, timeout=self._timeout)
                self._preferred = at
                return answer
            except grpc.RpcError as e:
                reason = dict(e.trailing_metadata() or ()).get("thresig-reason")
                last = ThresigError(e.code(), e.details() or "", reason, self._endpoints[at].address)
                if e.code() not in FAILOVER_CODES:
                    raise last from None
        assert last is not None
        raise last

    def _request(self, key_id: str, path: str, request_id: Optional[str], expiry: int):
        rid = request_id or secrets.token_hex(16)
        return rid, int(time.time()) + expiry, _canonical_path(path)

    def sign(
        self,
        key_id: str,
        digest: bytes,
        path: str = "m",
        slot: Optional[Slot] = None,
        request_id: Optional[str] = None,
        expiry_secs: int = DEFAULT_EXPIRY_SECS,
    ) -> Signature:
        """Signs a 32-byte digest (blind signing: only where the policy allows raw digests)."""
        if len(digest) != 32:
            raise ValueError(f"digest must be 32 bytes, got {len(digest)}")
        rid, expiry, path = self._request(key_id, path, request_id, expiry_secs)
        signed = self._sign_bytes(canonical_bytes_v1(key_id, digest, path, slot, rid, expiry))
        req = signer_pb2.SignRequest(
            key_id=key_id,
            digest=digest,
            path=path,
            request_id=rid,
            expiry_unix=expiry,
            signature_scheme=self._scheme,
            client_signature=signed,
        )
        if slot:
            req.slot.CopyFrom(
                signer_pb2.Slot(scope=slot.scope, height=slot.height, round=slot.round, step=slot.step)
            )
        return self._finish(self._call("Sign", req))

    def _payload_request(self, key_id, kind, payload, path, request_id, expiry_secs):
        kind = PayloadKind(kind)
        if kind is PayloadKind.BITCOIN_PSBT:
            path = "m"
        rid, expiry, path = self._request(key_id, path, request_id, expiry_secs)
        signed = self._sign_bytes(canonical_bytes_v2(key_id, kind, payload, path, rid, expiry))
        req = signer_pb2.SignRequest(
            key_id=key_id,
            path=path,
            request_id=rid,
            expiry_unix=expiry,
            signature_scheme=self._scheme,
            client_signature=signed,
        )
        setattr(req, kind.value, payload)
        return req

    def sign_payload(
        self,
        key_id: str,
        kind: PayloadKind,
        payload: bytes,
        path: str = "m",
        request_id: Optional[str] = None,
        expiry_secs: int = DEFAULT_EXPIRY_SECS,
    ) -> Signature:
        """Signs a typed payload; `Signature.payload` holds the finished output
        (signed transaction, hash and sender; r||s||v; the PSBT; TxRaw)."""
        req = self._payload_request(key_id, kind, payload, path, request_id, expiry_secs)
        return self._finish(self._call("Sign", req))

    def evaluate(self, key_id: str, kind: PayloadKind, payload: bytes, path: str = "m"):
        """A dry run: every node's verdict on the payload, nothing signed."""
        return self._call("Evaluate", self._payload_request(key_id, kind, payload, path, None, DEFAULT_EXPIRY_SECS))

    def public_key(self, key_id: str, path: str = "m") -> signer_pb2.GetPublicKeyResponse:
        """The key's (derived) public key, chain code and Ethereum address."""
        return self._call(
            "GetPublicKey", signer_pb2.GetPublicKeyRequest(key_id=key_id, path=_canonical_path(path))
        )

    @staticmethod
    def _finish(r: signer_pb2.SignResponse) -> Signature:
        return Signature(
            r=r.r,
            s=r.s,
            recovery_id=r.recovery_id,
            der=r.der,
            rsv=r.rsv,
            public_key=r.public_key,
            participants=list(r.participants),
            request_id=r.request_id,
            key_type=r.key_type,
            payload=r.payload if r.HasField("payload") else None,
        )
