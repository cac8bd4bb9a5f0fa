"""goldbox's command line: one small Invoke task per verb. The work lives in goldbox/.

Run `invoke --list` for the tasks and `invoke --help TASK` for a task's options.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from pathlib import Path

from invoke import Exit, task

from goldbox.config import load_config
from goldbox.errors import GoldboxError, describe_os_error

# The project is the folder holding this tasks.py: goldbox.toml, platforms/, app/, templates.
ROOT = Path(__file__).resolve().parent
TOKEN_HELP = ("read token for a private HTTP catalog, sent to --catalog's origin only "
              "(default: $VAGRANT_CLOUD_TOKEN, sent to $VAGRANT_SERVER_URL's origin only)")


def reports_errors(body):
    """Turn every failure a user can act on into one line on stderr and exit status 1,
    without a traceback: goldbox's own errors, and the host's (a full disk, a file it
    may not write, a command that failed) naming the file or command."""

    @functools.wraps(body)
    def wrapper(c, *args, **kwargs):
        try:
            return body(c, *args, **kwargs)
        except GoldboxError as exc:
            message = str(exc)
        except OSError as exc:
            message = describe_os_error(exc)
        except subprocess.CalledProcessError as exc:
            message = f"`{subprocess.list2cmdline(map(str, exc.cmd))}` exited with code " \
                      f"{exc.returncode}"
        except KeyboardInterrupt:
            message = "interrupted"
        print(f"goldbox: error: {message}", file=sys.stderr)
        raise Exit(code=1)

    return wrapper


@task(help={"platform": "platform name from platforms/ (default: box.default_platform)"})
@reports_errors
def render(c, platform=None):
    """Render a platform's templates into build/<platform>/, as `invoke image` would.

    Writes the Packer template, the answer file (ISO platforms), the Vagrantfile,
    plan.json for provision/, and the nginx and uWSGI configs, with this host's packer
    version and accelerator and the natively built bundle the last `invoke image`
    recorded; where the result still differs from what image would build, it says so."""
    from goldbox.image import render_as_image_would

    config = load_config(ROOT)
    rendered, differences = render_as_image_would(config, config.platform(platform))
    for path in rendered.files():
        print(path.relative_to(config.root))
    for difference in differences:
        print(f"note: {difference}")


@task
@reports_errors
def doctor(c):
    """Check this host's prerequisites, one line each; non-zero if one is missing.

    packer, vagrant + vagrant-libvirt, qemu, a reachable libvirt daemon, hardware
    acceleration (probed by booting a kernel; TCG otherwise), debootstrap, disk space."""
    from goldbox.doctor import format_checks, run_checks
    from goldbox.pool import pool_check

    checks = run_checks(load_config(ROOT).cache_dir) + [pool_check()]
    print(format_checks(checks))
    failed = [check.name for check in checks if check.required and not check.ok]
    if failed:
        raise GoldboxError(f"doctor: missing prerequisites: {', '.join(failed)}")


@task(help={"args": "extra pytest arguments for both layers, e.g. \"-k render\""})
def test(c, args=""):
    """Lint with ruff, type-check goldbox/ with mypy, run the fast unit layer, then the rest
    of the test suite.

    The unit layer (tests marked `unit`, all of tests/unit/: pure logic, no root, no
    tools) runs first and stops at its first failure, in seconds; the rest needs root:
    it builds real rootfs, disks and boxes, and boots VMs."""
    venv = Path(sys.executable).parent
    with c.cd(str(ROOT)):
        c.run(f"{venv}/ruff check .", echo=True)
        c.run(f"{venv}/mypy", echo=True)
        c.run(f"{venv}/pytest -q -x -m unit {args}", echo=True, pty=False)
        c.run(f"{venv}/pytest -rA --durations=15 -m 'not unit' {args}", echo=True, pty=False)


@task(help={"check": "write nothing: list the docs whose tables are out of date, exit 1 "
                     "if any"})
@reports_errors
def contracts(c, check=False):
    """Generate the reference tables of docs/contracts.md and docs/config.md from the models.

    Only the tables between `<!-- generated:NAME -->` markers are written (the plan,
    manifest, catalog metadata and state, cache kinds, goldbox.toml and a platform's
    keys); the prose around them is kept, and so is each goldbox.toml key's meaning."""
    from goldbox import reference

    if check:
        stale = reference.stale(ROOT)
        print("\n".join(f"out of date: {name}" for name in stale) or "up to date")
        if stale:
            raise Exit(code=1)
        return
    written = reference.write_docs(ROOT)
    print("\n".join(f"written: {name}" for name in written) or "up to date")


