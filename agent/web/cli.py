"""`fieldstation web passwd`: set the station page's password (wired in by agent/cli.py)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.web.auth import PasswordError, write_password_file


def cmd_passwd(args: argparse.Namespace) -> int:
    target = args.file
    if target is None:
        config = load_config(args.config)
        if not config.web.password_file:
            print(
                "error: web.password_file is not set in the config; set it "
                "(e.g. /etc/fieldstation/web-password) or pass --file",
                file=sys.stderr,
            )
            return 2
        target = Path(config.web.password_file)
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("new station password: ")
        if getpass.getpass("again: ") != password:
            print("error: the two passwords differ; nothing written", file=sys.stderr)
            return 2
    try:
        write_password_file(target, password)
    except PasswordError as exc:
        print(f"error: {exc}; nothing written", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {target}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"password hash written to {target} (scrypt, mode 0600); logins use it at once")
    return 0


def add_subcommands(subparsers: Any) -> None:
    """Add `web passwd` to the fieldstation command."""
    web = subparsers.add_parser("web", help="the technician's station page")
    sub = web.add_subparsers(dest="web_command", required=True)
    pw = sub.add_parser("passwd", help="set the page's password (stored as an scrypt hash)")
    pw.add_argument(
        "--config", type=Path, default=None, help="station TOML (for web.password_file)"
    )
    pw.add_argument(
        "--file", type=Path, default=None, help="write here instead of web.password_file"
    )
    pw.add_argument("--stdin", action="store_true", help="read the password from one line of stdin")
    pw.set_defaults(func=cmd_passwd)
