"""URLs as eo2sar records and prints them: scheme, host and path, never the secrets.

Why a module of its own: an input URL reaches many places that outlive the run or are
shown to others (the COG tag `EO2SAR_INPUT`, the STAC Item's `derived_from` link and
`processing:lineage`, the `input:` line, error messages and the run report, log lines).
A pre-signed URL carries its credential in the query (`?sig=...`, `X-Amz-Signature=...`,
`?token=...`) and a URL may carry `user:password@`; written into an Item that is then
published, they hand the data (or the account) to anyone who reads it. So every place that
records or prints an input goes through `redact_url` / `redact_text`, one rule kept in
one place: keep scheme, host (and port) and path; drop userinfo, query and fragment.

GDAL does not always name a URL as a URL: its messages name a remote file by its basename
with the query (`trunc.tif?sig=SECRET&X-Amz-Credential=...: TIFFFillTile...`, `CPLE_AppDefined
in x.tif?token=...`). So `redact_text` also drops, wherever it stands in a message, a
query that holds a known secret parameter (`SECRET_PARAMS`: signatures, credentials,
tokens, every `X-Amz-*` / `X-Goog-*`, Azure SAS's `sig`, `se`, `sp`...), and masks such a
`name=value` pair found on its own (`&X-Amz-Signature=...` cut from its `?`).

What it cannot know: a secret inside the path itself (a token as a path segment). Such
URLs should not be given as inputs of runs whose outputs are shared.

Reading is untouched: the run still opens the URL as given (the temporary VRT that
references it lives in a 0700 directory and is removed when the run ends).

`network_defaults` sets the HTTP timeouts and retry counts GDAL's /vsicurl/ and the STAC
Item reader use, so that a server that accepts and never answers ends the run with an
error instead of hanging it (docs/data_sources.md).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

__all__ = [
    "HTTP_DEFAULTS",
    "RedactingFilter",
    "http_timeout",
    "network_defaults",
    "SECRET_PARAMS",
    "is_secret_param",
    "redact_log_handlers",
    "redact_params",
    "redact_text",
    "redact_url",
]

#: a URL inside free text: a scheme, `://`, then anything up to white space or a quote
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]*")
#: `scheme://user:password@` -> `scheme://` (the authority ends at '/', '?' or '#';
#: userinfo at its last '@', as a password may hold an unescaped '@')
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")  # to the last '@'
#: GDAL's option form `/vsicurl?opt=v&url=https://...`: every option may be a secret
_VSICURL_OPTIONS = re.compile(r"^(/vsi[a-z0-9_]+)\?.*?\burl=([^&]*)", re.IGNORECASE)


#: query parameters that carry a secret (lower-case): pre-signed S3/GCS URLs, Azure SAS
#: tokens, CloudFront signed URLs, API keys and OAuth tokens; `x-amz-` / `x-goog-` prefixes
#: cover every parameter of those schemes
SECRET_PARAMS = frozenset({
    "sig", "signature", "token", "access_token", "id_token", "refresh_token",
    "credential", "credentials", "password", "passwd", "secret", "key", "api_key",
    "apikey", "api-key", "auth", "code", "session", "sessiontoken", "security-token",
    "awsaccesskeyid", "googleaccessid", "policy", "key-pair-id", "expires",
    # Azure SAS: signature, expiry, start, permissions, version, resource, object ids
    "se", "sp", "sv", "st", "sr", "srt", "ss", "spr", "sip", "si", "skoid", "sktid",
    "skt", "ske", "sks", "skv", "sdd", "saoid", "suoid", "scid",
})
_SECRET_PREFIXES = ("x-amz-", "x-goog-", "x-ms-")
_PARAM = r"[A-Za-z][A-Za-z0-9_.-]*"
#: a query in free text: `?` after a name, up to white space, a quote or `)`/`]`/`,`
_QUERY_IN_TEXT = re.compile(r"\?(" + _PARAM + r"=[^\s'\"<>`)\],;]*)")
#: one `name=value` pair (the value up to `&`, white space or a quote)
_PAIR = re.compile(r"(?<![A-Za-z0-9_.-])(" + _PARAM + r")=([^&\s'\"<>`)\],;]*)")


def is_secret_param(name: str) -> bool:
    """A query parameter name that carries a secret (SECRET_PARAMS, X-Amz-*, ...)."""
    name = name.lower()
    return name in SECRET_PARAMS or name.startswith(_SECRET_PREFIXES)


def _drop_secret_query(match: re.Match[str]) -> str:
    """A query found in text: gone if one of its parameters is a secret."""
    query = match.group(1)
    names = [pair.split("=", 1)[0] for pair in query.split("&")]
    if not any(is_secret_param(n) for n in names):
        return match.group(0)
    return ":" if query.endswith(":") else ""  # GDAL's `name?query: message`


def _mask_pair(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    if not (is_secret_param(name) and value):
        return match.group(0)
    return f"{name}=<redacted>" + (":" if value.endswith(":") else "")


def redact_params(text: str) -> str:
    """`text` with every query holding a secret parameter removed (`x.tif?sig=S&a=1` ->
    `x.tif`) and any remaining secret `name=value` pair masked (`&X-Amz-Signature=S` ->
    `&X-Amz-Signature=<redacted>`): GDAL names remote files without their scheme."""
    if "=" not in text:
        return text
    text = _QUERY_IN_TEXT.sub(_drop_secret_query, text)
    return _PAIR.sub(_mask_pair, text) if "=" in text else text


def _redact_one(url: str) -> str:
    """One URL token: userinfo, query and fragment removed."""
    url = _USERINFO.sub(r"\1", url)
    for mark in ("?", "#"):
        url = url.split(mark, 1)[0]
    return url


def redact_url(text: str | os.PathLike[str]) -> str:
    """`https://u:p@h:8/a/x.tif?sig=s#f` -> `https://h:8/a/x.tif`; also inside GDAL paths
    (`/vsicurl/https://u:p@h/x?t`, `/vsicurl?header=...&url=https://h/x`,
    `/vsis3/b/k?versionId=...`). A local path comes back unchanged."""
    text = str(text)
    if text.startswith("/vsi"):
        from urllib.parse import unquote

        match = _VSICURL_OPTIONS.match(text)
        if match:  # `/vsicurl?...&url=U&...` -> `/vsicurl/U` (redacted)
            return f"{match.group(1)}/{_redact_one(unquote(match.group(2)))}"
        prefix, sep, rest = text.partition("://")
        if sep:  # /vsicurl/https://...: redact the embedded URL
            return prefix + sep + _redact_one("x://" + rest)[len("x://"):]
        return text.split("?", 1)[0]
    if "://" in text:
        return redact_text(text)
    return text


def redact_text(text: str) -> str:
    """`text` (an error message, a log line) with every URL in it redacted."""
    text = str(text)
    if "://" in text or "/vsi" in text:
        text = _URL_IN_TEXT.sub(lambda m: _redact_one(m.group(0)), text)
        # a /vsi path's own query (/vsis3/b/k?versionId=..., /vsicurl?url=...)
        text = re.sub(r"/vsi[a-z0-9_]+\?[^\s'\"<>`]*",
                      lambda m: redact_url(m.group(0)), text)
    return redact_params(text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts URLs in each record's formatted message.

    Installed on the CLI's log handlers: GDAL's own messages (logged by rasterio at -v)
    name the URL it read, secrets included."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_log_handlers() -> None:
    """Put a RedactingFilter on every log handler of this process: the root logger's,
    every named logger's own (Dask's `distributed` loggers have theirs), and the
    last-resort handler that prints WARNING records of a process without logging set up
    (a Dask worker: rasterio logs GDAL's warnings, which name a signed URL as
    `x.tif?sig=...`). Idempotent; handlers added later are not covered (call it again)."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    handlers = [h for lg in loggers for h in lg.handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


