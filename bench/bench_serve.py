"""Benchmark of the served stack: the tutorial's configuration against goldbox's golden one.

In one run, on a Debian 12 rootfs provisioned by provision/ and booted natively by its
own systemd (systemd-nspawn, private network: all traffic stays on the container's
loopback), wrk (Debian's package) loads:

  tutorial   uWSGI as the tutorial starts it (`uwsgi --socket 127.0.0.1:8080 -w WSGI:app`:
             1 process, no master) behind the tutorial's nginx.conf, 64 connections;
  golden     the golden configuration as rendered and started by its units, 64 and 16
             connections;
  static     a static file from the golden nginx, 64 connections;
  ceiling    nginx's cheapest response (`return 200`, no file, no log) from a minimal
             server of its own, 64 connections: the most any nginx location can give
             here, with wrk on the same cores, so the static figure can be read against
             it.

It prints req/s, p50/p99 latency, socket errors and non-2xx/3xx responses of each run,
the ratios against the goals, and ends with one JSON line of the figures.
Usage (root, from the project root): .venv/bin/python bench/bench_serve.py [--seconds N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack_rootfs import (  # noqa: E402
    Container,
    booted,
    run_provision,
    staged_rootfs,
    step_table,
)
from goldbox.config import load_config  # noqa: E402
from goldbox.rootfs import chroot_mounts  # noqa: E402

TUTORIAL_PORT = 8080
TUTORIAL_PID = "/run/tutorial-uwsgi.pid"
TUTORIAL_NGINX = "/etc/nginx/tutorial-nginx.conf"
# The tutorial's nginx.conf, as printed there but for two corrections that do not touch
# the dynamic path: a pid file of its own and the static root that works
# (its `proxy_*` lines under uwsgi_pass do nothing and are left out).
TUTORIAL_NGINX_CONF = """worker_processes 1;
pid /run/tutorial-nginx.pid;

events {
    worker_connections 1024;
}

http {
    sendfile on;

    gzip              on;
    gzip_http_version 1.0;
    gzip_proxied      any;
    gzip_min_length   500;
    gzip_disable      "MSIE [1-6]\\.";
    gzip_types        text/plain text/xml text/css text/comma-separated-values
                      text/javascript application/x-javascript application/atom+xml;

    upstream uwsgicluster {
        server 127.0.0.1:%(port)d;
    }

    server {
        listen 80;

        location ^~ /static/ {
            root %(app_root)s;
        }

        location / {
            include    uwsgi_params;
            uwsgi_pass uwsgicluster;
        }
    }
}
"""
CEILING_PORT = 8081
CEILING_NGINX = "/etc/nginx/ceiling-nginx.conf"
CEILING_NGINX_CONF = """worker_processes auto;
pid /run/ceiling-nginx.pid;

events {
    worker_connections 1024;
}

http {
    access_log off;
    server {
        listen %(port)d;
        location / {
            return 200 "x";
        }
    }
}
"""
WRK_THREADS = 2  # this machine's cores; wrk, nginx and uWSGI share them


@dataclass(frozen=True)
class Run:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    non_2xx: int

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx


def fail(message: str) -> None:
    print(f"bench_serve: error: {message}", file=sys.stderr)
    sys.exit(1)


def milliseconds(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def parse_wrk(name: str, output: str) -> Run:
    """wrk --latency's report: Requests/sec, the 50% and 99% lines, errors."""
    def find(pattern: str) -> str:
        match = re.search(pattern, output, re.M)
        if not match:
            fail(f"wrk's report for {name} has no {pattern!r}:\n{output}")
        return match.group(1)

    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Run(name=name, rps=float(find(r"^Requests/sec:\s+([\d.]+)")),
               p50_ms=milliseconds(find(r"^\s+50%\s+(\S+)")),
               p99_ms=milliseconds(find(r"^\s+99%\s+(\S+)")),
               socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
               non_2xx=int(non_2xx.group(1)) if non_2xx else 0)