@task(help={"platform": "platform name (default: box.default_platform)",
            "import": "add a local copy of the CPython tarball to the cache (checked by sha256)"})
@reports_errors
def artifacts(c, platform=None, import_=None):
    """Fetch or import the CPython tarball and fill the wheelhouse, sha256-verified.

    Without --import, downloads the platform's python.url into the cache. A host that
    cannot reach it imports a copy with --import PATH (its sha256 must match)."""
    from goldbox import image_artifacts as image

    config = load_config(ROOT)
    chosen = config.platform(platform)
    if import_:
        print(f"imported: {image.import_artifact(config, chosen, Path(import_))}")
        return
    tarball, served_by = image.ensure_tarball(config, chosen)
    print(f"tarball: {tarball} (from {served_by})")
    wheelhouse = config.build_dir / chosen.name / "work" / "wheelhouse"
    files = image.prepare_wheelhouse(config, chosen, wheelhouse, log=None)
    print(f"wheelhouse: {wheelhouse} ({len(files)} files)")


@task(help={"platform": "platform name (default: box.default_platform)",
            "builder": "packer builder: qemu (a libvirt box) or virtualbox (ISO platforms)",
            "force": "rebuild even when no input changed",
            "refresh": "rebuild the base disk though cached, to take the security and point "
                       "updates published since it was made (and so the box)",
            "target": "a box to build, <provider>/<arch>: libvirt/amd64, virtualbox/amd64 or "
                      "libvirt/arm64 (repeatable; default: box.targets in goldbox.toml)",
            "remote": "the team cache, oci://HOST[:PORT]/REPOSITORY (default: cache.remote): "
                      "entries missing here are pulled from it when signed by a key in "
                      "cache.allowed_signers",
            "push-cache": "push each entry built here to the team cache, signed with "
                          "cache.signing_key (as cache.push = true)"},
      iterable=["target"])
@reports_errors
def image(c, platform=None, builder="qemu", force=False, refresh=False, target=None,
          remote=None, push_cache=False):
    """Build the golden box: artifacts, native build, base disk, packer, box + manifest.

    Output: dist/<platform>/<box>-<version>-libvirt.box and manifest.json; with target
    virtualbox/amd64 also <box>-<version>-virtualbox.box (made from the same golden disk:
    a streamOptimized VMDK, box.ovf, a Vagrantfile) and manifest.virtualbox-amd64.json;
    with target libvirt/arm64 also <box>-<version>-libvirt-arm64.box, its own golden build
    (the arm64 base disk, CPython and uWSGI cross-compiled here, packer under
    qemu-system-aarch64 with UEFI: TCG, slow) and manifest.libvirt-arm64.json. With no
    input changed since the last build it only confirms the box is up to date. The base
    disk holds the updates published when it was made; --refresh takes today's. Each
    packer boot's serial console goes to build/<platform>/logs/image-*.console.*.log,
    watched as `invoke up` watches its boot (see `invoke --help up`), without a retry.
    With a team cache (--remote, cache.remote; docs/team-cache.md) an entry missing here
    comes from the registry if signed by a trusted key, else it is built here; a registry
    that is down or refuses is one line, never a failed build."""
    from goldbox.image import build_image

    config = load_config(ROOT)
    if remote is not None or push_cache:
        from goldbox.cache_remote import with_options
        config = with_options(config, remote, push_cache)
    build_image(config, config.platform(platform), builder=builder, force=force,
                refresh=refresh, targets=target or None)


