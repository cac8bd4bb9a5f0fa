"""Serving a catalog with nginx: a site rendered from a template (sites.py; the same one
to install on any host: `invoke catalog-serve --render-only DIR`) and, for
`invoke catalog-serve`, a private nginx whose pid, temp files and logs lie in a runtime
folder of the project's build/ and that listens on 127.0.0.1 only. Started as root, its
workers run as an unprivileged user that must be able to read the catalog."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from goldbox import proc
from goldbox.catalog.layout import require_catalog_dir
from goldbox.catalog.sites import (
    Site,
    record_site,
    render_template,
    require_safe_transport,
    rewrite_recorded_sites,
    site_id,
    write_site,
)
from goldbox.catalog.store import Progress, write_file_atomically
from goldbox.errors import GoldboxError
from goldbox.validation import validated
from goldbox.vm import port_is_free

# As root, nginx's workers run as the first of these that exists (Debian's nginx: www-data).
WORKER_USERS = ("www-data", "nobody")


def _require_cert_with_key(cert: object, key: object) -> None:
    if (cert is None) != (key is None):
        raise GoldboxError("catalog-serve: --cert and --key go together (the certificate "
                           "chain and its private key)")


def host_site(directory: Path, listen: str | None = None,
              server_name: str = "_", cert: str | None = None, key: str | None = None,
              nginx_conf: str | None = None, insecure_http: bool = False,
              log_dir: str = "/var/log/nginx", org: str | None = None) -> Site:
    """The site `--render-only DIR` writes for a host's nginx: https on 443 with a
    certificate; without one, plain http on 80 only if the user said --insecure-http.
    Paths are as they will be on the serving host."""
    _require_cert_with_key(cert, key)
    if cert is None and not insecure_http:
        raise GoldboxError("catalog-serve --render-only: no --cert/--key; a catalog beyond "
                           "this host is served over https: pass --cert FILE --key FILE "
                           "(paths on the serving host), or --insecure-http for plain http")
    return validated(Site, {
        "directory": str(directory.absolute()),
        "listen": listen or ("443" if cert else "80"), "server_name": server_name,
        "cert": cert, "key": key, "nginx_conf": nginx_conf, "insecure_http": insecure_http,
        "org": org, "access_log": f"{log_dir.rstrip('/')}/goldbox-catalog.access.log",
        "error_log": f"{log_dir.rstrip('/')}/goldbox-catalog.error.log"}, "catalog-serve")


def render_for_host(catalog_dir: Path, site: Site, base_url: str | None,
                    progress: Progress = print) -> Path:
    """Write `site` for a host's nginx and record it, so token changes reach it."""
    require_catalog_dir(catalog_dir, create=False)
    require_safe_transport(catalog_dir, site, base_url)
    try:
        Path(site.directory).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GoldboxError(f"{site.directory}: cannot create: {exc.strerror}") from None
    write_site(catalog_dir, site)
    record_site(catalog_dir, site, progress)
    return site.site_file


@dataclass(frozen=True)
class Runtime:
    """The private nginx of one catalog: its config, site, pid, logs and temp files."""
    directory: Path

    @classmethod
    def of(cls, catalog_dir: Path, build_dir: Path) -> Runtime:
        return cls(build_dir / "catalog-serve" / site_id(catalog_dir))

    @property
    def conf(self) -> Path:
        return self.directory / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.directory / "nginx.pid"

    @property
    def site_record(self) -> Path:
        """How the running site was served (port, certificate): a token change renders
        it again the same way."""
        return self.directory / "site.json"

    def site(self) -> Site:
        path = self.site_record
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise GoldboxError(f"{path}: cannot read the running site: {exc}") from None
        return validated(Site, raw, str(path))

    def local_site(self, port: int, cert: Path | None, key: Path | None,
                   insecure_http: bool, org: str | None = None) -> Site:
        return validated(Site, {
            "directory": str(self.directory.absolute()), "listen": f"127.0.0.1:{port}",
            "cert": None if cert is None else str(cert.absolute()),
            "key": None if key is None else str(key.absolute()),
            "insecure_http": insecure_http, "org": org,
            "access_log": str(self.directory.absolute() / "access.log"),
            "error_log": str(self.directory.absolute() / "error.log")}, "catalog-serve")

    def nginx(self, *args: str) -> list[str]:
        return ["nginx", "-p", f"{self.directory}/", "-c", str(self.conf),
                "-e", str(self.directory / "error.log"), *args]

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid


def _worker_user() -> pwd.struct_passwd | None:
    """As root, nginx's workers run as an unprivileged user, never as root (nor as the
    catalog's owner, who may be root): a link or a bug then reaches only what that user
    may read. As anyone else there is no choice to make."""
    if os.geteuid() != 0:
        return None
    for name in WORKER_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise GoldboxError(f"catalog-serve as root: none of the users {', '.join(WORKER_USERS)} "
                       f"exists to run nginx's workers as; create one "
                       f"(adduser --system www-data)")


