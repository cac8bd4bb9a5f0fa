"""Serving a catalog as a team would, attacked as a security review did (issue 19): a
tokens file planted with a newline name, links in the catalog, a root-owned catalog
served by catalog-serve as root, case-swapped tokens, tokens in the logs, plain http,
and a revoked token on a site rendered for another nginx. Real nginx, real openssl,
stock vagrant 2.3.4."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from goldbox.catalog import publish
from goldbox.catalog.serve import free_port
from goldbox.catalog.sites import SITES_FILE, site_id
from goldbox.catalog.tokens import TOKENS_FILE
from tests.boxes import BOX_NAME, make_box
from tests.catalog_fixtures import (
    QUIET,
    issue_token,
    let_workers_in,
    nginx_accepts,
    one_line_error,
    serving,
    vagrant,
)
from tests.conftest import run_invoke
from tests.waiting import wait_until

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="nginx runs its workers as another "
                                                       "user only when started as root")


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "catalog"
    path.mkdir()
    publish(make_box(tmp_path / "dist" / "0.1.0", "0.1.0"), catalog_dir=path, release=True,
            progress=QUIET)
    return path


def runtime_of(project: Path) -> Path:
    return next((project / "build" / "catalog-serve").iterdir())


def swap_case(token: str) -> str:
    return token.swapcase()


def wait_for_status(url: str, status: int, **request) -> requests.Response:
    """An nginx reload is asynchronous: ask until the new workers answer (or give up)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            response = requests.get(url, timeout=10, **request)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
        else:
            if response.status_code == status or time.monotonic() > deadline:
                return response
        time.sleep(0.1)


# ---- the tokens file is untrusted input ----------------------------------------------------


def test_a_newline_in_a_teammate_name_is_refused_in_one_line(project_copy, catalog, tmp_path):
    payload = "x\n alias /etc/;"
    (catalog / TOKENS_FILE).write_text(json.dumps({payload: "A" * 32}))
    out = tmp_path / "site"
    rendered = run_invoke(project_copy, "catalog-serve", "--catalog", str(catalog),
                          "--render-only", str(out), "--insecure-http")
    line = one_line_error(rendered)
    assert f"{catalog / TOKENS_FILE}: teammate name 'x\\n alias /etc/;': expected" in line
    assert not (out / "goldbox-catalog.conf").exists()
    for args in (("add", "bob"), ("revoke", "x")):
        line = one_line_error(run_invoke(project_copy, "catalog-token", *args,
                                         "--catalog", str(catalog)))
        assert f"{catalog / TOKENS_FILE}: teammate name" in line
    # A trailing newline, which `$` let through, is refused too, on the command line.
    line = one_line_error(run_invoke(project_copy, "catalog-token", "add", "alice\n",
                                     "--catalog", str(catalog)))
    assert "catalog-token add 'alice\\n': expected a teammate name" in line


def test_a_tokens_file_that_is_a_link_is_refused(project_copy, catalog, tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"mallory": "M" * 32}))
    (catalog / TOKENS_FILE).symlink_to(elsewhere)
    line = one_line_error(run_invoke(project_copy, "catalog-serve", "--catalog", str(catalog),
                                     "--render-only", str(tmp_path / "s"), "--insecure-http"))
    assert f"{catalog / TOKENS_FILE}: a symbolic link in the catalog; refused" in line
    # A dangling link must not make the private catalog look public either.
    elsewhere.unlink()
    line = one_line_error(run_invoke(project_copy, "catalog-token", "add", "bob",
                                     "--catalog", str(catalog)))
    assert f"{catalog / TOKENS_FILE}: a symbolic link in the catalog; refused" in line


def test_a_planted_sites_record_cannot_inject_nginx_or_overwrite_files(project_copy, catalog,
                                                                      tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "goldbox-catalog.conf").write_text("someone else's file\n")
    record = {"sites": [{"directory": str(victim), "listen": "80",
                         "access_log": "/tmp/a.log", "error_log": "/tmp/e.log"}]}
    (catalog / SITES_FILE).write_text(json.dumps(record))
    result = run_invoke(project_copy, "catalog-token", "add", "alice", "--catalog", str(catalog))
    assert result.returncode == 1
    reason, error = result.stderr.strip().splitlines()  # the site's problem, then the error
    assert reason == (f"{victim / 'goldbox-catalog.conf'}: not a file goldbox rendered for "
                      f"this catalog (its first line is not '# goldbox catalog site "
                      f"{site_id(catalog)}'); refusing to overwrite it")
    assert error == (f"goldbox: error: {catalog / SITES_FILE}: 1 recorded site(s) still have "
                     f"the old tokens: {victim} (see above)")
    assert (victim / "goldbox-catalog.conf").read_text() == "someone else's file\n"
    assert not (victim / "goldbox-catalog.tokens").exists()

    record["sites"][0]["listen"] = "80; include /etc/shadow"
    (catalog / SITES_FILE).write_text(json.dumps(record))
    line = one_line_error(run_invoke(project_copy, "catalog-token", "add", "bob",
                                     "--catalog", str(catalog)))
    assert f"{catalog / SITES_FILE}: sites[0].listen = '80; include /etc/shadow'" in line