@task(help={"platform": "platform name (default: box.default_platform)",
            "disk-gib": "the VM's disk in GiB, at least the box's (default: vm.disk_gib, "
                        "else the box's size); the root filesystem grows to it at boot",
            "arch": "the box's architecture: amd64 (default) or arm64, the box of "
                    "`invoke image --target libvirt/arm64` (a VM of its own, emulated)"})
@reports_errors
def up(c, platform=None, disk_gib=None, arch="amd64"):
    """Add the built box to Vagrant and boot it with vagrant-libvirt.

    Guest port 80 is forwarded to 127.0.0.1:<ports.host_http>. A disk larger than the
    box's (--disk-gib, vm.disk_gib) is given to the VM with vagrant-libvirt's
    machine_virtual_size when the VM is created; its root partition and ext4 grow to it.
    The guest's serial console goes to build/<platform>/console.log: a boot whose console
    shows a kernel panic, an emergency shell or a failed fsck, or stays silent for
    $GOLDBOX_CONSOLE_SILENCE_S seconds (default 180 under TCG, 90 under KVM) before SSH
    answers, is stopped, destroyed and booted once more; a second such boot is the error.
    With --arch arm64 the arm64 box boots as an aarch64 domain under TCG (~5 min here),
    from build/<platform>/vm-arm64/, its box added to Vagrant as <box>-arm64."""
    from goldbox.vm import up as boot
    from goldbox.vm import with_disk

    config = load_config(ROOT)
    chosen = config.platform(platform)
    boot(with_disk(config, chosen, disk_gib), chosen, _arch_option("up", arch))


def _arch_option(task_name, value):
    """The architecture an --arch option names, or one error line naming the option."""
    from goldbox.arch import architecture

    try:
        return architecture(value)
    except GoldboxError as exc:
        raise GoldboxError(f"{task_name} --arch: {exc}") from None


@task(help={"platform": "platform name (default: box.default_platform; with "
                        "--from-catalog: the platform the box's manifest names)",
            "from-catalog": "URL[@VERSION]: a catalog channel's metadata.json; add the box "
                            "through it with stock Vagrant, boot, check against the plan.json "
                            "published with it, destroy",
            "catalog": "with --from-catalog: the catalog directory to record the pass in "
                       "(default: catalog.location)",
            "cacert": "with --from-catalog: a CA certificate (PEM) to trust for an https "
                      "catalog, for goldbox's reads and `vagrant box add --cacert`",
            "arch": "the VM of `invoke up --arch`: amd64 (default) or arm64"})
@reports_errors
def verify(c, platform=None, from_catalog=None, catalog=None, cacert=None, arch="amd64"):
    """Check the running VM: testinfra suite, HTTP "Hello!", static files, hygiene.

    Prints a pass/fail table; exits non-zero if any check fails. With --from-catalog,
    checks what teammates get instead: a private VAGRANT_HOME adds the box through the
    catalog URL (VAGRANT_CLOUD_TOKEN goes to VAGRANT_SERVER_URL's origin only, as in
    docs/catalog.md "Tokens"; --cacert FILE trusts a private CA), boots it in
    build/from-catalog/ as libvirt domain
    goldbox-trial-<version>-default with HTTP on a free port of its own (never the VM of
    `invoke up`), runs the same checks against the box's own published plan.json,
    destroys it, and records the pass for the version's sha256 (which `invoke release`
    requires with catalog.require_verified)."""
    from goldbox.verify import format_results
    from goldbox.verify import verify as check

    config = load_config(ROOT)
    started = time.monotonic()
    if from_catalog:
        if arch != "amd64":
            raise GoldboxError("verify --arch: not with --from-catalog (it boots the box "
                               "Vagrant picks for this host)")
        candidate, results = _verify_from_catalog(config, platform, from_catalog, cacert)
    else:
        if cacert:
            raise GoldboxError("verify --cacert: only with --from-catalog URL")
        results = check(config, config.platform(platform), _arch_option("verify", arch))
    print(format_results(results, time.monotonic() - started))
    failed = [result.check for result in results if not result.ok]
    if failed:
        raise GoldboxError(f"verify: {len(failed)} check(s) failed: {', '.join(failed)}")
    if from_catalog:
        from goldbox.catalog import catalog_directory, record_verified

        record_verified(catalog_directory(catalog, config), candidate.box, candidate.version,
                        candidate.sha256)


