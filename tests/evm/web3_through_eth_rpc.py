"""web3.py, unchanged, against `thresig eth-rpc` (driven by tests/eth_rpc.rs).

An upstream Ethereum node is served here over HTTP JSON-RPC from an in-process
eth-tester chain (py-evm). The test starts `thresig eth-rpc --upstream <that>`
and sends its URL on stdin; web3.py then lists the accounts, sends a transfer
(nonce, gas and fees filled by eth-rpc from the upstream, signed by the
cluster, broadcast upstream), signs a message and typed data, and meets a
policy refusal. Every result is checked here with eth-account and printed as
one JSON line; any failure is {"error": ...} and exit 1.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from web3 import EthereumTesterProvider, Web3

TO = "0x1111111111111111111111111111111111111111"
STRANGER = "0x2222222222222222222222222222222222222222"
TYPED = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "chainId", "type": "uint256"},
        ],
        "Order": [{"name": "amount", "type": "uint256"}],
    },
    "primaryType": "Order",
    "domain": {"name": "thresig-test", "chainId": 131277322940537},
    "message": {"amount": 42},
}


def wire(v):
    """A result as an Ethereum node writes it: quantities and bytes as hex."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return hex(v)
    if isinstance(v, (bytes, bytearray)):
        return "0x" + bytes(v).hex()
    if isinstance(v, (list, tuple)):
        return [wire(x) for x in v]
    if hasattr(v, "items"):
        return {k: wire(x) for k, x in v.items()}
    return v


def main():
    provider = EthereumTesterProvider()
    lock = threading.Lock()

    class Upstream(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            try:
                with lock:
                    # Through web3's own request and result formatting for
                    # eth-tester, then back to the JSON-RPC wire format.
                    result = chain.manager._make_request(body["method"], body.get("params", []))
                answer = {"result": wire(result.get("result"))} if "error" not in result else {"error": dict(result["error"])}
            except Exception as e:
                answer = {"error": {"code": -32000, "message": f"{type(e).__name__}: {e}"}}
            answer["id"] = body.get("id")
            answer["jsonrpc"] = "2.0"
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    chain = Web3(provider)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"upstream": f"http://127.0.0.1:{server.server_port}", "chain_id": chain.eth.chain_id}), flush=True)

    w3 = Web3(Web3.HTTPProvider(json.loads(sys.stdin.readline())["eth_rpc"]))
    accounts = w3.eth.accounts
    me = accounts[0]
    chain.eth.send_transaction({"from": chain.eth.accounts[0], "to": me, "value": 5 * 10**18})

    before = chain.eth.get_balance(TO)
    tx_hash = w3.eth.send_transaction({"from": me, "to": TO, "value": 10**17})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    sent = chain.eth.get_transaction(tx_hash)

    signature = w3.eth.sign(me, text="hello from web3.py")
    signed_by = Account.recover_message(encode_defunct(text="hello from web3.py"), signature=signature)
    typed_sig = w3.eth.sign_typed_data(me, TYPED)
    typed_by = Account.recover_message(encode_typed_data(full_message=TYPED), signature=typed_sig)

    def refused(tx):
        try:
            w3.eth.send_transaction(tx)
            return None
        except Exception as e:  # web3 raises the JSON-RPC error
            return str(e)

    refusal = refused({"from": me, "to": STRANGER, "value": 1})
    over_limit = refused({"from": me, "to": TO, "value": 2 * 10**18})

    print(
        json.dumps(
            {
                "accounts": accounts,
                "status": receipt["status"],
                "from": receipt["from"],
                "nonce": sent["nonce"],
                "type": int(sent["type"]),
                "received": chain.eth.get_balance(TO) - before,
                "message_signer": signed_by,
                "typed_signer": typed_by,
                "refusal": refusal,
                "over_limit": over_limit,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        sys.exit(1)
