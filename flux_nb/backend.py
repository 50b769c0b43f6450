"""Which server the client talks to, and with what credentials.

Resolved when a client is built (never at import), in this order:

1. ``endpoint=`` given to the client: ``"fal"``, ``"embedded"``, or a URL of a fal-compatible server;
2. ``FLUX_NB_ENDPOINT`` (a URL; ``FLUX_NB_TOKEN`` is sent as its key);
3. a key (``key=``, :func:`set_session_key`, ``FAL_KEY`` or ``FAL_KEY_ID`` + ``FAL_KEY_SECRET``) -> fal.ai;
4. otherwise the embedded local server with the ``preview`` engine (offline, no key).

A fal key is only ever sent to fal's own hosts over https: it is not forwarded to a custom endpoint
(which gets ``FLUX_NB_TOKEN`` or an explicit ``key=``). Plain-http endpoints are refused unless they
are on loopback or explicitly allowed, since the key would cross the network in clear text.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from .errors import FluxConfigError

__all__ = ["Secret", "Backend", "resolve_backend", "set_session_key", "clear_session_key", "login"]

FAL_QUEUE_URL = "https://queue.fal.run"
FAL_RUN_URL = "https://fal.run"
FAL_STORAGE_URL = "https://rest.fal.ai"
#: Host name the embedded server answers to; it is never resolved (requests go in-process).
EMBEDDED_URL = "http://flux-nb.embedded"


class Secret:
    """A string that never shows itself: repr, str and format all give ``'****'``."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "****"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):  # refuse pickling: a pickle would carry the key to disk
        raise TypeError("a Secret cannot be pickled")


_session_key: Secret | None = None


def set_session_key(key: str) -> None:
    """Keep a fal key in memory for this process only (what ``%flux login`` does)."""
    global _session_key
    if not isinstance(key, str) or not key.strip():
        raise FluxConfigError("the key must be a non-empty string")
    _session_key = Secret(key.strip())
    # A new key means a new default client.
    from . import client

    client.reset_default_client()


def clear_session_key() -> None:
    global _session_key
    _session_key = None
    from . import client

    client.reset_default_client()


def login() -> None:
    """Ask for the fal key without echoing it and keep it in memory for this session."""
    import getpass

    set_session_key(getpass.getpass("fal key (kept in memory for this session only): "))


@dataclass(frozen=True)
class Backend:
    """Where requests go. ``kind`` is ``"fal"``, ``"endpoint"`` or ``"embedded"``."""

    kind: str
    queue_url: str
    run_url: str
    storage_url: str
    key: Secret | None = field(default=None, repr=False)
    #: Authorization scheme for ``key``: fal uses ``Key``.
    scheme: str = "Key"

    @property
    def api_hosts(self) -> frozenset[tuple[str, str, int | None]]:
        """(scheme, host, port) of the hosts that receive the key; nothing else ever does."""
        return frozenset(origin(u) for u in (self.queue_url, self.run_url, self.storage_url))

    def auth_headers_for(self, url: str) -> dict[str, str]:
        """The Authorization header for ``url`` if it is one of this backend's API hosts."""
        if self.key is None or origin(url) not in self.api_hosts:
            return {}
        return {"Authorization": f"{self.scheme} {self.key.reveal()}"}

    def describe(self) -> str:
        """One line saying which backend is in use (never the key itself)."""
        if self.kind == "embedded":
            return "embedded local server, preview engine (offline placeholder images; set FAL_KEY for fal.ai)"
        keyed = "with key" if self.key else "no key"
        if self.kind == "fal":
            return f"fal.ai ({self.queue_url}, {keyed})"
        return f"fal-compatible server at {self.queue_url} ({keyed})"


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.scheme, (parts.hostname or "").lower(), port)


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _check_endpoint(url: str, allow_insecure_http: bool) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise FluxConfigError(
            f"endpoint={url!r} is not usable: give an http(s) URL such as http://127.0.0.1:8765, "
            "or 'fal' / 'embedded'"
        )
    if parts.query or parts.fragment:
        raise FluxConfigError(f"endpoint={url!r} must not have a query or fragment")
    if parts.username is not None or parts.password is not None:
        # Credentials in the URL would show in logs, reprs and the journal: use key= / FLUX_NB_TOKEN.
        raise FluxConfigError(
            "the endpoint URL must not carry a user name or password; pass the token as key= or "
            "set FLUX_NB_TOKEN"
        )
    try:
        parts.port
    except ValueError:
        raise FluxConfigError(f"endpoint={url!r} has an invalid port") from None
    if parts.scheme == "http" and not is_loopback_host(parts.hostname) and not allow_insecure_http:
        raise FluxConfigError(
            f"endpoint={url!r} uses plain http to a non-loopback host, which would send the key in "
            "clear text; use https, or allow it explicitly (allow_insecure_http=True or "
            "FLUX_NB_ALLOW_INSECURE_HTTP=1)"
        )
    return url.strip().rstrip("/")


def _fal_key(key: str | None, env: Mapping[str, str]) -> Secret | None:
    if key:
        return Secret(key)
    if _session_key is not None:
        return _session_key
    if env.get("FAL_KEY"):
        return Secret(env["FAL_KEY"])
    if env.get("FAL_KEY_ID") and env.get("FAL_KEY_SECRET"):
        return Secret(f"{env['FAL_KEY_ID']}:{env['FAL_KEY_SECRET']}")
    return None


def resolve_backend(
    endpoint: str | None = None,
    key: str | None = None,
    *,
    allow_insecure_http: bool = False,
    env: Mapping[str, str] | None = None,
) -> Backend:
    """Pick the backend from the arguments, then the environment (see the module docstring)."""
    env = os.environ if env is None else env
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise FluxConfigError("key must be a non-empty string (or None to read FAL_KEY)")
    allow_insecure_http = allow_insecure_http or _env_flag(env, "FLUX_NB_ALLOW_INSECURE_HTTP")
    chosen = endpoint if endpoint is not None else env.get("FLUX_NB_ENDPOINT") or None
    if chosen is not None and not isinstance(chosen, str):
        raise FluxConfigError(f"endpoint={chosen!r} must be a URL string, 'fal' or 'embedded'")

    if chosen == "embedded" or (chosen is None and _fal_key(key, env) is None):
        return Backend("embedded", EMBEDDED_URL, EMBEDDED_URL + "/run", EMBEDDED_URL)
    if chosen is None or chosen == "fal":
        secret = _fal_key(key, env)
        if secret is None:
            raise FluxConfigError("endpoint='fal' needs a key: set FAL_KEY, pass key=..., or run %flux login")
        return Backend("fal", FAL_QUEUE_URL, FAL_RUN_URL, FAL_STORAGE_URL, secret)

    base = _check_endpoint(chosen, allow_insecure_http)
    token = key or env.get("FLUX_NB_TOKEN") or None
    return Backend("endpoint", base, base + "/run", base, Secret(token) if token else None)