def _verify_from_catalog(config, platform, target, cacert):
    from goldbox.catalog.trial import parse_target, try_from_catalog

    if cacert and not Path(cacert).is_file():
        raise GoldboxError(f"verify --cacert {cacert}: no such file")
    parsed = parse_target(target)
    return try_from_catalog(config, platform, parsed, config.build_dir / "from-catalog",
                            cacert=Path(cacert).resolve() if cacert else None)


@task(help={"platform": "platform name (default: box.default_platform)",
            "purge": "also remove the box version from Vagrant and every libvirt pool "
                     "volume of box versions no longer installed",
            "arch": "the VM of `invoke up --arch`: amd64 (default) or arm64"})
@reports_errors
def destroy(c, platform=None, purge=False, arch="amd64"):
    """Remove the VM and Vagrant's state for it (the box stays installed).

    --purge also removes this project's box version from Vagrant and deletes the images
    vagrant-libvirt keeps in its pool for box versions no longer installed."""
    from goldbox.vm import destroy as remove
    from goldbox.vm import local_box_name

    config = load_config(ROOT)
    chosen = _arch_option("destroy", arch)
    remove(config, config.platform(platform), chosen)
    if purge:
        from goldbox import virt
        from goldbox.pool import purge as purge_volumes

        box = config.project.box
        name = local_box_name(box.name, chosen)
        if virt.remove_box(name, box.version):
            print(f"removed box {name} {box.version} from Vagrant")
        purge_volumes()


@task(help={"platform": "platform whose boxes to publish (default: box.default_platform)",
            "manifest": "only this box's manifest.json (default: every target built into "
                        "dist/<platform>/: manifest.json and manifest.<provider>-<arch>.json)",
            "catalog": "catalog directory (default: catalog.location in goldbox.toml)",
            "base-url": "URL the catalog directory is served under; metadata.json's box "
                        "URLs use it (default: catalog.base_url, else file:// URLs of "
                        "the directory)",
            "force": "replace the box of a candidate version + provider already published "
                     "(a released version never changes: publish a new version)",
            "release": "release it at once (skip the candidate stage)"})
@reports_errors
def publish(c, platform=None, manifest=None, catalog=None, base_url=None, force=False,
            release=False):
    """Publish the built boxes to a versioned Vagrant box catalog, as one candidate version.

    Every target `invoke image` built into dist/<platform>/ (libvirt/amd64, and
    virtualbox/amd64 if built) becomes one provider x architecture entry of the version,
    each provider's default architecture (amd64) listed last, as Vagrant 2.3 (which ignores
    `architecture` and keeps a provider's last entry) needs.
    Writes <catalog>/<box>/<version>/<provider>/ and lists the version on the candidate
    channel (<catalog>/<box>/channels/candidate/metadata.json); `invoke release VERSION`
    then puts it in <catalog>/<box>/metadata.json, the URL teammates `vagrant box add`.
    With catalog.org the box is named <org>/<box> (a Vagrantfile's config.vm.box). With
    catalog.signing_key every metadata.json, manifest.json and plan.json it writes gets
    an SSH signature beside it (<file>.sig); without one nothing is signed."""
    from goldbox import catalog as boxes
    from goldbox.targets import PRIMARY_MANIFEST, built_manifests

    config = load_config(ROOT)
    dist = config.dist_dir / config.platform(platform).name
    manifests = [Path(manifest)] if manifest else built_manifests(dist)
    if not manifests:
        raise GoldboxError(f"{dist / PRIMARY_MANIFEST}: no such manifest (build the box with "
                           "`invoke image`, or pass --manifest PATH)")
    if release and config.project.catalog.require_verified:
        raise GoldboxError("publish --release: catalog.require_verified is set; publish, "
                           "run `invoke verify --from-catalog`, then `invoke release`")
    boxes.publish_builds(manifests, boxes.catalog_directory(catalog, config),
                  base_url=base_url or config.project.catalog.base_url,
                  description=config.project.box.description, force=force, release=release,
                  grace_hours=config.project.catalog.revoke_grace_hours,
                  org=config.project.catalog.org, signing_key=_signing_key(config))


