"""``arena-policy``: serve a policy, or check a running policy server.

    arena-policy serve my_module:make_policy --host 0.0.0.0 --port 8000 [--api-key KEY] [--arena-nonce N]
    arena-policy serve --baseline NAME --port 8000
    arena-policy check ws://host:8000 [--api-key KEY] [--timeout 8] [--allow public,private,loopback]

``module:factory`` names either a :class:`~policy_server.base.BasePolicy` instance or a callable that takes no
arguments and returns one; the current directory is importable, as with ``python -m``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import urllib.request
from collections.abc import Sequence
from typing import Any

from policy_server import logs
from policy_server.base import BasePolicy


class TargetError(ValueError):
    """A ``module:factory`` target cannot be imported or does not give a BasePolicy."""


def load_policy(target: str) -> BasePolicy:
    """Import ``module:attr`` (``attr`` may be dotted) and return the policy it is or makes."""
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise TargetError(f"target must look like module:factory, got {target!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"cannot import {module_name!r}: {exc}") from exc
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError as exc:
            raise TargetError(f"{target!r}: no attribute {attr!r}") from exc
    policy = obj() if callable(obj) and not isinstance(obj, BasePolicy) else obj
    if not isinstance(policy, BasePolicy):
        raise TargetError(f"{target!r} gave {type(policy).__name__}, not a policy_server.base.BasePolicy")
    return policy


def load_baseline(name: str) -> BasePolicy:
    """A built-in baseline policy by name (see ``policy_server.baselines.BASELINES``)."""
    try:
        from policy_server.baselines import BASELINES, make_baseline
    except ImportError as exc:
        raise TargetError(f"the built-in baselines cannot be loaded: {exc}") from exc
    if name not in BASELINES:
        available = "\n".join(f"  {key}: {description}" for key, description in sorted(BASELINES.items()))
        raise TargetError(f"unknown baseline {name!r}; available:\n{available}")
    return make_baseline(name)


def _serve(args: argparse.Namespace) -> int:
    from policy_server.server import PolicyServer

    if (args.target is None) == (args.baseline is None):
        raise TargetError("give either module:factory or --baseline NAME")
    policy = load_baseline(args.baseline) if args.baseline else load_policy(args.target)
    if args.connect:
        return _serve_dialout(args, PolicyServer(policy))
    server = PolicyServer(
        policy, host=args.host, port=args.port, api_key=args.api_key, arena_nonce=args.arena_nonce
    )
    print(
        f"arena-policy serving {args.baseline or args.target} on ws://{args.host}:{args.port}",
        file=sys.stderr,
        flush=True,
    )
    server.serve_forever()
    return 0


def relay_for(connect: str, *, timeout: float = 10.0) -> str:
    """The relay to dial: ``connect`` itself when it is a ws(s):// URL, else the relay the arena at ``connect``
    (http(s)://) names at ``GET /api/v1/relay/dialout/``."""
    if connect.startswith(("ws://", "wss://")):
        return connect.rstrip("/")
    if not connect.startswith(("http://", "https://")):
        raise TargetError(
            f"--connect takes the arena's http(s):// URL or a relay's ws(s):// URL, got {connect!r}"
        )
    url = connect.rstrip("/") + "/api/v1/relay/dialout/"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read(64 * 1024))
    except (OSError, ValueError) as exc:
        raise TargetError(f"cannot ask the arena at {connect} for its relay: {exc}") from exc
    relay = body.get("relay_url") if isinstance(body, dict) else None
    if not isinstance(relay, str) or not relay.startswith(("ws://", "wss://")):
        raise TargetError(f"the arena at {connect} did not name a relay")
    return relay.rstrip("/")


def _serve_dialout(args: argparse.Namespace, server: Any) -> int:
    import asyncio
    import signal

    from policy_server.dialout import DialoutRefused

    if not args.key or not args.policy:
        raise TargetError("--connect needs --key OWNER_KEY and --policy SLUG")
    relay = relay_for(args.connect)
    print(
        f"arena-policy serving {args.baseline or args.target} as {args.policy} through {relay} (dial-out, "
        "no port bound)",
        file=sys.stderr,
        flush=True,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.serve_dialout(relay, key=args.key, policy=args.policy, stop=stop)

    try:
        asyncio.run(main())
    except DialoutRefused as exc:
        raise TargetError(str(exc)) from None
    return 0


def _check(args: argparse.Namespace) -> int:
    from policy_server import netguard
    from policy_server.check import policy_check

    try:
        allow = netguard.parse_allow(args.allow)
    except ValueError as exc:
        raise TargetError(str(exc)) from exc
    result = policy_check(args.url, timeout=args.timeout, api_key=args.api_key, endpoint_allow=allow)
    print(json.dumps(result.to_dict(), indent=2))
    return 0 if result.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arena-policy", description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a policy over the openpi websocket protocol")
    serve.add_argument("target", nargs="?", help="module:factory giving a BasePolicy")
    serve.add_argument("--baseline", help="serve a built-in baseline policy instead")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--api-key", help="require this key from clients (Authorization: Api-Key or ?api_key=)"
    )
    serve.add_argument(
        "--arena-nonce",
        help="registration nonce the arena issued, sent in the metadata to prove you control this endpoint",
    )
    serve.add_argument(
        "--connect",
        metavar="ARENA_URL",
        help="dial out instead of listening: the arena's http(s):// URL (or a relay's ws(s):// URL); "
        "no inbound port is needed",
    )
    serve.add_argument("--key", metavar="OWNER_KEY", help="with --connect: your owner API key")
    serve.add_argument("--policy", metavar="SLUG", help="with --connect: the policy's slug")
    serve.set_defaults(run=_serve)
    check = commands.add_parser("check", help="dry-run check of a running policy server")
    check.add_argument("url", help="ws://host:port of the policy server")
    check.add_argument("--api-key")
    check.add_argument("--timeout", type=float, default=8.0, help="seconds in total")
    check.add_argument(
        "--allow",
        default="public,private,loopback",
        help="address classes the check may connect to (default: all routable ones, for your own servers)",
    )
    check.set_defaults(run=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.configure()
    try:
        code = args.run(args)
    except TargetError as exc:
        print(f"arena-policy: {exc}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


def relay_main(argv: Sequence[str] | None = None) -> int:
    """``arena-relay`` (:func:`policy_server.relay.main`). The relay runs beside the arena server, so its
    packages (cryptography, websockets >= 15) come with the ``server`` extra, not with the base install."""
    try:
        from policy_server.relay import main as run_relay
    except ModuleNotFoundError as exc:
        print(
            f"arena-relay: the relay is part of the arena server and needs the {exc.name} package: "
            "pip install 'robot-policy-arena[server]'",
            file=sys.stderr,
        )
        return 2
    run_relay(argv)
    return 0
