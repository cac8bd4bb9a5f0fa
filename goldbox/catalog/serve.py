"""Serving a catalog with nginx: a site rendered from a template (the same one to
install on any host: `invoke catalog-serve --render-only DIR`) and, for
`invoke catalog-serve`, a private nginx whose pid, temp files and logs lie in a runtime
folder of the project's build/ and that listens on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import ctypes
import grp
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import jinja2

from goldbox import proc
from goldbox.catalog.layout import require_catalog_dir
from goldbox.catalog.store import Progress, write_file_atomically
from goldbox.catalog.tokens import load_tokens
from goldbox.errors import GoldboxError
from goldbox.vm import port_is_free

SITE_FILE = "goldbox-catalog.conf"
_TEMPLATES = Path(__file__).parent / "templates"
# Characters that would end or escape nginx's double-quoted root.
_UNSAFE_PATH = re.compile(r'["\\$\n\r{};]')
_PR_SET_PDEATHSIG = 1


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True, autoescape=False)


def _site_id(catalog_dir: Path) -> str:
    """Names this catalog's nginx variables, so two catalogs' sites can share one nginx."""
    return hashlib.sha256(str(catalog_dir.resolve()).encode()).hexdigest()[:8]


def render_site(catalog_dir: Path, listen: str, server_name: str = "_",
                access_log: str = "/var/log/nginx/goldbox-catalog.access.log") -> str:
    """The nginx server block (and token maps) serving `catalog_dir`."""
    require_catalog_dir(catalog_dir, create=False)
    root = catalog_dir.resolve()
    if _UNSAFE_PATH.search(str(root)):
        raise GoldboxError(f"catalog {root}: nginx cannot serve a path with quotes, '$', "
                           f"'\\', braces, ';' or newlines; move or rename it")
    tokens = load_tokens(catalog_dir)
    return _environment().get_template("site.conf.j2").render(
        id=_site_id(catalog_dir), listen=listen, server_name=server_name, root=root,
        access_log=access_log,
        tokens=None if tokens is None else sorted(tokens.items()))


def write_site(catalog_dir: Path, out_dir: Path, listen: str, server_name: str = "_") -> Path:
    """`<out_dir>/goldbox-catalog.conf` for a host's nginx; mode 0600 when it holds tokens."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GoldboxError(f"{out_dir}: cannot create: {exc.strerror}") from None
    path = out_dir / SITE_FILE
    mode = 0o644 if load_tokens(catalog_dir) is None else 0o600
    write_file_atomically(path, render_site(catalog_dir, listen, server_name).encode(), mode)
    return path


@dataclass(frozen=True)
class Runtime:
    """The private nginx of one catalog: its config, pid, logs and temp files."""
    directory: Path

    @classmethod
    def of(cls, catalog_dir: Path, build_dir: Path) -> Runtime:
        return cls(build_dir / "catalog-serve" / _site_id(catalog_dir))

    @property
    def conf(self) -> Path:
        return self.directory / "nginx.conf"

    @property
    def site(self) -> Path:
        return self.directory / SITE_FILE

    @property
    def pid_file(self) -> Path:
        return self.directory / "nginx.pid"

    @property
    def port_file(self) -> Path:
        return self.directory / "port"

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


def _worker_user(catalog_dir: Path) -> str | None:
    """As root, nginx's workers would run as `nobody`, who may not read the catalog: run
    them as the catalog's owner instead. As anyone else there is no choice to make."""
    if os.geteuid() != 0:
        return None
    stat = catalog_dir.stat()
    return f"{pwd.getpwuid(stat.st_uid).pw_name} {grp.getgrgid(stat.st_gid).gr_name}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _render_runtime(catalog_dir: Path, runtime: Runtime, port: int) -> None:
    try:
        (runtime.directory / "tmp").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GoldboxError(f"{runtime.directory}: cannot create: {exc.strerror}") from None
    site = render_site(catalog_dir, f"127.0.0.1:{port}",
                       access_log=str(runtime.directory / "access.log"))
    write_file_atomically(runtime.site, site.encode(), mode=0o600)
    conf = _environment().get_template("nginx.conf.j2").render(
        user=_worker_user(catalog_dir), runtime=runtime.directory, site=runtime.site)
    write_file_atomically(runtime.conf, conf.encode(), mode=0o600)
    write_file_atomically(runtime.port_file, f"{port}\n".encode())