def _signing_key(config):
    """catalog.signing_key as a path, or None (nothing is signed)."""
    key = config.project.catalog.signing_key
    return None if key is None else config.host_file(key)


@task(help={"catalog": "catalog directory or http(s) base URL (default: catalog.location)",
            "box": "only this box (an HTTP catalog cannot be listed: default box.name)",
            "token": TOKEN_HELP,
            "cacert": "CA certificate (PEM) for an https catalog this host does not trust"})
@reports_errors
def boxes(c, catalog=None, box=None, token=None, cacert=None):
    """List a catalog's versions: provider, size, date, platform and CPython version.

    A private HTTP catalog is read with a token under goldbox's one token rule: --token
    for --catalog's origin, else VAGRANT_CLOUD_TOKEN for VAGRANT_SERVER_URL's origin;
    never to another origin, over plain http only to a loopback address."""
    from goldbox.catalog import catalog_location, format_table, is_url, list_boxes
    from goldbox.catalog.client import catalog_client

    config = load_config(ROOT)
    location = catalog_location(catalog, config)
    client = catalog_client(location if is_url(location) else None, token=token,
                            cacert=Path(cacert) if cacert else None, token_option=True)
    print(format_table(list_boxes(location, box or (config.project.box.name
                                                    if is_url(location) else None), client)))


@task(help={"keep": "how many of the newest released versions to keep (at least 1)",
            "catalog": "catalog directory (default: catalog.location)",
            "box": "box name (default: box.name in goldbox.toml)"})
@reports_errors
def prune(c, keep=0, catalog=None, box=None):
    """Remove a box's older released versions from a catalog: entries now, files later.

    Keeps the --keep newest released versions and every candidate newer than them;
    older released versions and candidates older than the newest release leave every
    channel now, and their files go after catalog.revoke_grace_hours (downloads under
    way finish), as a revoked version's do. Also deletes the files of versions revoked
    or pruned longer ago than that and, where libvirt answers, the pool volumes of box
    versions no longer installed."""
    from goldbox.catalog import catalog_directory
    from goldbox.catalog import prune as prune_versions

    config = load_config(ROOT)
    prune_versions(catalog_directory(catalog, config), box or config.project.box.name, keep,
                   grace_hours=config.project.catalog.revoke_grace_hours,
                   signing_key=_signing_key(config))
    from goldbox.pool import purge

    purge()  # a catalog host may have no libvirt at all: then it says so


@task(help={"catalog": "catalog directory (default: catalog.location)",
            "port": "TCP port on 127.0.0.1 (default: catalog.serve_port; 0: any free port)",
            "cert": "TLS certificate chain (PEM): serve https (TLS 1.2+); with --render-only "
                    "its path on the serving host",
            "key": "the certificate's private key (PEM), as for --cert",
            "insecure-http": "allow plain http where tokens or boxes would cross a network: "
                             "--render-only without --cert (port 80), or a private catalog "
                             "whose catalog.base_url is http on another host",
            "render-only": "write the nginx site for another host's nginx into this folder "
                           "instead of serving (needs --cert/--key or --insecure-http)",
            "listen": "with --render-only: nginx's listen, PORT or ADDRESS:PORT (default: 443 "
                      "with --cert, else 80)",
            "server-name": "with --render-only: nginx's server_name (default: _)",
            "nginx-conf": "with --render-only: the nginx.conf of the nginx that includes the "
                          "site, for the reload command printed after a token change "
                          "(default: nginx's own)",
            "log-dir": "with --render-only: the folder of the site's access and error logs "
                       "on the serving host (default: /var/log/nginx)"})
