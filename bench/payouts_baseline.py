"""The payouts bench's baseline: the simulator alone. ``--threads`` threads, each with its own
``httpx.Client`` (as ``workers.daraja.client.DarajaClient`` uses), send B2C payment requests
straight to the simulator with the bench's token and SecurityCredential, and result URLs at the
callback sink; no database, no queue. The bench starts as many of these processes as worker
processes. Prints ``{"accepted": n, "other": n}``.

    python -m bench.payouts_baseline --simulator URL --result-url URL --token T --credential C \
        --prefix p0 --count 500 --threads 4
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import httpx


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--simulator", required=True)
    parser.add_argument("--result-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--credential", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, default=300)
    args = parser.parse_args()
    counts = {"accepted": 0, "other": 0}
    lock = threading.Lock()
    next_index = iter(range(args.count))
    deadline = time.monotonic() + args.timeout_s

    def run() -> None:
        with httpx.Client(base_url=args.simulator, timeout=httpx.Timeout(15, connect=3)) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                response = client.post(
                    "/mpesa/b2c/v3/paymentrequest",
                    headers={"Authorization": f"Bearer {args.token}"},
                    json={
                        "OriginatorConversationID": f"bench_{args.prefix}_{i}",
                        "InitiatorName": "apiuser",
                        "SecurityCredential": args.credential,
                        "CommandID": "BusinessPayment",
                        "Amount": "10",
                        "PartyA": "4165253",
                        "PartyB": f"2547{10000000 + i % 1000}",
                        "Remarks": f"bench payout {i}",
                        "QueueTimeOutURL": args.result_url.replace("/result", "/timeout"),
                        "ResultURL": args.result_url,
                        "Occassion": "fleetpay",
                    },
                )
                ok = response.status_code == 200 and response.json().get("ResponseCode") == "0"
                with lock:
                    counts["accepted" if ok else "other"] += 1

    threads = [threading.Thread(target=run) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    json.dump(counts, sys.stdout)


if __name__ == "__main__":
    main()