def wrk(container: Container, name: str, path: str, connections: int, seconds: int,
        port: int = 80) -> Run:
    url = f"http://127.0.0.1:{port}{path}"
    warm = [*container.in_network, "wrk", f"-t{WRK_THREADS}", f"-c{connections}", "-d3s", url]
    subprocess.run(warm, capture_output=True, check=True)  # imports, caches, first forks
    result = subprocess.run([*container.in_network, "wrk", f"-t{WRK_THREADS}",
                             f"-c{connections}", f"-d{seconds}s", "--latency", url],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        fail(f"wrk against {name} exited {result.returncode}: {result.stderr.strip()}")
    run = parse_wrk(name, result.stdout)
    print(f"{name:<22} {run.rps:9.0f} req/s  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms"
          f"  socket errors {run.socket_errors}  non-2xx/3xx {run.non_2xx}", flush=True)
    return run


def wait_for_hello(container: Container) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = subprocess.run([*container.in_network, "curl", "-s", "--max-time", "5",
                               "http://127.0.0.1/"], capture_output=True, text=True,
                              check=False).stdout
        if body == "Hello!":
            return
        time.sleep(0.5)
    fail("the stack in the container does not answer GET / with Hello!")


def tutorial_stack(container: Container, root: Path, plan: dict) -> None:
    """The golden units stopped; uWSGI and nginx started the tutorial's way."""
    app = plan["app"]
    container.run("systemctl", "stop", plan["uwsgi"]["service"], plan["nginx"]["service"])
    (root / TUTORIAL_NGINX.lstrip("/")).write_text(
        TUTORIAL_NGINX_CONF % {"port": TUTORIAL_PORT, "app_root": app["root"]})
    # `cd ~/MyApplication && env/bin/uwsgi --socket 127.0.0.1:8080 -w WSGI:app &`, as the
    # app user, its output to a file instead of a terminal.
    container.start("runuser", "-u", app["user"], "--", "/bin/sh", "-c",
                    f"cd {app['root']} && exec env/bin/uwsgi --socket "
                    f"127.0.0.1:{TUTORIAL_PORT} -w WSGI:app --daemonize /tmp/tutorial-uwsgi.log")
    container.start("/usr/sbin/nginx", "-c", TUTORIAL_NGINX)
    wait_for_hello(container)


def ceiling_run(container: Container, root: Path, seconds: int) -> Run:
    """nginx's cheapest response, from a minimal server beside the others."""
    (root / CEILING_NGINX.lstrip("/")).write_text(CEILING_NGINX_CONF % {"port": CEILING_PORT})
    container.start("/usr/sbin/nginx", "-c", CEILING_NGINX)
    return wrk(container, "nginx ceiling", "/", 64, seconds, port=CEILING_PORT)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=25, help="length of each wrk run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        fail("run as root: it debootstraps, chroots and boots a container")
    for tool, package in (("wrk", "wrk"), ("systemd-nspawn", "systemd-container"),
                          ("debootstrap", "debootstrap")):
        if not shutil.which(tool):
            fail(f"{tool} not found: apt-get install {package}")
    if os.environ.get("GOLDBOX_BENCH_PRIVATE_MOUNTS") != "1":
        # The chroot's mounts then go with this process, however it ends.
        os.environ["GOLDBOX_BENCH_PRIVATE_MOUNTS"] = "1"
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private",
                              sys.executable, *sys.argv])

    config = load_config(ROOT)
    platform = config.platform("debian-12")
    started = time.monotonic()
    with staged_rootfs(config, platform) as (root, plan):
        with chroot_mounts(root):
            result, seconds = run_provision(root)
        if result.returncode != 0 or "FAILED" in step_table(result.stdout).values():
            fail(f"provision failed in the rootfs:\n{result.stdout[-3000:]}{result.stderr}")
        print(f"rootfs provisioned in {seconds:.0f} s (CPython built from its tarball)")
        with tempfile.TemporaryDirectory(prefix="goldbox-bench-serve-") as scratch, \
                booted(root, Path(scratch) / "console.log") as container:
            wait_for_hello(container)
            print(f"booted after {time.monotonic() - started:.0f} s; wrk {args.seconds} s "
                  f"per run, {WRK_THREADS} threads\n")
            static = "/static/" + sorted(p.name for p in (config.app_dir / "static").iterdir())[0]
            golden = wrk(container, "golden, 64 conn", "/", 64, args.seconds)
            golden_16 = wrk(container, "golden, 16 conn", "/", 16, args.seconds)
            static_run = wrk(container, f"static {static}", static, 64, args.seconds)
            ceiling = ceiling_run(container, root, args.seconds)
            tutorial_stack(container, root, plan)
            tutorial = wrk(container, "tutorial, 64 conn", "/", 64, args.seconds)
    runs = [golden, golden_16, static_run, ceiling, tutorial]
    errors = sum(run.errors for run in runs)
    goals = [
        (f"golden req/s = {ratio(golden.rps, tutorial.rps):.2f}x the tutorial's", ">= 1.2x",
         golden.rps >= 1.2 * tutorial.rps),
        (f"golden p99 at 64 = {golden.p99_ms:.1f} ms, tutorial {tutorial.p99_ms:.1f} ms",
         "no worse", golden.p99_ms <= tutorial.p99_ms),
        (f"golden p99 at 16 = {golden_16.p99_ms:.1f} ms", "<= 10 ms", golden_16.p99_ms <= 10),
        (f"errors = {errors}", "0", errors == 0),
        (f"static req/s = {ratio(static_run.rps, golden.rps):.1f}x golden's dynamic",
         ">= 8x", static_run.rps >= 8 * golden.rps),
    ]
    print()
    for figure, goal, met in goals:
        print(f"{'met   ' if met else 'MISSED'}  {figure} (goal {goal})")
    print(f"        static = {ratio(static_run.rps, ceiling.rps):.0%} of nginx's ceiling here "
          f"({ceiling.rps:.0f} req/s = {ratio(ceiling.rps, golden.rps):.1f}x golden's dynamic)")
    print(json.dumps({
        "tutorial_rps": round(tutorial.rps), "golden_rps": round(golden.rps),
        "tutorial_p99_ms": tutorial.p99_ms, "golden_p99_ms": golden.p99_ms,
        "golden_p99_16_ms": golden_16.p99_ms, "errors": errors,
        "static_rps": round(static_run.rps), "nginx_ceiling_rps": round(ceiling.rps)}))


if __name__ == "__main__":
    main()