@reports_errors
def catalog_serve(c, catalog=None, port=None, cert=None, key=None, insecure_http=False,
                  render_only=None, listen=None, server_name="_", nginx_conf=None,
                  log_dir="/var/log/nginx"):
    """Serve a catalog directory with nginx on 127.0.0.1, or render its nginx site.

    A private nginx (config, pid, logs under build/catalog-serve/) serves metadata.json
    as application/json and boxes with range requests, never dot files, links or
    unfinished uploads, and checks teammates' tokens when the catalog has any
    (catalog-token); https with --cert/--key. With catalog.org it also answers Vagrant's
    short names: /<org>/<box> is <box>/metadata.json, /<org>/<box>.sig its signature.
    Started as root, its workers run as www-data (else nobody), who must be able to read
    the catalog.
    --render-only DIR writes DIR/goldbox-catalog.conf (and, for a private catalog, the
    token map it includes) to include in any host's nginx, and records it in the catalog
    so `catalog-token` rewrites its token map."""
    from goldbox.catalog import catalog_directory
    from goldbox.catalog.serve import host_site, render_for_host, serve

    config = load_config(ROOT)
    directory = catalog_directory(catalog, config)
    base_url = config.project.catalog.base_url
    if render_only:
        site = host_site(Path(render_only), listen, server_name, cert, key, nginx_conf,
                         insecure_http, log_dir, config.project.catalog.org)
        written = render_for_host(directory, site, base_url)
        print(f"wrote {written}: include it in nginx's http {{}} block, then "
              f"`{site.reload_command()}`")
        return
    serve(directory, config.build_dir,
          config.project.catalog.serve_port if port is None else int(port),
          cert=None if cert is None else Path(cert), key=None if key is None else Path(key),
          base_url=base_url, insecure_http=insecure_http, org=config.project.catalog.org)


@task(help={"prune": "evict entries the current config does not use (by age and size)",
            "older-than": "with --prune: evict entries unused for more than this many days",
            "max-size": "with --prune: then evict the least recently used down to this "
                        "many GiB"})
@reports_errors
def cache(c, prune=False, older_than=None, max_size=None):
    """List the build cache: kind, size, age, last use, whether it was built here or
    pulled from the team cache (cache.remote), and what each entry was made from.

    Sweeps leftovers of interrupted runs first (as `invoke image` does).
    The cache (cache.dir in goldbox.toml, or GOLDBOX_CACHE) holds downloads, rootfs
    tarballs, CPython bundles, base disks and system images. With --prune, entries that
    the last `invoke image` of each platform here used, or that were used in the last
    hour, are kept; the rest go when older than --older-than days (default 30) or while
    the cache is larger than --max-size GiB."""
    from goldbox.cache import Cache
    from goldbox.cache_task import format_entries, prune_cache

    config = load_config(ROOT)
    for leftover in Cache(config.cache_dir).sweep():
        print(f"swept a leftover of an interrupted run: {leftover}")
    if prune:
        evicted = prune_cache(config, older_than_days=float(older_than or 30),
                              max_gib=float(max_size) if max_size is not None else None)
        print(f"evicted {len(evicted)} entries" + "".join(f"\n  {line}" for line in evicted))
    print(format_entries(config))


@task(help={"version": "a CPython release, e.g. 3.13.15, or a series, e.g. 3.13 (its newest "
                       "release a verified source serves)",
            "platform": "platform name (default: box.default_platform)"})