def _nginx_failure(what: str, result: subprocess.CompletedProcess | str) -> GoldboxError:
    text = result if isinstance(result, str) else result.stderr
    lines = [line for line in text.splitlines() if "[emerg]" in line or "[alert]" in line]
    detail = (lines or text.strip().splitlines() or ["no output"])[-1]
    return GoldboxError(f"nginx {what}: {detail.strip()}")


def _stop_on_sigterm(signum, frame) -> None:
    """`kill` of catalog-serve stops nginx as Ctrl-C does (see serve's finally)."""
    raise KeyboardInterrupt


def _die_with_parent() -> None:
    """In the child: the kernel sends SIGTERM to nginx when goldbox dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def serve(catalog_dir: Path, build_dir: Path, port: int = 8099,
          progress: Progress = print) -> None:
    """Serve `catalog_dir` with a private nginx on 127.0.0.1:`port` (0: a free port)
    until interrupted (Ctrl-C or SIGTERM)."""
    runtime = Runtime.of(catalog_dir, build_dir)
    if (pid := runtime.running_pid()) is not None:
        raise GoldboxError(f"catalog {catalog_dir}: already served by nginx pid {pid} "
                           f"(port {runtime.port_file.read_text().strip()})")
    port = port or free_port()
    if not port_is_free(port):
        raise GoldboxError(f"catalog-serve: port {port} on 127.0.0.1 is busy: pass --port "
                           f"with a free one (0: any) or set catalog.serve_port")
    _render_runtime(catalog_dir, runtime, port)
    if shutil.which("nginx") is None:
        raise GoldboxError("catalog-serve: nginx not found on PATH: apt-get install nginx")
    checked = proc.capture(runtime.nginx("-t", "-q"), check=False)
    if checked.returncode != 0:
        raise _nginx_failure(f"-t {runtime.conf}", checked)
    nginx = subprocess.Popen(runtime.nginx(), preexec_fn=_die_with_parent,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        _wait_listening(nginx, port)
        url = f"http://127.0.0.1:{port}/"
        progress(f"serving {catalog_dir} at {url} with nginx (Ctrl-C stops)")
        progress(f"publish for it with: invoke publish --catalog {catalog_dir} --base-url {url}")
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
        raise _nginx_failure(f"(pid {nginx.pid}) stopped", nginx.stderr.read())


def _wait_listening(nginx: subprocess.Popen, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if nginx.poll() is not None:
            raise _nginx_failure("did not start", nginx.stderr.read())
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise GoldboxError(f"nginx (pid {nginx.pid}): not listening on 127.0.0.1:{port} "
                       f"after {timeout:g} s")


def reload_if_serving(catalog_dir: Path, build_dir: Path, progress: Progress = print) -> bool:
    """Re-render a running `catalog-serve`'s site (tokens changed) and reload its nginx."""
    runtime = Runtime.of(catalog_dir, build_dir)
    if runtime.running_pid() is None:
        return False
    _render_runtime(catalog_dir, runtime, int(runtime.port_file.read_text()))
    master = runtime.running_pid()
    old_workers = _children(master)
    result = proc.capture(runtime.nginx("-s", "reload"), check=False)
    if result.returncode != 0:
        raise _nginx_failure("-s reload", result)
    _wait_reloaded(master, old_workers, runtime)
    progress(f"reloaded the nginx serving {catalog_dir}")
    return True


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
