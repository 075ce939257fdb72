"""pipeline/urls.py: the one rule for URLs eo2sar records or prints (keep scheme, host,
path; drop userinfo, query, fragment), and the HTTP timeout defaults."""

from __future__ import annotations

import logging

import pytest

from pipeline.errors import InputError
from pipeline.urls import (
    HTTP_DEFAULTS,
    RedactingFilter,
    http_timeout,
    network_defaults,
    redact_text,
    redact_url,
)


@pytest.mark.parametrize("given, recorded", [
    ("https://user:pass@host:8443/a/b/x.tif?sig=S3CRET&se=2030#frag",
     "https://host:8443/a/b/x.tif"),
    ("https://user:p@ss@host/x.tif", "https://host/x.tif"),  # an unescaped '@'
    ("http://host/catalog/item.json?token=S3CRET", "http://host/catalog/item.json"),
    ("s3://bucket/key/x.tif?versionId=S3CRET", "s3://bucket/key/x.tif"),
    ("/vsicurl/https://user:pass@host/x.tif?X-Amz-Signature=S3CRET",
     "/vsicurl/https://host/x.tif"),
    ("/vsicurl?header.Authorization=Bearer%20S3CRET&url=https%3A%2F%2Fu%3Ap%40host%2Fx.tif"
     "%3Fsig%3DS3CRET", "/vsicurl/https://host/x.tif"),
    ("/vsis3/bucket/key.tif?versionId=S3CRET", "/vsis3/bucket/key.tif"),
    ("/vsizip//vsicurl/https://u:p@host/a.zip?sig=S3CRET/x.tif", "/vsizip//vsicurl/https://host/a.zip"),
    ("/data/scene?.tif", "/data/scene?.tif"),  # a local name is not a URL: unchanged
    ("scene.tif", "scene.tif"),
])
def test_redact_url_keeps_scheme_host_path(given, recorded):
    assert redact_url(given) == recorded


def test_redact_text_finds_every_url_in_a_message():
    message = ("'/vsicurl/https://u:pw@127.0.0.1:8/x.tif?sig=S3CRET' not recognized; "
               "retried http://a:b@h/y?token=S3CRET, \"s3://b/k?v=S3CRET\"")
    assert redact_text(message) == ("'/vsicurl/https://127.0.0.1:8/x.tif' not recognized; "
                                    "retried http://h/y \"s3://b/k\"")


def test_errors_redact_their_message_path_and_hint_once_for_every_form():
    """PipelineError redacts at construction: the CLI line, str(), the run report and a
    copy pickled across processes (Dask) are all free of the secret."""
    import pickle

    err = InputError("cannot open https://u:pw@h/x.tif?sig=S3CRET (404)",
                     path="https://u:pw@h/x.tif?sig=S3CRET", hint="see http://h/?token=S3CRET")
    for text in (err.format(), str(err), pickle.loads(pickle.dumps(err)).format()):
        assert "S3CRET" not in text and "pw@" not in text, text
        assert "https://h/x.tif" in text


def test_errors_are_bounded():
    err = InputError("x" * 10_000_000, path="p" * 10_000_000)
    assert len(err.format()) < 5000


def test_log_filter_redacts_formatted_records(caplog):
    logger = logging.getLogger("tests.urls")
    handler = logging.Handler()
    seen: list[str] = []
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("GDAL: %s failed", "/vsicurl/https://u:pw@h/x.tif?sig=S3CRET")
    finally:
        logger.removeHandler(handler)
    assert seen == ["GDAL: /vsicurl/https://h/x.tif failed"]


def test_network_defaults_fill_only_what_the_user_left_unset(monkeypatch):
    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "7")
    network_defaults()
    import os

    assert os.environ["GDAL_HTTP_TIMEOUT"] == "7"  # the user's value wins
    assert os.environ["GDAL_HTTP_CONNECTTIMEOUT"] == HTTP_DEFAULTS["GDAL_HTTP_CONNECTTIMEOUT"]
    assert os.environ["GDAL_HTTP_MAX_RETRY"] == HTTP_DEFAULTS["GDAL_HTTP_MAX_RETRY"]
    assert http_timeout() == 7.0
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "nonsense")
    assert http_timeout() == float(HTTP_DEFAULTS["GDAL_HTTP_TIMEOUT"])


def test_secret_queries_are_dropped_wherever_gdal_names_them():
    """GDAL names a remote file by its basename and query, without a scheme: the query
    goes if one of its parameters is a secret; a lone secret pair is masked; messages
    without one are left alone."""
    from pipeline.urls import redact_text

    cases = {
        "cannot read (trunc.tif?sig=S3CRET&X-Amz-Credential=AK%2F1, band 1: failed)":
            "cannot read (trunc.tif, band 1: failed)",
        "CPLE_AppDefined in x.tif?X-Amz-Signature=S3CRET&X-Amz-Date=1: TIFFRead":
            "CPLE_AppDefined in x.tif: TIFFRead",
        "y.tif?se=2030&sp=r&sv=2022&sig=S3CRET": "y.tif",
        "...&X-Amz-Security-Token=S3CRET done": "...&X-Amz-Security-Token=<redacted> done",
        "(token=S3CRET)": "(token=<redacted>)",
        "is this URL a STAC Item?": "is this URL a STAC Item?",
        "x.tif?a=1&b=2": "x.tif?a=1&b=2",
        "GDAL_HTTP_TIMEOUT=3": "GDAL_HTTP_TIMEOUT=3",
    }
    for given, expected in cases.items():
        assert redact_text(given) == expected


def test_every_log_handler_gets_the_filter(monkeypatch):
    """`redact_log_handlers`: the root's handlers, a logger's own handler (as Dask's) and
    the last-resort handler all redact."""
    import io
    import logging

    from pipeline.urls import RedactingFilter, redact_log_handlers

    stream = io.StringIO()
    own = logging.getLogger("eo2sar.test.own")
    handler = logging.StreamHandler(stream)
    monkeypatch.setattr(own, "handlers", [handler])
    monkeypatch.setattr(own, "propagate", False)
    last = logging.StreamHandler(io.StringIO())
    monkeypatch.setattr(logging, "lastResort", last)
    redact_log_handlers()
    redact_log_handlers()  # idempotent
    own.warning("read x.tif?sig=%s failed", "S3CRET")
    assert stream.getvalue() == "read x.tif failed\n"
    assert sum(isinstance(f, RedactingFilter) for f in last.filters) == 1