# ---- nginx as teams run it -----------------------------------------------------------------


def _workers(master: int) -> list[int]:
    workers = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                workers.append(int(entry.name))
    return workers


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])  # the real uid; the others follow
    raise AssertionError(f"no Uid in /proc/{pid}/status")


@as_root
def test_root_catalog_is_served_by_unprivileged_workers_that_follow_no_link(
        project_copy, catalog, tmp_path):
    secret = tmp_path / "root-only"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    (catalog / BOX_NAME / "leak.json").symlink_to(secret)
    (catalog / "etc").symlink_to("/etc")
    assert catalog.stat().st_uid == 0
    token = issue_token(project_copy, catalog, "alice")
    bearer = {"Authorization": f"Bearer {token}"}
    with serving(project_copy, catalog) as base:
        master = int((runtime_of(project_copy) / "nginx.pid").read_text())
        # The port answers once the master has bound it, a moment before it forks workers,
        # and a worker is root for a moment after its fork, until it drops to its user.
        # Workers that never drop make this wait fail.
        wait_until(lambda: (forked := _workers(master)) and all(_uid(p) for p in forked),
                   "nginx's workers to drop root")
        workers = _workers(master)
        assert workers and _uid(master) == 0
        assert {_uid(pid) for pid in workers} == {pwd.getpwnam("www-data").pw_uid}
        good = requests.get(f"{base}{BOX_NAME}/metadata.json", headers=bearer, timeout=10)
        assert good.status_code == 200 and good.headers["X-Content-Type-Options"] == "nosniff"
        for path in (f"{BOX_NAME}/leak.json", "etc/passwd", "etc/shadow", "etc/hostname"):
            response = requests.get(base + path, headers=bearer, timeout=10)
            assert response.status_code in (403, 404), (path, response.status_code)
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "root's secret" not in response.text and "root:" not in response.text


