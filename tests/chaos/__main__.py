"""``python -m tests.chaos [--callbacks N] [--broker redis|rabbitmq]``: the chaos run; prints its
summary table and exits 1 when any check fails."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from tests.chaos.harness import ChaosConfig, chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callbacks", type=int, default=10_000)
    parser.add_argument("--traffic-s", type=float, default=None, help="spread the callbacks over this long")
    parser.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis",
                        help="rabbitmq: a RabbitMQ node of the run's own is the broker, and is restarted once")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args()

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")  # unwinds through the harness's cleanup

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    traffic_s = args.traffic_s or max(10.0, args.callbacks / 150)
    config = ChaosConfig(callbacks=args.callbacks, drivers=min(200, max(40, args.callbacks // 50)), traffic_s=traffic_s,
                         settle_timeout_s=max(300.0, args.callbacks * 0.12), broker=args.broker)
    report = chaos(config)
    print(json.dumps(report.figures, default=str) if args.json else report.table())
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