# ---------------------------------------------------------------- network timeouts

#: GDAL's HTTP settings eo2sar sets when the user has not (environment variables, which
#: GDAL reads on every request and Dask workers started from the run inherit). GDAL's
#: own defaults have no timeout at all: a server that accepts a connection and never
#: answers would hang the run forever.
HTTP_DEFAULTS: Mapping[str, str] = {
    "GDAL_HTTP_CONNECTTIMEOUT": "15",  # seconds to establish a connection
    "GDAL_HTTP_TIMEOUT": "60",  # seconds one request may take (a COG block, a header)
    "GDAL_HTTP_MAX_RETRY": "2",  # retries of a request that failed with 429/5xx
    "GDAL_HTTP_RETRY_DELAY": "1",  # seconds before the first retry (then doubled)
}
# Not here: GDAL_VRT_ENABLE_RAWRASTERBAND. The GDAL of the rasterio wheel (3.10) has it
# only as a build option, not a setting (a raw band read local bytes with it set to NO);
# a remote VRT is refused by its driver instead (pipeline.inputs.sources.check_remote_dataset).


def network_defaults() -> None:
    """Set HTTP_DEFAULTS in os.environ where the user has not set them (idempotent)."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def http_timeout() -> float:
    """Seconds the STAC Item reader (urllib) may spend on the whole read: GDAL_HTTP_TIMEOUT,
    so one setting governs both readers (its default where unset or not a positive
    number). urllib has one socket timeout for the connection and each wait for bytes;
    the reader also stops at this deadline overall (a server trickling bytes)."""
    text = os.environ.get("GDAL_HTTP_TIMEOUT", HTTP_DEFAULTS["GDAL_HTTP_TIMEOUT"])
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    return value if value > 0 else float(HTTP_DEFAULTS["GDAL_HTTP_TIMEOUT"])
