"""The ``serve`` command of ``alexnet-zoo``: an index folder over HTTP (JSON API and a web page).

Argument parsing only: the service is :mod:`alexnet_zoo.serve`'s. FastAPI and uvicorn are the
optional extra ``serve`` and are imported when the command runs, so the CLI starts without them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alexnet_zoo.cli.failures import CommandError
from alexnet_zoo.cli.options import bounded_int, device_arg
from alexnet_zoo.eval.precision_names import PRECISION_HELP, PRECISIONS

__all__ = ["add_commands"]


def _serve(args: argparse.Namespace) -> int:
    try:  # the optional extra, and the app: imported by the command, not the parser
        import uvicorn

        from alexnet_zoo.serve.access import check_binding
        from alexnet_zoo.serve.app import create_app
    except ImportError as err:
        raise CommandError(f"serving needs the optional extra: pip install -e \".[serve]\" ({err})") from None
    check_binding(args.host, args.token, args.no_auth)
    app = create_app(args.index, pretrained=args.pretrained, precision=args.precision,
                     device=None if args.device is None else str(args.device), token=args.token,
                     max_upload=args.max_upload, max_batch=args.max_batch)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"alexnet-zoo serve: http://{shown}:{args.port}/ (API at /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def add_commands(commands: Any) -> None:
    """Register ``serve`` on the CLI's subparsers."""
    serve = commands.add_parser("serve", help="search an index over HTTP: a JSON API and a web page",
                                epilog="binding beyond localhost needs --token TOKEN or an explicit --no-auth")
    serve.add_argument("index", type=Path, help="an index folder (alexnet-zoo index build --out)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=bounded_int(0, 65535), default=8000)
    serve.add_argument("--pretrained", default=None,
                       help="weights (default: those info.json names, if a spec, an hf-hub: repo or inside the "
                            "index folder; other local weights must be passed here)")
    serve.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    serve.add_argument("--device", type=device_arg, default=None, help="cpu, cuda, cuda:N or mps for the model")
    auth = serve.add_mutually_exclusive_group()
    auth.add_argument("--token", default=None, help="a bearer token every request must carry")
    auth.add_argument("--no-auth", action="store_true", help="serve beyond localhost without a token")
    serve.add_argument("--max-upload", type=bounded_int(1024, 2**30), default=20 * 2**20,
                       help="largest picture upload in bytes (default 20 MiB)")
    serve.add_argument("--max-batch", type=bounded_int(1, 1024), default=32,
                       help="picture queries gathered into one forward pass at most")
    serve.set_defaults(run=_serve)
