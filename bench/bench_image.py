"""Benchmark of the main job on one platform (default: box.default_platform), printing
its figures:

  cold `invoke image` by phase (empty cache: the CPython tarball too comes from its first
  verified source that serves it), no-change rebuild,
  app-only-change rebuild, box size, and `up` + `verify` (in a libvirt netns); then one
  JSON line: cold_s, app_only_s, no_change_s, up_s, verify_s, box_bytes.

Runs in a fresh `git clone` of this repository's HEAD, with its own cache and
VAGRANT_HOME, so nothing of the working tree or the user's cache is touched.
Usage (root): .venv/bin/python bench/bench_image.py [--platform P] [--warm-cache]

--remote-cache measures the team cache instead (docs/team-cache.md): it starts a
docker-registry on 127.0.0.1 (htpasswd, TLS from a test CA), fills it with a cold build
of a fresh clone (empty local cache, push on), then times a second fresh clone with an
empty local cache that pulls from it; JSON line: cold_s, cold_remote_s, pulled_bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from goldbox.config import load_config  # noqa: E402

INVOKE = str(Path(sys.executable).parent / "invoke")
# The order `invoke image` runs its phases in (manifest.json keeps them sorted by name).
PHASE_ORDER = ["artifacts", "native build", "base disk", "render", "system image", "packer", "box"]


def print_phases(title: str, phases: dict[str, float]) -> None:
    print(title)
    for phase in sorted(phases, key=lambda p: (PHASE_ORDER + [p]).index(p)):
        print(f"  {phase:<14} {phases[phase]:8.1f} s")


def timed(argv: list[str], cwd: Path, env: dict, netns: str | None = None) -> float:
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    start = time.monotonic()
    subprocess.run(argv, cwd=cwd, env=env, check=True)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", default=None,
                        help="platform name (default: box.default_platform)")
    parser.add_argument("--warm-cache", action="store_true",
                        help="use the user's goldbox cache instead of an empty one")
    parser.add_argument("--remote-cache", action="store_true",
                        help="time a cold build that pulls from a team cache another cold "
                             "build filled (and nothing else)")
    args = parser.parse_args()
    config = load_config(ROOT)
    platform = config.platform(args.platform)
    if args.remote_cache:
        bench_remote_cache(platform.name)
        return
    with tempfile.TemporaryDirectory(prefix="goldbox-bench-") as scratch:
        work = Path(scratch)
        clone = work / "goldbox"
        subprocess.run(["git", "clone", "-q", "--local", str(ROOT), str(clone)], check=True)
        cache = config.cache_dir if args.warm_cache else work / "cache"
        env = {**os.environ, "GOLDBOX_CACHE": str(cache), "VAGRANT_HOME": str(work / "vagrant")}
        # Nothing imported by hand: `invoke image` fetches the CPython tarball from a
        # verified source (the Debian archive where python.org is not reachable).
        figures: dict[str, float] = {}
        image = [INVOKE, "image", "--platform", platform.name]
        figures["cold image"] = timed(image, clone, env)
        manifest_path = clone / "dist" / platform.name / "manifest.json"
        cold = json.loads(manifest_path.read_text())
        figures["no-change rebuild"] = timed(image, clone, env)
        style = clone / "app" / "static" / "style.css"
        style.write_text(style.read_text() + "/* app-only change for the benchmark */\n")
        figures["app-only rebuild"] = timed(image, clone, env)
        app_only = json.loads(manifest_path.read_text())
        with harness.libvirt_netns(f"gb-bench-{os.getpid()}") as netns:
            try:
                figures["up"] = timed([INVOKE, "up", "--platform", platform.name], clone, env,
                                      netns)
                figures["verify"] = timed([INVOKE, "verify", "--platform", platform.name],
                                          clone, env, netns)
            finally:
                timed([INVOKE, "destroy", "--platform", platform.name], clone, env, netns)
        print(f"\nbenchmark: {platform.name}, {'warm' if args.warm_cache else 'cold'} cache")
        print_phases("cold image, by phase:", cold["phases"])
        print_phases("app-only rebuild, by phase:", app_only["phases"])
        for name, seconds in figures.items():
            print(f"{name:<18} {seconds:8.1f} s")
        print(f"{'box size':<18} {cold['box_size'] / 2**20:8.1f} MiB")
        # One line of the figures, for scripts that compare runs.
        print(json.dumps({"cold_s": round(figures["cold image"], 1),
                          "app_only_s": round(figures["app-only rebuild"], 1),
                          "no_change_s": round(figures["no-change rebuild"], 1),
                          "up_s": round(figures["up"], 1),
                          "verify_s": round(figures["verify"], 1),
                          "box_bytes": cold["box_size"]}))
        shutil.rmtree(work / "vagrant", ignore_errors=True)


def bench_remote_cache(platform: str) -> None:
    """Two machines of a team, played by two fresh clones with empty local caches: the
    first builds cold and pushes every entry to a real registry, the second builds the
    same box pulling them. Prints both times and the bytes the second one pulled."""
    from bench.oci_registry import PASSWORD, USER, running_registry
    from goldbox.cache import Cache
    from goldbox.cache_remote import NAMESPACE, origin_of

    with tempfile.TemporaryDirectory(prefix="goldbox-bench-remote-") as scratch:
        work = Path(scratch)
        key = work / "ci-key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
        signers = work / "allowed_signers"
        public = key.with_suffix(".pub").read_text()
        signers.write_text(f'ci@team namespaces="{NAMESPACE}" {public}')
        with running_registry(work / "registry") as registry:
            figures, caches = {}, {}
            for machine, push in (("first", True), ("second", False)):
                clone, caches[machine] = work / machine, work / f"{machine}-cache"
                subprocess.run(["git", "clone", "-q", "--local", str(ROOT), str(clone)],
                               check=True)
                toml = clone / "goldbox.toml"
                toml.write_text(toml.read_text().replace("[cache]\n", (
                    f'[cache]\nremote = "{registry.url("team/goldbox-cache")}"\n'
                    f'push = {str(push).lower()}\nsigning_key = "{key}"\n'
                    f'allowed_signers = "{signers}"\ncacert = "{registry.ca}"\n'), 1))
                env = {**os.environ, "GOLDBOX_CACHE": str(caches[machine]),
                       "VAGRANT_HOME": str(work / f"{machine}-vagrant"),
                       "GOLDBOX_CACHE_USER": USER, "GOLDBOX_CACHE_PASSWORD": PASSWORD}
                figures[machine] = timed([INVOKE, "image", "--platform", platform], clone, env)
        pulled = [e for e in Cache(caches["second"]).entries() if origin_of(e.path)]
        print(f"\nbenchmark: {platform}, team cache on a local docker-registry")
        print(f"{'cold image':<24} {figures['first']:8.1f} s (pushes every entry)")
        print(f"{'cold image, remote cache':<24} {figures['second']:8.1f} s "
              f"({len(pulled)} entries pulled)")
        print(json.dumps({"cold_s": round(figures["first"], 1),
                          "cold_remote_s": round(figures["second"], 1),
                          "pulled_bytes": sum(e.size for e in pulled)}))


if __name__ == "__main__":
    main()
