"""``nas device serve``: the measurement server of a target device; ``--device URL`` on the host."""

from __future__ import annotations

import argparse
import contextlib
import functools
from typing import Callable


def register(sub: argparse._SubParsersAction) -> None:
    from nas.latency import device_server

    dev = sub.add_parser("device", help="serve measurements on this device to a host over HTTP")
    dev_sub = dev.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    serve = dev_sub.add_parser("serve", help="time ONNX graphs sent by `--device URL` commands (torch-free)")
    device_server.add_arguments(serve)
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from nas.errors import NasError
    from nas.latency import device_server

    try:
        config = device_server.config_from(args)
    except ValueError as exc:
        raise NasError(str(exc)) from None
    try:
        device_server.serve(config)
    except OSError as exc:
        raise NasError(f"cannot serve on {config.host}:{config.port} ({exc.strerror or exc})") from None
    return 0


def remote_options(p: argparse.ArgumentParser, what: str) -> None:
    """``--device URL`` and ``--token-file`` for a command that measures."""
    p.add_argument("--device", metavar="URL", help=f"{what} on the device whose measurement server (`nas device "
                                                   f"serve`) is at URL, e.g. http://127.0.0.1:8765")
    p.add_argument("--token-file", metavar="FILE", help="the server's token (default: the file named by "
                                                         "NAS_DEVICE_TOKEN_FILE, if set)")


def measuring_device(url: str | None, token_file: str | None = None) -> contextlib.AbstractContextManager:
    """Measure on the server at ``url`` within the block (None: on this machine)."""
    from nas.latency.remote import use_device

    return use_device(url, token_file)


def on_device(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command whose measurements go to ``--device URL``'s server (to this machine without one)."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        with measuring_device(args.device, args.token_file):
            return command(args)
    return run


def split_target(device: str | None) -> tuple[str | None, str | None]:
    """A --device value as (server URL, target device): a URL measures on that server, whose device
    is then "this" device; a device id (or None) measures nothing remotely."""
    from nas.latency.remote import is_device_url

    return (device, "this") if is_device_url(device) else (None, device)
