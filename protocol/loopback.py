"""Which addresses count as loopback, and the refusal to bind anything else without keys."""

from __future__ import annotations

import ipaddress


class InsecureBindError(PermissionError):
    """A non-loopback bind was asked for without CurveZMQ keys."""


def is_loopback(address: str) -> bool:
    """True for tcp addresses on the loopback range, and for ipc:// and inproc://."""
    scheme, _, rest = address.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", interface names and host names are not loopback


def check_bind(address: str, has_keys: bool) -> None:
    """Raise InsecureBindError for a non-loopback ``address`` without CurveZMQ keys."""
    if not has_keys and not is_loopback(address):
        raise InsecureBindError(
            f"refusing to bind {address} without CurveZMQ keys: make them with "
            "`dreamjourney keys DIR` and pass --keys DIR, or bind 127.0.0.1"
        )
