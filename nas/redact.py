"""Secrets in URLs: one :func:`redact` for every place a URL is shown, and :func:`scrub` for text
that may echo one (a database driver's error message, anything the CLI prints).

A URL's secrets are its password (everything between the first ``:`` of the userinfo and the LAST
``@`` before the host, so ``user:pa@ss@host`` hides ``pa@ss``) and the values of secret query
parameters (``password=``, ``sslpassword=``, ``token=``...). :func:`redact` remembers the secrets
it hid, so that a driver which parsed the URL differently (SQLAlchemy reads ``user:pa@ss@host`` as
password ``pa`` and host ``ss@host``) and echoes a piece of it is scrubbed too.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"
SECRET_PARAMETERS = ("password", "passwd", "pwd", "pass", "sslpassword", "secret", "token", "access_token",
                     "api_key", "apikey", "key", "auth")
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:%s)=)([^&;#\s]*)" % "|".join(SECRET_PARAMETERS))
# A URL inside free text: scheme://... up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_remembered: set[str] = set()


def _split_userinfo(url: str) -> tuple[str, str, str] | None:
    """(scheme://, userinfo, rest) when the URL has a userinfo part, else None."""
    if "://" not in url:
        return None
    scheme, rest = url.split("://", 1)
    if rest.startswith("/"):
        return None
    authority = rest.split("?", 1)[0].split("#", 1)[0]
    if "@" not in authority:
        return None
    userinfo = authority[: authority.rfind("@")]
    return scheme + "://", userinfo, rest[len(userinfo):]


def _remember(secret: str, host: str = "") -> None:
    """Remember a secret; for a password with '@' also what SQLAlchemy takes for the host
    ("user:pa@ss@host" -> host "ss@host"), which drivers echo."""
    if not secret:
        return
    _remembered.add(secret)
    _remembered.add(unquote(secret))
    if "@" in secret and host:
        _remembered.add(secret.split("@", 1)[1] + "@" + host)


def redact(url: str) -> str:
    """The URL with its password and secret query values replaced by ``***`` (and remembered)."""
    if not isinstance(url, str):
        return url
    parts = _split_userinfo(url)
    if parts is not None:
        scheme, userinfo, rest = parts
        user, colon, password = userinfo.partition(":")
        if colon:
            _remember(password, re.split(r"[:/?#]", rest[1:], maxsplit=1)[0])
            url = f"{scheme}{user}:{MASK}{rest}"
    for match in _SECRET_QUERY.finditer(url):
        _remember(match.group(2))
    return _SECRET_QUERY.sub(lambda m: m.group(1) + MASK, url)


def scrub(text: str) -> str:
    """``text`` with every URL in it redacted and, outside URLs, every secret :func:`redact` has seen
    masked (a secret shorter than 4 characters only where it stands alone)."""
    urls = [(m.start(), m.end(), redact(m.group(0))) for m in _URL_IN_TEXT.finditer(text)]
    pieces, last = [], 0
    for start, end, url in urls:
        pieces += [_mask(text[last:start]), url]
        last = end
    pieces.append(_mask(text[last:]))
    return "".join(pieces)


def _mask(text: str) -> str:
    for secret in sorted(_remembered, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, MASK)
        else:
            text = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(secret)}(?![A-Za-z0-9_])", MASK, text)
    return text


def forget() -> None:
    """Forget the remembered secrets (tests)."""
    _remembered.clear()
