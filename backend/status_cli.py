"""``dreamjourney status --backend ADDR``: ask a backend what it is doing."""

from __future__ import annotations

import argparse
import sys
import time
import uuid


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show a backend's workers, queues and running jobs")
    p.add_argument("--backend", default="tcp://127.0.0.1:5555", help="backend address")
    p.add_argument("--keys", help="CurveZMQ key folder (for a backend off loopback)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer")
    p.add_argument("--json", action="store_true", help="print the StatusReply as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import msgspec

    from backend.status import format_status
    from protocol.messages import Error, Status, StatusReply
    from protocol.transport import Client, ClientKeys, PeerGone

    try:
        keys = ClientKeys.from_folder(args.keys) if args.keys else None
        client = Client(args.backend, keys=keys)
        client.connect(timeout=args.timeout)
    except (OSError, ValueError, ConnectionError) as exc:
        print(f"error: cannot reach the backend at {args.backend}: {exc}", file=sys.stderr)
        return 2
    try:
        request_id = uuid.uuid4().hex[:8]
        client.send(Status(request_id=request_id))
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            ev = client.poll(timeout=max(0.0, deadline - time.monotonic()))
            if isinstance(ev, PeerGone):
                break
            msg = getattr(ev, "msg", None)
            if isinstance(msg, Error):
                print(f"error: the backend answered [{msg.code}] {msg.message}", file=sys.stderr)
                return 2
            if isinstance(msg, StatusReply) and msg.request_id == request_id:
                print(msgspec.json.encode(msg).decode() if args.json else format_status(msg))
                return 0
        print(f"error: no status from {args.backend} within {args.timeout} s", file=sys.stderr)
        return 2
    finally:
        client.close()
