"""Which Host / Origin names the studio answers: DNS rebinding (a foreign name resolving to this
machine) and cross-site pages are refused on every bind, loopback or not."""
import ipaddress
import re

from latentedit.errors import InputError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _canonical(name):
    """A host name or address as compared: lower case, IPv6 without brackets, no final dot."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.rstrip(".")


def check_allowed_host(name):
    """An --allow-host value (a DNS name or an IP address, no port) -> its compared form; InputError otherwise."""
    host = _canonical(str(name))
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        if all(re.fullmatch(r"[a-z0-9-]{1,63}", label) for label in host.split(".")):
            return host
    raise InputError(f"--allow-host takes a host name or an IP address without a port, got {str(name)[:80]!r}")


def allowed_hosts(bind_host, extra=()):
    """The names a request's Host may use for a server bound to bind_host: that address, the
    loopback names when it is loopback or all interfaces (0.0.0.0, ::), and `extra`."""
    bound = _canonical(bind_host)
    names = {bound} | {check_allowed_host(n) for n in extra}
    if is_loopback(bound) or bound in ("", "0.0.0.0", "::"):
        names |= set(LOOPBACK_NAMES)
    return frozenset(names - {"", "0.0.0.0", "::"})


def host_allowed(value, allowed, port):
    """Whether a Host header (or an Origin's host part) names one of `allowed` on `port` (no port
    given: 80)."""
    value = value.strip().lower()
    if value.startswith("["):  # [IPv6]:port
        name, bracket, rest = value[1:].partition("]")
        if not bracket:
            return False
    else:
        name, colon, rest = value.partition(":")
        rest = colon + rest
    if rest and not (rest.startswith(":") and rest[1:].isascii() and rest[1:].isdigit()):
        return False
    return (int(rest[1:]) if rest else 80) == port and _canonical(name) in allowed
