"""`agent-rl kg-server --store PATH [--host 127.0.0.1] [--port 8001]`: serve a KG store for kg_query."""
from __future__ import annotations

import asyncio
import ipaddress
import sys

HELP = "Serve a KG store over HTTP for the kg_query tool"


def add_arguments(parser):
    from agent_rl.cli.bench_args import DefaultsHelpFormatter

    parser.formatter_class = DefaultsHelpFormatter   # every option shows its default
    parser.add_argument("--store", required=True, help="KG store JSON (agent-rl data generate kg, or a RoG converter)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="bind address (a loopback address: this machine only; the server has no authentication)")
    parser.add_argument("--port", type=int, default=8001, help="port (0 = a free one)")
    parser.add_argument("--max-batch", type=int, default=1024, help="most requests in one POST /retrieve list")
    parser.add_argument("--max-body-kb", type=int, default=1024, help="largest request body (larger: 413)")
    parser.add_argument("--max-in-flight", type=int, default=64,
                        help="most requests handled at once (more: 503 KG_SERVER_ERROR, which kg_query retries)")
    parser.add_argument("--read-timeout", type=float, default=10.0,
                        help="seconds to receive a request body after its headers (else 408)")
    parser.add_argument("--idle-timeout", type=float, default=30.0,
                        help="seconds before an idle or half-sent connection is closed")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args) -> int:
    from tools.kg_server import serve_forever

    if not _is_loopback(args.host):
        print(f"warning: binding to {args.host}: the KG server has no authentication", file=sys.stderr)

    def ready(url, index):
        print(f"KG server on {url} ({len(index)} samples, {index.num_triples} triples); Ctrl-C to stop", flush=True)

    for name in ("max_in_flight", "read_timeout", "idle_timeout", "max_batch", "max_body_kb"):
        if getattr(args, name) <= 0:
            print(f"error: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            return 2

    try:
        asyncio.run(serve_forever(args.store, args.host, args.port, on_ready=ready,
                                  max_batch=args.max_batch, max_body_bytes=args.max_body_kb * 1024,
                                  max_in_flight=args.max_in_flight, read_timeout_s=args.read_timeout,
                                  idle_timeout_s=args.idle_timeout))
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
