"""Host specs: ``ssh://[user@]host[:port]``, and the lab's ``local://`` and ``docker://``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import (
    UsageError,
)
from ..names import is_host_name


@dataclass(frozen=True)
class HostSpec:
    """A parsed host spec: ``local://``, ``ssh://user@host:port``, ``docker://name``.

    An ssh host is a lower-case RFC 1123 host name, an IPv4 address, or an IPv6
    address (compressed, without brackets: what ssh and paramiko connect to).
    """

    scheme: str
    host: str = ""
    user: str = "root"
    port: int = 22

    @property
    def address(self) -> str:
        """The host to connect to (a name or an address; IPv6 without brackets)."""
        return self.host

    @property
    def rsync_address(self) -> str:
        """``user@host`` as rsync must read it: an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}"

    def __str__(self) -> str:
        if self.scheme == "local":
            return "local://"
        if self.scheme == "docker":
            return f"docker://{self.host}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}:{self.port}"


_SPEC_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_SPEC_PORT = re.compile(r"[1-9][0-9]{0,4}")
_DOCKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _spec_shown(spec: str) -> str:
    """The spec for an error message, a password in it replaced by ***."""
    scheme, sep, rest = spec.partition("://")
    userinfo, at, hostport = rest.rpartition("@")
    if at and ":" in userinfo:
        return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{hostport}"
    return spec


def parse_host_spec(spec: str) -> HostSpec:
    """Parse a testinfra-style host spec; raise UsageError naming what is wrong.

    ssh: ``ssh://[user@]host[:port]`` with a user name like ``root`` or
    ``backup``, a host name (RFC 1123 labels), an IPv4 address or an IPv6
    address in brackets, and a port 1-65535 (22 when left out). No password
    (the tool logs in with its own key), no path, query or fragment.
    """
    import ipaddress

    if not isinstance(spec, str) or "://" not in spec:
        raise UsageError(f"host spec {spec!r} must look like local://, ssh://user@host:port "
                         "or docker://name")
    shown = repr(_spec_shown(spec))
    scheme, _sep, rest = spec.partition("://")
    if scheme == "local":
        if rest not in ("", "localhost"):
            raise UsageError(f"host spec {shown}: local:// takes no host")
        return HostSpec("local", "localhost")
    if scheme == "docker":
        if not _DOCKER_NAME.fullmatch(rest):
            raise UsageError(f"host spec {shown}: docker:// needs a container name "
                             "(letters, digits and _ . -)")
        return HostSpec("docker", rest)
    if scheme != "ssh":
        raise UsageError(f"host spec {shown}: unknown scheme {scheme!r} "
                         "(expected local, ssh or docker)")
    userinfo, at, hostport = rest.rpartition("@")
    if at and ":" in userinfo:
        raise UsageError(f"host spec {shown}: a password in the host spec is refused "
                         "(the tool logs in with its own key, ssh.key)")
    if at and not _SPEC_USER.fullmatch(userinfo):
        raise UsageError(f"host spec {shown}: bad user name {userinfo!r} (letters, digits "
                         "and _ . -, starting with a letter or _)")
    user = userinfo if at else "root"
    if hostport.startswith("["):
        inner, bracket, after = hostport[1:].partition("]")
        try:
            if not bracket or "%" in inner:
                raise ValueError(inner)
            host = ipaddress.IPv6Address(inner).compressed
        except ValueError:
            raise UsageError(f"host spec {shown}: expected an IPv6 address in brackets "
                             "like [2001:db8::2]") from None
    else:
        name, colon, port_text = hostport.partition(":")
        after = colon + port_text
        host = name.lower()
        if not name or not is_host_name(host):
            raise UsageError(f"host spec {shown}: {name!r} is not a host name (RFC 1123: "
                             "letters, digits and inner -, dot-separated), an IPv4 address "
                             "or an IPv6 address in brackets")
    port = 22
    if after:
        number = after[1:]
        if after[0] != ":" or not _SPEC_PORT.fullmatch(number) or int(number) > 65535:
            raise UsageError(f"host spec {shown}: bad port {after[1:]!r} after the host "
                             "(expected 1-65535)")
        port = int(number)
    return HostSpec("ssh", host, user, port)
