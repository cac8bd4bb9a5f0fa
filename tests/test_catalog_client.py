"""The one HTTP client and its token rule (goldbox/catalog/client.py), against real HTTP
servers on 127.0.0.1 that record what they were sent: the token reaches its own origin
only, also across redirects; never plain http to another host; and `invoke boxes` reads
a private catalog served by the real nginx of `invoke catalog-serve`."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from goldbox.catalog import publish, release
from goldbox.catalog.client import Client, Token, catalog_client, origin, token_for
from goldbox.catalog.tokens import add_token
from goldbox.errors import GoldboxError
from tests.boxes import BOX_NAME, make_box
from tests.catalog_fixtures import QUIET, serving
from tests.conftest import run_invoke


@contextlib.contextmanager
def recording_server(routes: dict[str, tuple[int, dict[str, str], bytes]],
                     tls: dict[str, Path] | None = None
                     ) -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """An HTTP server (https with `tls`'s certificate) on a free port of 127.0.0.1
    answering `routes` (path -> status, headers, body); yields its base URL and the
    (path, Authorization) of every request."""
    seen: list[tuple[str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            seen.append((self.path, self.headers.get("Authorization")))
            status, headers, body = routes.get(self.path, (404, {}, b""))
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls["cert"], tls["key"])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_origins_spell_out_scheme_host_and_port():
    assert origin("https://Boxes.Example.org/acme/x") == "https://boxes.example.org:443"
    assert origin("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert origin("https://[::1]/m.json") == "https://[::1]:443"


def test_the_token_rule_picks_one_origin():
    env = {"VAGRANT_CLOUD_TOKEN": "s3cret", "VAGRANT_SERVER_URL": "https://boxes.example.org"}
    assert token_for(None, environ=env) == Token("s3cret", "https://boxes.example.org:443")
    assert token_for("https://other.example.org/c/", environ=env).origin == \
        "https://boxes.example.org:443"  # the environment's token stays with its server
    assert token_for("https://other.example.org/c/", "mine", env) == Token(
        "mine", "https://other.example.org:443")
    assert token_for(None, environ={"VAGRANT_CLOUD_TOKEN": "s3cret"}) is None  # no server
    assert "s3cret" not in repr(token_for(None, environ=env))


def test_the_token_reaches_its_origin_and_not_the_one_a_redirect_names():
    with recording_server({"/box": (200, {}, b"the box")}) as (other, other_seen):
        routes = {"/metadata.json": (200, {}, b"{}"),
                  "/moved": (302, {"Location": f"{other}/box"}, b""),
                  "/here": (302, {"Location": "/metadata.json"}, b"")}
        with recording_server(routes) as (base, seen):
            client = Client(Token("s3cret", origin(base)))
            assert client.read(f"{base}/moved") == b"the box"
            assert client.read(f"{base}/here") == b"{}"
            assert client.read(f"{other}/box") == b"the box"
    assert seen == [("/moved", "Bearer s3cret"), ("/here", "Bearer s3cret"),
                    ("/metadata.json", "Bearer s3cret")]
    assert other_seen == [("/box", None), ("/box", None)]


def test_another_name_of_the_same_address_is_another_origin():
    with recording_server({"/m": (200, {}, b"{}")}) as (base, seen):
        port = base.rsplit(":", 1)[1]
        client = catalog_client(None, environ={"VAGRANT_CLOUD_TOKEN": "s3cret",
                                               "VAGRANT_SERVER_URL": f"http://localhost:{port}"})
        client.read(f"{base}/m")
        client.read(f"http://localhost:{port}/m")
    assert seen == [("/m", None), ("/m", "Bearer s3cret")]


def test_no_token_goes_over_plain_http_to_another_host():
    client = Client(Token("s3cret", "http://boxes.example.org:80"))
    with pytest.raises(GoldboxError, match=r"^http://boxes.example.org/m.json: the catalog "
                                           r"token is not sent over plain http"):
        client.read("http://boxes.example.org/m.json")  # refused before any connection


def test_a_download_is_limited_and_leaves_nothing_when_refused(tmp_path):
    with recording_server({"/box": (200, {}, b"x" * 100)}) as (base, _):
        client = Client()
        assert client.download(f"{base}/box", tmp_path / "a.box") == \
            hashlib.sha256(b"x" * 100).hexdigest()
        with pytest.raises(GoldboxError, match="larger than 99 bytes"):
            client.download(f"{base}/box", tmp_path / "b.box", limit=99)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.box"]


def test_cacert_is_trusted_even_where_requests_ca_bundle_is_set(tls, monkeypatch):
    """Found for real: requests lets REQUESTS_CA_BUNDLE override a session's `verify`,
    so `invoke add --cacert` failed on hosts that set it."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    with recording_server({"/m": (200, {}, b"{}")}, tls) as (base, _):
        assert Client(cacert=tls["ca"]).read(f"{base}/m") == b"{}"
        with pytest.raises(GoldboxError, match="CERTIFICATE_VERIFY_FAILED"):
            Client().read(f"{base}/m")


def test_a_401_says_how_to_pass_a_token():
    with recording_server({"/m": (401, {}, b"")}) as (base, _):
        with pytest.raises(GoldboxError) as caught:
            Client(token_option=True).read(f"{base}/m")
    assert str(caught.value) == (f"{base}/m: HTTP 401: set VAGRANT_CLOUD_TOKEN to your token "
                                 f"and VAGRANT_SERVER_URL to the server's URL, or pass --token")


def test_invoke_boxes_lists_a_private_catalog_with_a_token(project_copy, tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    token = add_token(catalog, "ci", progress=QUIET)
    with serving(project_copy, catalog) as base:
        publish(make_box(tmp_path / "dist", "1.0.0"), catalog, base_url=base,
                progress=QUIET)
        release(catalog, BOX_NAME, "1.0.0", progress=QUIET)
        refused = run_invoke(project_copy, "boxes", "--catalog", base, "--box", BOX_NAME)
        listed = run_invoke(project_copy, "boxes", "--catalog", base, "--box", BOX_NAME,
                            "--token", token)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"goldbox: error: {base}{BOX_NAME}/metadata.json: HTTP 401: set VAGRANT_CLOUD_TOKEN "
        f"to your token and VAGRANT_SERVER_URL to the server's URL, or pass --token")
    assert listed.returncode == 0, listed.stderr
    (row,) = listed.stdout.splitlines()[1:]
    assert row.split()[:3] == [BOX_NAME, "1.0.0", "libvirt"]