def _may(user: pwd.struct_passwd, groups: set[int], info: os.stat_result, bits: int) -> bool:
    """Whether `user` has the permission `bits` (r=4, x=1, as for others) on the file."""
    if info.st_uid == user.pw_uid:
        shift = 6
    elif info.st_gid in groups:
        shift = 3
    else:
        shift = 0
    return (info.st_mode >> shift) & bits == bits


def _fix(user: pwd.struct_passwd, path: Path, bits: int) -> str:
    mode = {1: "x", 4: "r", 5: "rx"}[bits]
    group = grp.getgrgid(user.pw_gid).gr_name
    quoted = shlex.quote(str(path))
    return f"`chmod o+{mode} {quoted}` (or `chgrp {group} {quoted} && chmod g+{mode} {quoted}`)"


def _served_entries(catalog_dir: Path):
    """(path, lstat, bits needed) for the catalog's folders and files nginx may serve:
    not dot files (never served), not links (disable_symlinks refuses them)."""
    for folder, folders, files in os.walk(catalog_dir):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in [*folders, *files]:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode):
                yield path, info, 5
            elif stat.S_ISREG(info.st_mode):
                yield path, info, 4


def require_readable_by_workers(catalog_dir: Path, user: pwd.struct_passwd) -> None:
    """Before nginx starts: the workers' user can reach the catalog and read all it
    serves; else one line naming the first path it cannot, and the command that fixes it."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    root = catalog_dir.resolve()
    needs = [(parent, parent.stat(), 1) for parent in reversed(root.parents)]
    needs.append((root, root.stat(), 5))
    for path, info, bits in [*needs, *_served_entries(root)]:
        if not _may(user, groups, info, bits):
            what = {1: "enter", 4: "read", 5: "list"}[bits]
            raise GoldboxError(
                f"catalog {catalog_dir}: nginx's workers run as {user.pw_name} (never as "
                f"root), who cannot {what} {path} (mode {stat.S_IMODE(info.st_mode):04o}, "
                f"owner {_owner(info.st_uid)}); "
                f"run {_fix(user, path, bits)}")


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _render_runtime(catalog_dir: Path, runtime: Runtime, site: Site) -> None:
    """The private nginx's config and site, and the record of how it serves."""
    try:
        (runtime.directory / "tmp").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GoldboxError(f"{runtime.directory}: cannot create: {exc.strerror}") from None
    user = _worker_user()
    if user is not None:
        require_readable_by_workers(catalog_dir, user)
    write_site(catalog_dir, site)
    conf = render_template("nginx.conf.j2", runtime=site.directory, site=site.site_file,
                           user=None if user is None else
                           f"{user.pw_name} {grp.getgrgid(user.pw_gid).gr_name}")
    write_file_atomically(runtime.conf, conf.encode(), mode=0o600)
    write_file_atomically(runtime.site_record, (site.model_dump_json(indent=2) + "\n").encode(),
                          mode=0o600)


def _nginx_failure(what: str, result: subprocess.CompletedProcess | str) -> GoldboxError:
    text = result if isinstance(result, str) else result.stderr
    lines = [line for line in text.splitlines() if "[emerg]" in line or "[alert]" in line]
    detail = (lines or text.strip().splitlines() or ["no output"])[-1]
    return GoldboxError(f"nginx {what}: {detail.strip()}")


def _stop_on_sigterm(signum, frame) -> None:
    """`kill` of catalog-serve stops nginx as Ctrl-C does (see serve's finally)."""
    raise KeyboardInterrupt