@as_root
def test_a_catalog_its_workers_cannot_read_is_refused_naming_the_fix(project_copy, tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    catalog = closed / "catalog"
    catalog.mkdir()
    let_workers_in(tmp_path)  # everything above `closed` is open, `closed` is not
    result = run_invoke(project_copy, "catalog-serve", "--catalog", str(catalog),
                        "--port", "0")
    line = one_line_error(result)
    assert (f"nginx's workers run as www-data (never as root), who cannot enter {closed} "
            f"(mode 0700, owner root); run `chmod o+x {closed}`") in line
    closed.chmod(0o711)
    box = catalog / BOX_NAME
    box.mkdir()
    (box / "metadata.json").write_text("{}")
    (box / "metadata.json").chmod(0o600)
    line = one_line_error(run_invoke(project_copy, "catalog-serve", "--catalog",
                                     str(catalog), "--port", "0"))
    assert f"who cannot read {box / 'metadata.json'} (mode 0600, owner root)" in line
    assert f"`chmod o+r {box / 'metadata.json'}`" in line


# ---- tokens: case-sensitive, and in no log -------------------------------------------------


def test_tokens_match_case_sensitively_and_appear_in_no_log(project_copy, catalog):
    token = issue_token(project_copy, catalog, "alice")
    assert token != swap_case(token)
    (catalog / BOX_NAME / "link.json").symlink_to(catalog / BOX_NAME / "metadata.json")
    wrong = "W" * 32
    box = next(catalog.rglob("*.box")).relative_to(catalog).as_posix()
    with serving(project_copy, catalog) as base:
        url = f"{base}{BOX_NAME}/metadata.json"
        assert requests.get(url, headers={"Authorization": f"Bearer {token}"},
                            timeout=10).status_code == 200
        for swapped in ({"headers": {"Authorization": f"Bearer {swap_case(token)}"}},
                        {"params": {"access_token": swap_case(token)}}):
            assert requests.get(url, timeout=10, **swapped).status_code == 401, swapped

        seen = []
        for secret in (token, wrong, swap_case(token)):
            for how in ({"headers": {"Authorization": f"Bearer {secret}"}},
                        {"params": {"access_token": secret}}):
                for method, path, extra in (
                        ("GET", f"{BOX_NAME}/metadata.json", {}),
                        ("HEAD", f"{BOX_NAME}/metadata.json", {}),
                        ("GET", box, {"Range": "bytes=10-19"}),
                        ("GET", f"{BOX_NAME}/missing.json", {}),
                        ("GET", f"{BOX_NAME}/link.json", {}),  # a link: an error for nginx
                        ("GET", f"{BOX_NAME}/.goldbox-state.json", {}),
                        ("GET", f"{BOX_NAME}/", {})):
                    headers = {**how.get("headers", {}), **extra}
                    response = requests.request(method, base + path, headers=headers,
                                                params=how.get("params"), timeout=10)
                    seen.append(response.status_code)
        assert {200, 206, 401, 404} <= set(seen), seen
        runtime = runtime_of(project_copy)
    logs = {path: path.read_bytes() for path in runtime.rglob("*.log")}
    assert runtime / "access.log" in logs and logs[runtime / "access.log"].count(b"\n") >= 42
    for path, text in logs.items():
        for secret in (token, wrong, swap_case(token)):
            assert secret.encode() not in text, (path, secret)
        assert b"access_token" not in text, path


# ---- TLS -----------------------------------------------------------------------------------


def test_https_with_a_test_ca_and_stock_vagrant_with_and_without_a_token(
        project_copy, tmp_path, tls):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    with serving(project_copy, catalog, "--cert", str(tls["cert"]),
                 "--key", str(tls["key"])) as base:
        assert base.startswith("https://127.0.0.1:")
        publish(make_box(tmp_path / "dist" / "0.1.0", "0.1.0"), catalog_dir=catalog,
                base_url=base, release=True, progress=QUIET)
        token = issue_token(project_copy, catalog, "alice")  # reloads, still https
        metadata_url = f"{base}{BOX_NAME}/metadata.json"
        response = requests.get(metadata_url, headers={"Authorization": f"Bearer {token}"},
                                verify=str(tls["ca"]), timeout=10)
        assert response.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(metadata_url, timeout=10)  # not a CA this host trusts

        denied = vagrant(tmp_path / "nobody.d", "box", "add", "--cacert", str(tls["ca"]),
                         metadata_url, check=False)
        assert denied.returncode != 0 and "401" in denied.stderr, denied.stderr
        added = vagrant(tmp_path / "alice.d", "box", "add", "--cacert", str(tls["ca"]),
                        metadata_url, env={"VAGRANT_CLOUD_TOKEN": token,
                                           "VAGRANT_SERVER_URL": base})
        assert f"Successfully added box '{BOX_NAME}' (v0.1.0)" in added.stdout


def test_render_only_is_https_by_default_and_plain_http_must_be_asked_for(
        project_copy, catalog, tmp_path, tls):
    out = tmp_path / "site"
    line = one_line_error(run_invoke(project_copy, "catalog-serve", "--catalog", str(catalog),
                                     "--render-only", str(out)))
    assert "no --cert/--key" in line and "--insecure-http" in line
    assert not out.exists()
    on_host = run_invoke(project_copy, "catalog-serve", "--catalog", str(catalog),
                         "--render-only", str(out), "--cert", "/etc/ssl/boxes.pem",
                         "--key", "/etc/ssl/private/boxes.key")
    assert on_host.returncode == 0, on_host.stderr
    text = (out / "goldbox-catalog.conf").read_text()
    assert "listen 443 ssl;" in text and 'ssl_certificate "/etc/ssl/boxes.pem";' in text
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text and "disable_symlinks on;" in text
    line = one_line_error(run_invoke(project_copy, "catalog-serve", "--catalog", str(catalog),
                                     "--render-only", str(out), "--cert", "/etc/ssl/b.pem"))
    assert "--cert and --key go together" in line
    # With this host's real files, a host nginx accepts the https site (nginx -t).
    issue_token(project_copy, catalog, "alice")
    real = run_invoke(project_copy, "catalog-serve", "--catalog", str(catalog), "--render-only",
                      str(out), "--cert", str(tls["cert"]), "--key", str(tls["key"]),
                      "--listen", "127.0.0.1:8443", "--log-dir", str(tmp_path))
    assert real.returncode == 0, real.stderr
    nginx_accepts(tmp_path / "host", out / "goldbox-catalog.conf")
    plain = run_invoke(project_copy, "catalog-serve", "--catalog", str(catalog),
                       "--render-only", str(out), "--insecure-http")
    assert plain.returncode == 0, plain.stderr
    assert "listen 80;" in (out / "goldbox-catalog.conf").read_text()
    line = one_line_error(run_invoke(project_copy, "catalog-serve", "--catalog", str(catalog),
                                     "--render-only", str(out), "--insecure-http",
                                     "--listen", "80; include /etc/shadow"))
    assert "listen = '80; include /etc/shadow': expected PORT or ADDRESS:PORT" in line


def test_a_private_catalog_with_an_http_base_url_beyond_loopback_is_refused(
        project_copy, catalog, tmp_path):
    issue_token(project_copy, catalog, "alice")
    toml = project_copy / "goldbox.toml"
    toml.write_text(toml.read_text().replace(
        '# base_url = "https://boxes.example.org/"', 'base_url = "http://boxes.example.org/"'))
    let_workers_in(catalog)
    line = one_line_error(run_invoke(project_copy, "catalog-serve", "--catalog", str(catalog),
                                     "--port", "0"))
    assert ("its base URL http://boxes.example.org/ is plain http on another host" in line
            and "--insecure-http" in line)
    with serving(project_copy, catalog, "--insecure-http") as base:
        assert requests.get(f"{base}{BOX_NAME}/metadata.json", timeout=10).status_code == 401


# ---- a token change reaches a site rendered for another nginx ------------------------------


@contextlib.contextmanager
def host_nginx(site_dir: Path, work: Path) -> Iterator[Path]:
    """A second nginx, as a team runs one: its own nginx.conf including the rendered
    site, its own prefix and pid; yields its nginx.conf."""
    work.mkdir()
    conf = work / "nginx.conf"
    conf.write_text(f"daemon off;\npid {work}/nginx.pid;\nerror_log {work}/error.log;\n"
                    f"events {{}}\nhttp {{\n include {site_dir}/goldbox-catalog.conf;\n}}\n")
    nginx = subprocess.Popen(["nginx", "-p", f"{work}/", "-c", str(conf),
                              "-e", str(work / "error.log")])
    try:
        yield conf
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)


