"""Braze clusters and endpoint URLs: a cluster name, a REST or dashboard URL → the REST base URL.

The one table of Braze's clusters lives here (checked against Braze's published instance list;
see ``docs/client.md``). :func:`resolve_endpoint` turns what a user knows (``"US-03"``, the
dashboard URL in the browser, the REST URL) into the base URL the client posts to, and refuses
everything that is ambiguous or unsafe (plain ``http://`` to a remote host, credentials in a URL).

Its errors never repeat the value they were given: an ``--endpoint`` flag fed from the wrong
environment variable would otherwise print a key. They say what was expected and the value's
length and shape only.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from typing import Final

from braze_cohorts.exceptions import ConfigurationError

__all__ = ["CLUSTERS", "resolve_endpoint", "resolve_endpoint_or_error"]


def _cluster_table() -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {
        f"US-0{n}": (f"rest.iad-0{n}.braze.com", f"dashboard-0{n}.braze.com") for n in range(1, 9)
    }
    table["US-10"] = ("rest.us-10.braze.com", "dashboard.us-10.braze.com")
    table["EU-01"] = ("rest.fra-01.braze.eu", "dashboard-01.braze.eu")
    table["EU-02"] = ("rest.fra-02.braze.eu", "dashboard-02.braze.eu")
    for region in ("au", "id", "jp", "kr"):
        table[f"{region.upper()}-01"] = (
            f"rest.{region}-01.braze.com",
            f"dashboard.{region}-01.braze.com",
        )
    return table


#: Every Braze cluster: name → (REST host, dashboard host). There is no US-09.
CLUSTERS: Final[Mapping[str, tuple[str, str]]] = _cluster_table()

_CLUSTER_HOSTS: Final[Mapping[str, str]] = {name: rest for name, (rest, _) in CLUSTERS.items()}
_DASHBOARD_HOSTS: Final[Mapping[str, str]] = {dash: rest for rest, dash in CLUSTERS.values()}
_KNOWN_HOSTS: Final = frozenset(_CLUSTER_HOSTS.values()) | frozenset(_DASHBOARD_HOSTS)
_CLUSTER_NAME = re.compile(r"[A-Za-z]{2}-\d+")
_DASHBOARD_LIKE = re.compile(r"dashboard[.-]", re.IGNORECASE)
# Cluster-like names this short are shown in errors ("unknown Braze cluster 'US-09'"): no key
# is five or six characters long. Anything longer is described, never echoed.
_SHOWN_NAME_CHARS: Final = 6
_NAMED_SCHEMES: Final = frozenset({"http", "https", "ftp", "file", "ws", "wss"})
_EXPECTED: Final = (
    "expected a Braze cluster name (e.g. US-03), a REST or dashboard URL "
    "(e.g. https://rest.iad-03.braze.com), another https:// base URL, or http:// to a loopback host"
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _shape(text: str) -> str:
    """Describe ``text`` by its length and shape, never its content (it may be a key)."""
    n = len(text)
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        kind = f"{scheme}:// URL" if scheme in _NAMED_SCHEMES else "URL with another scheme"
        return f"a {n}-character {kind}"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return f"a {n}-character value with whitespace or control characters"
    if "." in text or "/" in text:
        return f"a {n}-character value without a scheme"
    return f"a {n}-character value"


def resolve_endpoint(endpoint: str) -> str:
    """Return the REST base URL that ``endpoint`` names, without a trailing slash.

    Accepted, surrounding whitespace ignored:

    * a cluster name in any case: ``US-01`` ... ``US-08``, ``US-10``, ``EU-01``, ``EU-02``,
      ``AU-01``, ``ID-01``, ``JP-01``, ``KR-01`` (see :data:`CLUSTERS`);
    * a REST URL such as ``https://rest.iad-03.braze.com`` (a Braze host may omit ``https://``);
    * a dashboard URL such as ``https://dashboard-03.braze.com`` (its path is ignored);
    * any other ``https://`` base URL (a proxy, a test server, a Braze cluster newer than this
      table); its path prefix is kept;
    * ``http://`` only when the host is loopback (``127.0.0.0/8``, ``::1``, ``localhost``).

    Args:
        endpoint: A cluster name or a URL.

    Returns:
        The base URL, e.g. ``"https://rest.iad-03.braze.com"``.

    Raises:
        ConfigurationError: For anything else: an unknown cluster (the message lists the known
            ones), another scheme, plain ``http://`` to a non-loopback host, credentials, a query
            or fragment in the URL. The message never repeats the value, only its length and
            shape: it may be a key passed by mistake.

    Example:
        >>> resolve_endpoint("us-03")
        'https://rest.iad-03.braze.com'
        >>> resolve_endpoint("https://dashboard.jp-01.braze.com/app")
        'https://rest.jp-01.braze.com'
    """
    result = resolve_endpoint_or_error(endpoint)
    # The value may be a key: no frame of the traceback may hold it (error trackers show
    # every frame's locals), so the error is raised from here, after forgetting it.
    del endpoint
    if isinstance(result, ConfigurationError):
        raise result
    return result


def resolve_endpoint_or_error(endpoint: object) -> str | ConfigurationError:
    """:func:`resolve_endpoint`, returning its error instead of raising it.

    The error comes without a traceback, so that the frames that held the value are gone: the
    caller forgets the value, then raises.
    """
    try:
        return _resolve(endpoint)
    except ConfigurationError as exc:
        exc.__cause__ = exc.__context__ = None  # a parser's error may hold the value
        return exc.with_traceback(None)


def _resolve(endpoint: object) -> str:
    if not isinstance(endpoint, str):
        raise ConfigurationError(f"endpoint must be a str, not {type(endpoint).__name__}")
    text = endpoint.strip()
    if not text:
        raise ConfigurationError(f"endpoint is empty: {_EXPECTED}")
    if any(ord(ch) <= 32 or ord(ch) == 127 for ch in text):
        raise ConfigurationError(
            f"endpoint ({_shape(text)}) contains whitespace or control characters; {_EXPECTED}"
        )
    if "://" not in text:
        if _CLUSTER_NAME.fullmatch(text):
            host = _CLUSTER_HOSTS.get(text.upper())
            if host is None:
                which = (
                    repr(text.upper()) if len(text) <= _SHOWN_NAME_CHARS else f"({_shape(text)})"
                )
                known = ", ".join(_CLUSTER_HOSTS)
                raise ConfigurationError(
                    f"unknown Braze cluster {which}; known: {known}. For a cluster newer than "
                    "this list, give its REST URL (https://rest.<cluster>.braze.com)"
                )
            return f"https://{host}"
        if text.lower().split("/", 1)[0] in _KNOWN_HOSTS:
            text = f"https://{text}"
        else:
            raise ConfigurationError(f"endpoint ({_shape(text)}) is not recognised: {_EXPECTED}")
    return _resolve_url(text)


def _resolve_url(text: str) -> str:
    shape = _shape(text)
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError:
        # Not chained: the parser's message may quote part of the URL ("... as 'port'").
        raise ConfigurationError(
            f"endpoint ({shape}) is not a valid URL (a bad port or host?)"
        ) from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("https", "http"):
        raise ConfigurationError(
            f"endpoint ({shape}): only https:// is accepted (http:// for loopback only)"
        )
    if not host:
        raise ConfigurationError(f"endpoint ({shape}) has no host")
    if parts.username is not None or parts.password is not None or "@" in text:
        # An "@" elsewhere (the path) is refused too: parsers disagree on such URLs, and no
        # Braze URL has one.
        raise ConfigurationError(
            "endpoint must not contain '@' or credentials (user:password@); "
            "keys are passed separately"
        )
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ConfigurationError(f"endpoint ({shape}) must not have a query or a fragment")
    if scheme == "http" and not _is_loopback(host):
        raise ConfigurationError(
            f"endpoint ({shape}): plain http:// is refused except for loopback hosts "
            "(the keys would travel unencrypted); use https://"
        )
    if host in _DASHBOARD_HOSTS:
        if scheme != "https" or port is not None:
            raise ConfigurationError(
                f"endpoint ({shape}) is not a Braze dashboard URL: a dashboard is "
                "https:// without a port"
            )
        return f"https://{_DASHBOARD_HOSTS[host]}"
    if _DASHBOARD_LIKE.match(host) and host.endswith((".braze.com", ".braze.eu")):
        known = ", ".join(sorted(_DASHBOARD_HOSTS))
        raise ConfigurationError(
            f"endpoint ({shape}) is an unknown Braze dashboard; known: {known}. "
            "Give the cluster name or its REST URL instead"
        )
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"