def serve(catalog_dir: Path, build_dir: Path, port: int = 8099, cert: Path | None = None,
          key: Path | None = None, base_url: str | None = None, insecure_http: bool = False,
          org: str | None = None, progress: Progress = print) -> None:
    """Serve `catalog_dir` with a private nginx on 127.0.0.1:`port` (0: a free port)
    until interrupted (Ctrl-C or SIGTERM): https with `cert` and `key`, else plain http.
    A private catalog whose `base_url` is plain http on another host is refused unless
    `insecure_http` (the tokens would cross the network in clear text). With `org`,
    Vagrant's short names `<org>/<box>` are answered too (VAGRANT_SERVER_URL = the
    printed URL)."""
    _require_cert_with_key(cert, key)
    require_catalog_dir(catalog_dir, create=False)
    runtime = Runtime.of(catalog_dir, build_dir)
    if (pid := runtime.running_pid()) is not None:
        raise GoldboxError(f"catalog {catalog_dir}: already served by nginx pid {pid} "
                           f"({runtime.site().listen})")
    port = port or free_port()
    if not port_is_free(port):
        raise GoldboxError(f"catalog-serve: port {port} on 127.0.0.1 is busy: pass --port "
                           f"with a free one (0: any) or set catalog.serve_port")
    site = runtime.local_site(port, cert, key, insecure_http, org)
    require_safe_transport(catalog_dir, site, base_url)
    _render_runtime(catalog_dir, runtime, site)
    if shutil.which("nginx") is None:
        raise GoldboxError("catalog-serve: nginx not found on PATH: apt-get install nginx")
    checked = proc.capture(runtime.nginx("-t", "-q"), check=False)
    if checked.returncode != 0:
        raise _nginx_failure(f"-t {runtime.conf}", checked)
    # SIGTERM to nginx when goldbox dies, however it dies (proc.start).
    nginx = proc.start(runtime.nginx(), death=signal.SIGTERM)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        _wait_listening(nginx, port)
        url = f"{'https' if cert else 'http'}://127.0.0.1:{port}/"
        progress(f"serving {catalog_dir} at {url} with nginx (Ctrl-C stops)")
        progress(f"publish for it with: invoke publish --catalog {catalog_dir} --base-url {url}")
        if org:
            progress(f"short names: VAGRANT_SERVER_URL={url.rstrip('/')} vagrant box add "
                     f"{org}/BOX")
        with contextlib.suppress(KeyboardInterrupt):
            nginx.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if nginx.poll() is None:
            nginx.send_signal(signal.SIGQUIT)  # graceful: finish running downloads
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
    if nginx.returncode not in (0, -signal.SIGQUIT, -signal.SIGTERM):
        raise _nginx_failure(f"(pid {nginx.pid}) stopped", _stderr(nginx))


def _stderr(nginx: subprocess.Popen[str]) -> str:
    """What a stopped nginx wrote on its stderr (proc.start gives it a pipe)."""
    return nginx.stderr.read() if nginx.stderr else ""


def _wait_listening(nginx: subprocess.Popen[str], port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if nginx.poll() is not None:
            raise _nginx_failure("did not start", _stderr(nginx))
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise GoldboxError(f"nginx (pid {nginx.pid}): not listening on 127.0.0.1:{port} "
                       f"after {timeout:g} s")


def reload_if_serving(catalog_dir: Path, build_dir: Path, progress: Progress = print) -> bool:
    """Re-render a running `catalog-serve`'s site as it serves (tokens changed) and reload
    its nginx; wait until the new workers answer."""
    runtime = Runtime.of(catalog_dir, build_dir)
    master = runtime.running_pid()
    if master is None:
        return False
    _render_runtime(catalog_dir, runtime, runtime.site())
    old_workers = _children(master)
    result = proc.capture(runtime.nginx("-s", "reload"), check=False)
    if result.returncode != 0:
        raise _nginx_failure("-s reload", result)
    _wait_reloaded(master, old_workers, runtime)
    progress(f"reloaded the nginx serving {catalog_dir}")
    return True


def token_changed(catalog_dir: Path, build_dir: Path, progress: Progress = print) -> None:
    """A token was added or revoked: every site goldbox rendered for the catalog gets the
    new token map (and its reload command is printed), and a running catalog-serve is
    reloaded; if neither exists, say that nothing serves the catalog yet."""
    rewritten = rewrite_recorded_sites(catalog_dir, progress)
    if not reload_if_serving(catalog_dir, build_dir, progress) and not rewritten:
        progress(f"no site of {catalog_dir} to update: nothing goldbox rendered serves it")


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (nginx's master: its workers)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            # Field 4 of /proc/PID/stat, after the ")" that ends the command name.
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.add(int(entry.name))
    return children


def _wait_reloaded(master: int, old_workers: set[int], runtime: Runtime,
                   timeout: float = 60) -> None:
    """`nginx -s reload` only signals the master, which parses the new config, starts new
    workers and tells the old ones to stop accepting: wait until that has happened (old
    workers may still finish downloads), so a token added or revoked counts from the moment
    the command returns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = _children(master)
        if current - old_workers and all(_shutting_down(pid) for pid in current & old_workers):
            return
        time.sleep(0.05)
    log = runtime.directory / "error.log"
    accepting = sorted(p for p in _children(master) & old_workers if not _shutting_down(p))
    raise GoldboxError(f"nginx (pid {master}): the reload did not replace its workers within "
                       f"{timeout:g} s (old workers still accepting: {accepting}); see {log}")


def _shutting_down(pid: int) -> bool:
    """An old worker that has closed its listening sockets and only finishes running
    requests (a download in progress) retitles itself so."""
    try:
        return b"is shutting down" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # gone
