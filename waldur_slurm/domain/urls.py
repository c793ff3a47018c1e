"""URLs shown to people: a password written into a URL (``https://user:pass@host``) never is."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def url_password(url: str | None) -> str | None:
    """The password in ``url``'s userinfo, or None (also for text that is not a URL)."""
    if not url:
        return None
    try:
        return urlsplit(url).password or None
    except ValueError:
        return None


def mask_url(url: str | None) -> str:
    """``url`` with the password of its userinfo replaced by ``***`` (the user name is kept)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # an unparseable URL (bad port, ...) may still carry a password: show no userinfo
        head, sep, tail = url.rpartition("@")
        return f"{MASK}@{tail}" if sep else url
    if not password:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def host_root(api_url: str) -> str:
    """``https://h/api/`` -> ``https://h``: the SDK's paths already start with ``/api/``.

    ``removesuffix``, never ``rstrip("/api")``, which strips characters and mangles hosts ending in a/p/i.
    """
    url = api_url.strip()
    if url.endswith("/api/"):
        url = url.removesuffix("/api/")
    elif url.endswith("/api"):
        url = url.removesuffix("/api")
    return url.removesuffix("/")