@reports_errors
def pin_python(c, version, platform=None):
    """Pin a platform's CPython to another release: find it, verify it, rewrite the file.

    The sha256 comes from python.org's published digest or, where python.org is not
    reachable, from the Debian archive's signed index (InRelease, checked with gpgv ->
    Sources.xz -> the orig tarball's Checksums-Sha256). The tarball is downloaded and
    checked into the cache, the app's requirements must resolve for the new Python, then
    platforms/<platform>.toml gets the new python.version, url and sha256 (comments kept)."""
    from goldbox.pin import pin_python as pin

    config = load_config(ROOT)
    chosen = config.platform(platform)
    pinned = pin(config, chosen, version)
    print(f"platforms/{chosen.name}.toml: CPython {pinned.release.version}, sha256 vouched "
          f"by {pinned.release.voucher}, served by {pinned.served_by} ({pinned.tarball})")
    for change in pinned.changes or ["nothing changed: already pinned"]:
        print(f"  {change}")


@task(help={"version": "the version to release",
            "catalog": "catalog directory (default: catalog.location)",
            "box": "box name (default: box.name)"})
@reports_errors
def release(c, version, catalog=None, box=None):
    """Release a published candidate: list it in <catalog>/<box>/metadata.json.

    With catalog.require_verified, the version's box must have passed
    `invoke verify --from-catalog` for its exact sha256. With catalog.signing_key the
    channels' metadata.json are signed again (<file>.sig)."""
    from goldbox.catalog import catalog_directory
    from goldbox.catalog import release as release_version

    config = load_config(ROOT)
    release_version(catalog_directory(catalog, config), box or config.project.box.name,
                    version, require_verified=config.project.catalog.require_verified,
                    signing_key=_signing_key(config))


@task(help={"version": "the version to revoke",
            "catalog": "catalog directory (default: catalog.location)",
            "box": "box name (default: box.name)",
            "now": "also delete its files at once, without a grace period (a leaked box)"})
@reports_errors
def revoke(c, version, catalog=None, box=None, now=False):
    """Revoke a version: hidden from every channel at once, files deleted later.

    Its files stay catalog.revoke_grace_hours (for downloads under way); the next
    publish, prune or revoke after that deletes them. With --now they go at once."""
    from goldbox.catalog import catalog_directory
    from goldbox.catalog import revoke as revoke_version

    config = load_config(ROOT)
    revoke_version(catalog_directory(catalog, config), box or config.project.box.name,
                   version, grace_hours=config.project.catalog.revoke_grace_hours,
                   delete_now=now, signing_key=_signing_key(config))


@task(help={"action": "add or revoke",
            "name": "the teammate the token is for",
            "catalog": "catalog directory (default: catalog.location)"})
@reports_errors
def catalog_token(c, action, name, catalog=None):
    """Add (prints the new token) or revoke a teammate's read token for a catalog.

    The first token makes the catalog private: nginx answers 401 without a valid one.
    A running `invoke catalog-serve` is reloaded; every site rendered with --render-only
    is rendered again (its token map) and the command that reloads its nginx printed."""
    from goldbox.catalog import catalog_directory
    from goldbox.catalog.serve import token_changed
    from goldbox.catalog.tokens import add_token, revoke_token

    config = load_config(ROOT)
    directory = catalog_directory(catalog, config)
    if action == "add":
        print(add_token(directory, name))
    elif action == "revoke":
        revoke_token(directory, name)
        print(f"revoked {name}'s token", file=sys.stderr)
    else:
        raise GoldboxError(f"catalog-token {action}: expected add or revoke")
    token_changed(directory, config.build_dir,
                  progress=lambda line: print(line, file=sys.stderr))


@task(help={"url": "the box's metadata on the server you leave: http(s):// or file:// (an "
                   "HCP box's, e.g. https://vagrantcloud.com/ORG/NAME, or any catalog's "
                   "metadata.json)",
            "catalog": "catalog directory (default: catalog.location)",
            "box": "the box's name in the catalog (default: the source's name without "
                   "its ORG/)",
            "base-url": "URL the catalog directory is served under, as for publish "
                        "(default: catalog.base_url, else file:// URLs)",
            "allow-unchecked": "also import files the source lists without a checksum "
                               "(listed with the sha256 of what was downloaded)"})
