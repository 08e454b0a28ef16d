"""An in-process Ethereum chain (eth-tester with py-evm) driven over stdin/stdout
by tests/evm_execution.rs: implementations this project did not write decode a
transaction the cluster signed, recover its sender and execute it.

Protocol: one JSON object per line each way.
  out: {"chain_id": int, "base_fee": int}
  in:  {"fund": "0x...", "value": int}      out: {"balance": int}
  in:  {"raw": "0x..."}                      out: {"sender": str, "status": int,
        "to": str, "value": int, "sender_delta": int, "to_delta": int,
        "gas_used": int, "effective_gas_price": int, "hash": str}
Any failure is reported as {"error": str} and the process exits 1.
"""

import json
import sys

from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from eth_tester import EthereumTester, PyEVMBackend


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    chain = EthereumTester(PyEVMBackend())
    funder = chain.get_accounts()[0]
    latest = chain.get_block_by_number("latest")
    say({"chain_id": chain.backend.chain.chain_id, "base_fee": latest["base_fee_per_gas"]})
    for line in sys.stdin:
        msg = json.loads(line)
        if "fund" in msg:
            chain.send_transaction(
                {
                    "from": funder,
                    "to": msg["fund"],
                    "value": msg["value"],
                    "gas": 21000,
                    "max_fee_per_gas": 10 * latest["base_fee_per_gas"],
                    "max_priority_fee_per_gas": 1,
                }
            )
            say({"balance": chain.get_balance(msg["fund"])})
        elif "raw" in msg:
            raw = msg["raw"]
            # Decoded and its sender recovered by eth-account, independently
            # of the chain that executes it.
            sender = Account.recover_transaction(raw)
            tx = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
            to = tx["to"]
            if isinstance(to, (bytes, bytearray)):
                to = "0x" + to.hex()
            before = (chain.get_balance(sender), chain.get_balance(to))
            tx_hash = chain.send_raw_transaction(raw)
            receipt = chain.get_transaction_receipt(tx_hash)
            after = (chain.get_balance(sender), chain.get_balance(to))
            say(
                {
                    "sender": sender,
                    "status": receipt["status"],
                    "to": to if isinstance(to, str) else "0x" + bytes(to).hex(),
                    "value": tx["value"],
                    "sender_delta": after[0] - before[0],
                    "to_delta": after[1] - before[1],
                    "gas_used": receipt["gas_used"],
                    "effective_gas_price": receipt["effective_gas_price"],
                    "hash": tx_hash if isinstance(tx_hash, str) else "0x" + tx_hash.hex(),
                }
            )
        else:
            say({"error": f"unknown message {msg}"})
            return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # the test prints it
        say({"error": f"{type(e).__name__}: {e}"})
        sys.exit(1)
