"""Python client for thresig, the threshold signing service.

    from thresig_client import Client, Endpoint

    client = Client.from_certs(
        certs="thresig-dev/certs", identity="validator",
        endpoints=[Endpoint("a", "127.0.0.1:7401"), Endpoint("b", "127.0.0.1:7402")],
    )
    sig = client.sign("val", bytes.fromhex("9f86...0a08"))
    print(sig.rsv.hex(), sig.participants)

Every request is signed with the client certificate's key (request signature
v1 for digests, v2 for typed payloads, as the repository README specifies);
a request meeting an unavailable node is sent unchanged to the next endpoint.
Errors raise `ThresigError`, carrying the gRPC code and the node's reason.
"""

from .client import (
    Client,
    Endpoint,
    PayloadKind,
    Signature,
    Slot,
    ThresigError,
    canonical_bytes_v1,
    canonical_bytes_v2,
)

__all__ = [
    "Client",
    "Endpoint",
    "PayloadKind",
    "Signature",
    "Slot",
    "ThresigError",
    "canonical_bytes_v1",
    "canonical_bytes_v2",
]