def test_a_revoked_token_stops_working_on_a_rendered_site(project_copy, catalog, tmp_path):
    let_workers_in(catalog)
    port = free_port()
    site_dir = tmp_path / "site"
    host = tmp_path / "host"
    (tmp_path / "logs").mkdir()
    rendered = run_invoke(project_copy, "catalog-serve", "--catalog", str(catalog),
                          "--render-only", str(site_dir), "--insecure-http",
                          "--listen", f"127.0.0.1:{port}", "--nginx-conf",
                          str(host / "nginx.conf"), "--log-dir", str(tmp_path / "logs"))
    assert rendered.returncode == 0, rendered.stderr
    url = f"http://127.0.0.1:{port}/{BOX_NAME}/metadata.json"
    with host_nginx(site_dir, host) as conf:
        assert wait_for_status(url, 200).status_code == 200  # public so far
        reload = shlex.join(["nginx", "-c", str(conf), "-s", "reload"])

        added = run_invoke(project_copy, "catalog-token", "add", "alice",
                           "--catalog", str(catalog))
        assert added.returncode == 0, added.stderr
        assert (f"rewrote {site_dir / 'goldbox-catalog.tokens'}: reload its nginx with "
                f"`{reload}`") in added.stderr
        token = added.stdout.strip()
        subprocess.run(shlex.split(reload), check=True)
        assert wait_for_status(url, 401).status_code == 401
        assert requests.get(url, params={"access_token": token}, timeout=10).status_code == 200

        revoked = run_invoke(project_copy, "catalog-token", "revoke", "alice",
                             "--catalog", str(catalog))
        assert revoked.returncode == 0, revoked.stderr
        assert f"reload its nginx with `{reload}`" in revoked.stderr
        assert token not in (site_dir / "goldbox-catalog.tokens").read_text()
        subprocess.run(shlex.split(reload), check=True)
        assert wait_for_status(url, 401, params={"access_token": token}).status_code == 401
    assert "alice" not in (site_dir / "goldbox-catalog.tokens").read_text()