@reports_errors
def catalog_import(c, url, catalog=None, box=None, base_url=None, allow_unchecked=False):
    """Copy a box's versions from another Vagrant server (HCP, any metadata.json) in.

    Every version, provider and architecture the source lists; each file checked
    against its published checksum (md5, sha1, sha256, sha384, sha512) before it is
    listed, with its sha256. Versions keep their state (HCP's active: released,
    unreleased: candidate; revoked ones stay behind) and note where they came from. A
    cut-off download continues on the next run; a re-run copies only what is new.
    VAGRANT_CLOUD_TOKEN goes only to VAGRANT_SERVER_URL's origin (scheme, host, port),
    over plain http only to a loopback address (docs/catalog.md, "Tokens")."""
    from goldbox.catalog import catalog_directory
    from goldbox.catalog.importer import import_box

    config = load_config(ROOT)
    import_box(url, catalog_directory(catalog, config), box=box,
               base_url=base_url or config.project.catalog.base_url,
               allow_unchecked=allow_unchecked)


@task(help={"target": "the box: its metadata URL (http(s)://.../metadata.json), or a short "
                      "name ORG/BOX under $VAGRANT_SERVER_URL (as Vagrant resolves it)",
            "signers": "the OpenSSH allowed_signers file to trust (default: "
                       "catalog.allowed_signers, else ~/.config/goldbox/allowed_signers)",
            "cacert": "CA certificate (PEM) for an https catalog this host does not trust; "
                      "passed on to vagrant too",
            "provider": "the provider to add when a version has several (vagrant's "
                        "--provider)"})
@reports_errors
def add(c, target, signers=None, cacert=None, provider=None):
    """Add a box with stock Vagrant, only if a trusted maintainer signed its metadata.

    Fetches the metadata and its signature (<metadata URL>.sig; VAGRANT_CLOUD_TOKEN goes
    as a Bearer token to VAGRANT_SERVER_URL's origin only, over plain http only to a
    loopback address: docs/catalog.md, "Tokens"), verifies them against the
    allowed_signers file, then runs `vagrant box add` on the verified copy, so Vagrant
    checks the box against the signed sha256. Prints who signed it. Afterwards `vagrant
    box outdated` asks the catalog as usual; `invoke add` again adds an update verified."""
    from goldbox.catalog.add import DEFAULT_SIGNERS
    from goldbox.catalog.add import add as add_box

    config = load_config(ROOT)
    configured = config.project.catalog.allowed_signers
    trusted = (Path(signers) if signers else config.host_file(configured) if configured
               else DEFAULT_SIGNERS.expanduser())
    added = add_box(target, trusted, cacert=Path(cacert) if cacert else None,
                    provider=provider)
    print(f"added {added.name} {added.version} ({added.provider}) from {added.url}; its "
          f"metadata is signed by {added.principal}")


@task(help={"catalog": "catalog directory or http(s) base URL (default: catalog.location)",
            "box": "only this box (an HTTP catalog cannot be listed: default box.name)",
            "token": TOKEN_HELP,
            "signers": "an OpenSSH allowed_signers file: also verify the signature of every "
                       "channel's metadata.json, manifest.json and plan.json (one line per "
                       "file that fails)"})
@reports_errors
def catalog_check(c, catalog=None, box=None, token=None, signers=None):
    """Check a catalog as Vagrant will read it; one line per problem, non-zero if any.

    Semver versions in Vagrant's order, lowercase checksum types, every box's sha256
    (downloaded again over HTTP), one entry per (provider, architecture), box names,
    metadata.json served as application/json, no dangling files or entries; with
    --signers, each signed file's signature (<file>.sig) by a key the file lists."""
    from goldbox.catalog import catalog_location, is_url
    from goldbox.catalog.check import check_catalog

    config = load_config(ROOT)
    where = catalog_location(catalog, config)
    report = check_catalog(where, box or (config.project.box.name if is_url(where) else None),
                           token, None if signers is None else Path(signers))
    for problem in report.problems:
        print(problem)
    if report.problems:
        raise GoldboxError(f"catalog-check {where}: {len(report.problems)} problem(s)")
    print(f"catalog-check {where}: {report.checked_boxes} box(es), no problem")
