"""Load goldbox.toml and platforms/<name>.toml once into typed, validated objects.

Every bad input stops here, before anything runs, with one line naming the file,
the key, the bad value and what is allowed.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from goldbox import PROJECT_ROOT
from goldbox.errors import GoldboxError
from goldbox.targets import DEFAULT_TARGETS, TARGET, TARGET_EXPECTED
from goldbox.validation import validated

# Allow-lists. Each is anchored with ^...\Z, so `.match` and `.fullmatch` agree (Python's
# `$` also matches before a final newline), and spells digits [0-9] (`\d` takes every
# script's digits).
SEMVER = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\Z")
SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*\Z")
# An organisation (catalog.org): no '.', since nginx gets it inside a regular expression.
ORG = re.compile(r"^[a-z0-9][a-z0-9_-]*\Z")
UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
# Guest paths, URLs and names are rendered into nginx's config, the systemd unit, the init
# script, packer's HCL and inline shell, yum's repo files: their characters are ones that
# end no word, string, directive or command in any of these.
_PATH_COMPONENT = r"[A-Za-z0-9._-]+"
GUEST_PATH = re.compile(rf"^(/{_PATH_COMPONENT})+\Z")
RELATIVE_PATH = re.compile(rf"^{_PATH_COMPONENT}(/{_PATH_COMPONENT})*\Z")
HOST_PATH = re.compile(rf"^/?{_PATH_COMPONENT}(/{_PATH_COMPONENT})*/?\Z")
_URL_PATH_CHARACTERS = r"A-Za-z0-9._~%+,=:@/"
_URL = (r"^(?P<scheme>[a-z]+)://(?P<host>[A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])(:[0-9]{{1,5}})?"
        r"(/[{path}-]*)?\Z")
URL = re.compile(_URL.format(path=_URL_PATH_CHARACTERS))
# yum expands $basearch, $releasever in its repo files' URLs (no shell sees them).
YUM_URL = re.compile(_URL.format(path=_URL_PATH_CHARACTERS + "$"))
# cache.remote: oci://HOST[:PORT]/REPOSITORY, the repository in the OCI distribution
# spec's grammar (lowercase components joined by '.', '_', '__' or dashes).
_OCI_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
OCI_REMOTE = re.compile(r"^oci://(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
                        r"(?::(?P<port>[0-9]{1,5}))?"
                        rf"/(?P<repository>{_OCI_COMPONENT}(?:/{_OCI_COMPONENT})*)\Z")
# apt's and yum's package names; never an option (a leading '-').
PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\Z")
PACKAGE_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+-]*\Z")  # "Development tools"
RELEASE = re.compile(r"^[0-9]+(\.[0-9]+)*\Z")
IDENTIFIER = re.compile(r"^[a-z0-9_]+\Z")  # wheel platform tags, SELinux booleans
# `./configure` options (--name or --name=value) and VAR=value settings.
CONFIGURE_FLAG = re.compile(r"^(--[a-z0-9][a-z0-9-]*(=[A-Za-z0-9._/,:+=@-]*)?"
                            r"|[A-Z][A-Z0-9_]*=[A-Za-z0-9._/,:+=@ -]*)\Z")
# A sources.list line: deb or deb-src, an optional [arch=... signed-by=...], URL, suite,
# components.
_APT_OPTION = r"(arch|signed-by)=[A-Za-z0-9._/,-]+"
APT_SOURCE = re.compile(rf"^deb(-src)? +(\[{_APT_OPTION}( +{_APT_OPTION})*\] +)?(?P<url>\S+)"
                        r" +[a-z0-9][a-z0-9._/-]*( +[a-z0-9-]+)+ *\Z")
# HCL's string templates: packer would evaluate them.
HCL_TEMPLATE = re.compile(r"[$%]\{")


def _matching(pattern: re.Pattern, expected: str):
    """A validator: the whole value matches `pattern`, else ValueError(expected)."""
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"expected {expected}")
        return value
    return check


_semver = _matching(SEMVER, "a semantic version MAJOR.MINOR.PATCH, e.g. 1.2.0")
_sha256 = _matching(SHA256, "a sha256: 64 lowercase hex characters")
_name = _matching(NAME, "lowercase letters, digits, '.', '_' or '-'")
_unix_name = _matching(UNIX_NAME,
                       "a Unix user name: [a-z_][a-z0-9_-]*, at most 32 characters")
_package = _matching(PACKAGE, "a package name: letters, digits, '.', '_', '+' or '-', "
                              "starting with a letter or digit")
_package_group = _matching(PACKAGE_GROUP, "a package group name: letters, digits, spaces, "
                                          "'.', '_', '+' or '-', starting with a letter or digit")
_release = _matching(RELEASE, "a release number: digits and dots, e.g. 12 or 6.4")
_identifier = _matching(IDENTIFIER, "lowercase letters, digits or '_'")
_configure_flag = _matching(
    CONFIGURE_FLAG, "a ./configure option --name or --name=value, or VAR=value (values of "
                    "letters, digits and . _ / , : + = @ -)")


def _checksum(value: str) -> str:
    algorithm, _, digest = value.partition(":")
    lengths = {"sha256": 64, "sha1": 40, "md5": 32}
    if algorithm not in lengths or not re.fullmatch(f"[0-9a-f]{{{lengths.get(algorithm)}}}",
                                                      digest):
        raise ValueError("expected sha256:<64 hex>, or the release's published "
                         "sha1:<40 hex> or md5:<32 hex>")
    return value


def _one_line(value: str) -> str:
    """Free text (descriptions, a yum repo's name) lands in comments of packer's HCL and
    the kickstart, and in key=value lines of a repo file: one line of printable
    characters ends none of them."""
    if not value.isprintable():
        raise ValueError("expected one line of printable text (no newlines or control "
                         "characters)")
    return value


def _path(pattern: re.Pattern, kind: str):
    """A validator of paths whose components match `pattern`; no '.' or '..' component
    (a guest path names one place, and a relative one stays below its folder)."""
    def check(value: str) -> str:
        if not pattern.fullmatch(value) or {".", ".."} & set(value.split("/")):
            raise ValueError(f"expected {kind}: '/'-separated components of letters, "
                             "digits, '.', '_' or '-' (no '.' or '..' component, no '//')")
        return value
    return check


_guest_path = _path(GUEST_PATH, "an absolute path in the guest")
_relative_path = _path(RELATIVE_PATH, "a relative path")


def _is_url(value: str, schemes: tuple[str, ...], pattern: re.Pattern = URL) -> bool:
    """`value` is a URL with one of `schemes` (a host unless file://) and characters that
    end no word or string in shell, HCL, nginx or a repo file."""
    match = pattern.fullmatch(value)
    return bool(match and match.group("scheme") in schemes
                and (match.group("host") or match.group("scheme") == "file"))


def _url_of(schemes: tuple[str, ...], pattern: re.Pattern = URL, extra: str = ""):
    """A validator: `value` is a URL (see _is_url), else ValueError naming what is allowed."""
    names = ", ".join(f"{scheme}://" for scheme in schemes[:-1]) + f" or {schemes[-1]}://"

    def check(value: str) -> str:
        if not _is_url(value, schemes, pattern):
            raise ValueError(f"expected an {names} URL of letters, digits and . _ ~ % + , = : "
                             f"@ / -{extra} (no whitespace, quotes, backslashes or shell "
                             "characters)")
        return value
    return check


_url = _url_of(("http", "https", "ftp", "file"))
_http_url = _url_of(("http", "https"))
_yum_url = _url_of(("http", "https", "ftp", "file"), YUM_URL, " $")


def _optional(check):
    """`check`, but the empty string (unset) passes."""
    return lambda value: value and check(value)


def _catalog_location(value: str) -> str:
    """A directory (relative to the project) or an http(s) URL; the directory's path is
    rendered into `catalog-serve`'s nginx site."""
    if "://" in value:
        return _http_url(value)
    if not HOST_PATH.fullmatch(value):
        raise ValueError("expected a directory of '/'-separated components of letters, "
                         "digits, '.', '_' or '-', or an http(s):// URL")
    return value


def _boot_command(value: str) -> str:
    """Keystrokes for the installer, rendered into an HCL string: no HCL template."""
    _one_line(value)
    if HCL_TEMPLATE.search(value):
        raise ValueError("expected no '${' or '%{' (packer would evaluate it as HCL)")
    return value


def _apt_sources(value: str) -> str:
    """sources.list: each line deb or deb-src, a URL, a suite and components."""
    for line in value.split("\n"):
        match = APT_SOURCE.fullmatch(line)
        if line and not (match and _is_url(match.group("url"), ("http", "https"))):
            raise ValueError(f"line {line!r}: expected 'deb[-src] [arch=... signed-by=...] "
                             "URL SUITE COMPONENT...' with an http(s):// URL")
    return value


SemVer = Annotated[str, AfterValidator(_semver)]
Sha256 = Annotated[str, AfterValidator(_sha256)]
Checksum = Annotated[str, AfterValidator(_checksum)]
Name = Annotated[str, AfterValidator(_name)]
Org = Annotated[str, AfterValidator(_matching(ORG, "an organisation: lowercase letters, "
                                                   "digits, '_' or '-'"))]
UnixName = Annotated[str, AfterValidator(_unix_name)]
GuestPath = Annotated[str, AfterValidator(_guest_path)]
RelativePath = Annotated[str, AfterValidator(_relative_path)]
Url = Annotated[str, AfterValidator(_url)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
YumUrl = Annotated[str, AfterValidator(_yum_url)]
Text = Annotated[str, AfterValidator(_one_line)]
Package = Annotated[str, AfterValidator(_package)]
Identifier = Annotated[str, AfterValidator(_identifier)]
Port = Annotated[int, Field(ge=1, le=65535)]
OciRemote = Annotated[str, AfterValidator(_matching(
    OCI_REMOTE, "oci://HOST[:PORT]/REPOSITORY (lowercase repository components)"))]
# A key or allowed_signers file on this host, maybe in the home folder (~/.ssh/...).
KeyPath = Annotated[str, AfterValidator(_matching(
    re.compile(rf"^(~/)?{HOST_PATH.pattern.removeprefix('^')}"),
    "a file path of '/'-separated components of letters, digits, '.', '_' or '-', "
    "optionally starting with ~/"))]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# ---- goldbox.toml -------------------------------------------------------------------


class BoxSection(Strict):
    name: Name
    version: SemVer
    description: Text
    default_platform: Name
    # The boxes `invoke image` builds, each <provider>/<arch> (goldbox/targets.py);
    # `invoke image --target` overrides it.
    targets: Annotated[list[Annotated[str, AfterValidator(_matching(TARGET, TARGET_EXPECTED))]],
                       Field(min_length=1)] = DEFAULT_TARGETS


class AppSection(Strict):
    path: RelativePath = "app"
    user: UnixName = "goldbox"
    root: GuestPath = "/srv/goldbox/MyApplication"
    uwsgi_processes: Annotated[int, Field(ge=1, le=64)] = 2


UwsgiSocket = Literal["unix", "tcp"]


class PortsSection(Strict):
    # "unix": uWSGI listens on /run/goldbox-uwsgi/uwsgi.sock (0660, nginx's group) and on
    # no TCP port; "tcp": the tutorial's 127.0.0.1:<uwsgi>, which any local user can reach.
    uwsgi_socket: UwsgiSocket = "unix"
    uwsgi: Port = 8080
    guest_http: Port = 80
    host_http: Port = 8088


class CatalogSection(Strict):
    location: Annotated[str, AfterValidator(_catalog_location)] = "dist/catalog"
    # Where the published directory is served; metadata.json's box URLs start with it.
    # Unset: file:// URLs of the directory. `invoke publish --base-url` overrides it.
    base_url: HttpUrl | None = None
    # A revoked version is hidden at once; its files stay this long for clients
    # mid-download, then the next publish, prune or revoke deletes them.
    revoke_grace_hours: Annotated[float, Field(ge=0)] = 24
    # `invoke release` refuses a version that `invoke verify --from-catalog` has not
    # passed for the sha256 it would release.
    require_verified: bool = False
    # 127.0.0.1 port of `invoke catalog-serve`.
    serve_port: Port = 8099
    # The box's organisation: publish names it `<org>/<box.name>` (what Vagrantfiles say
    # in `config.vm.box`), served at `/<org>/<box>` for VAGRANT_SERVER_URL short names.
    org: Org | None = None
    # publish/release/revoke/prune sign what they write with this key (a private key, or
    # the .pub of a key in ssh-agent); unset: nothing is signed. Relative to the project.
    signing_key: KeyPath | None = None
    # The OpenSSH allowed_signers file `invoke add` trusts (default:
    # ~/.config/goldbox/allowed_signers). Relative to the project.
    allowed_signers: KeyPath | None = None


class CacheSection(Strict):
    dir: str = "~/.cache/goldbox"
    # The team's cache on an OCI registry (docs/team-cache.md): an entry missing here is
    # pulled from it when a key in allowed_signers signed it. Unset: this machine only.
    remote: OciRemote | None = None
    # Push each entry this machine builds to `remote`, signed with signing_key (CI runners).
    push: bool = False
    # Unset: catalog.signing_key and catalog.allowed_signers (else
    # ~/.config/goldbox/allowed_signers), under the namespace goldbox-cache@goldbox.
    signing_key: KeyPath | None = None
    allowed_signers: KeyPath | None = None
    # The CA certificate(s) the registry's TLS certificate is checked against (a private
    # CA); unset: the system's. Relative to the project.
    cacert: KeyPath | None = None

    @model_validator(mode="after")
    def _push_needs_remote(self) -> CacheSection:
        if self.push and self.remote is None:
            raise ValueError("cache.push = true needs cache.remote (oci://HOST/REPOSITORY)")
        return self


# The disk of a debootstrap platform's box (its base disk), in GiB.
BOX_DISK_GIB = 4


class VmSection(Strict):
    memory: Annotated[int, Field(ge=256, le=65536)] = 1024
    cpus: Annotated[int, Field(ge=1, le=64)] = 2
    # The VM's disk (vagrant-libvirt's machine_virtual_size); the root filesystem grows
    # to it at boot. None: the box's own size.
    disk_gib: Annotated[int, Field(ge=1, le=4096)] | None = None


class ProjectConfig(Strict):
    box: BoxSection
    app: AppSection = AppSection()
    ports: PortsSection = PortsSection()
    catalog: CatalogSection = CatalogSection()
    cache: CacheSection = CacheSection()
    vm: VmSection = VmSection()


# ---- platforms/<name>.toml ----------------------------------------------------------


class DebootstrapSource(Strict):
    """The base disk is built from the distribution's mirror (no ISO needed)."""

    kind: Literal["debootstrap"]
    suite: Name
    mirror: Url
    kernel_package: Package = "linux-image-cloud-amd64"


class IsoSource(Strict):
    """The base is installed by Packer from an ISO with an answer file."""

    kind: Literal["iso"]
    url: Url
    checksum: Checksum  # "sha256:...", or what the release published (packer checks it)
    answer_file: RelativePath  # template path relative to the repository
    boot_command: list[Annotated[str, AfterValidator(_boot_command)]]
    disk_size_mb: Annotated[int, Field(ge=2048)] = 10240


class PythonSection(Strict):
    version: SemVer
    url: Url
    sha256: Sha256
    # More places serving the same tarball, tried after python.org and the Debian archive
    # (goldbox.sources); whatever serves it must match sha256.
    mirrors: list[Url] = []
    configure_flags: list[Annotated[str, AfterValidator(_configure_flag)]] = [
        "--prefix=/usr/local"]
    requirements: RelativePath  # relative to the app folder, pinned with hashes
    # Tools for the system Python (pip, setuptools, virtualenv) where it has no ensurepip.
    tools_requirements: RelativePath | None = None
    venv: Literal["venv", "virtualenv"] = "venv"
    # Platform tags `pip download` fetches wheels for (the guest's libc and arch).
    wheel_platforms: list[Identifier] = ["manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    # A pip wheel (stage-relative) to bootstrap pip with, for a Python without ensurepip.
    pip_bootstrap: RelativePath | None = None
    # Build CPython natively in a chroot of the release and ship the installed tree.
    native_bundle: bool = False


class PackagesSection(Strict):
    groups: list[Annotated[str, AfterValidator(_package_group)]] = []
    build: list[Package]
    runtime: list[Package]


class YumRepo(Strict):
    id: Name
    name: Text
    baseurl: YumUrl
    gpgcheck: bool = True
    gpgkey: Annotated[str, AfterValidator(_optional(_yum_url))] = ""


class RepositoriesSection(Strict):
    apt_sources: Annotated[str, AfterValidator(_apt_sources)] | None = None
    yum_repos: list[YumRepo] = []
    disable_repo_files: list[GuestPath] = []


class NginxSection(Strict):
    user: UnixName
    conf_path: GuestPath
    remove: list[GuestPath] = []


class FirewallSection(Strict):
    kind: Literal["none", "iptables"] = "none"


class SelinuxSection(Strict):
    booleans: dict[Identifier, bool] = {}


class Platform(Strict):
    name: Name
    description: Text
    family: Literal["debian", "el"]
    release: Annotated[str, AfterValidator(_release)]
    arch: Literal["amd64"] = "amd64"
    package_manager: Literal["apt", "yum"]
    service_manager: Literal["systemd", "sysv"]
    guest_python: GuestPath
    builders: list[Literal["qemu", "virtualbox"]] = ["qemu"]
    # Set: this platform serves uWSGI on this kind of socket, whatever ports.uwsgi_socket says.
    uwsgi_socket: UwsgiSocket | None = None
    status: Text
    source: Annotated[DebootstrapSource | IsoSource, Field(discriminator="kind")]
    python: PythonSection
    packages: PackagesSection
    repositories: RepositoriesSection = RepositoriesSection()
    nginx: NginxSection
    firewall: FirewallSection = FirewallSection()
    selinux: SelinuxSection = SelinuxSection()


def uwsgi_socket_of(project: ProjectConfig, platform: Platform) -> str:
    """The platform's own `uwsgi_socket` if it sets one, else `ports.uwsgi_socket`."""
    return platform.uwsgi_socket or project.ports.uwsgi_socket


class Config(BaseModel):
    """The whole validated input: the project and every platform it knows."""

    model_config = ConfigDict(frozen=True)

    root: Path
    project: ProjectConfig
    platforms: dict[str, Platform]

    def platform(self, name: str | None) -> Platform:
        name = name or self.project.box.default_platform
        if name not in self.platforms:
            raise GoldboxError(
                f"--platform {name!r}: unknown platform "
                f"(known: {', '.join(sorted(self.platforms))})"
            )
        return self.platforms[name]

    def uwsgi_socket(self, platform: Platform) -> str:
        """The socket uWSGI listens on for `platform`: "unix" or "tcp"."""
        return uwsgi_socket_of(self.project, platform)

    @property
    def app_dir(self) -> Path:
        return self.root / self.project.app.path

    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    @property
    def dist_dir(self) -> Path:
        return self.root / "dist"

    def host_file(self, value: str) -> Path:
        """A file named in goldbox.toml: `~/` is the home folder, a relative path is
        relative to the project."""
        return self.root / Path(value).expanduser()

    @property
    def cache_dir(self) -> Path:
        return Path(os.environ.get("GOLDBOX_CACHE") or self.project.cache.dir).expanduser()


# ---- loading --------------------------------------------------------------------------


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise GoldboxError(f"{label}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise GoldboxError(f"{label}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise GoldboxError(f"{label}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                           f"offset {exc.start}); TOML files must be UTF-8") from None
    except OSError as exc:
        raise GoldboxError(f"{label}: cannot read it: {exc.strerror}") from None


def load_platform(path: Path, root: Path) -> Platform:
    label = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    data = _read_toml(path, label)
    if "name" in data:
        raise GoldboxError(f"{label}: unknown key 'name' (the platform's name is its file name)")
    platform = validated(Platform, {"name": path.stem, **data}, label)
    if isinstance(platform.source, IsoSource):
        _require_file(root / platform.source.answer_file, label, "source.answer_file")
    return platform


def _require_file(path: Path, label: str, key: str) -> None:
    if not path.is_file():
        raise GoldboxError(f"{label}: {key} = {str(path)!r}: file not found")


def load_config(root: Path = PROJECT_ROOT, config_file: str = "goldbox.toml") -> Config:
    """Read goldbox.toml and every platforms/*.toml below `root`, or stop with one line."""
    project = validated(ProjectConfig, _read_toml(root / config_file, config_file), config_file)
    files = sorted((root / "platforms").glob("*.toml"))
    platforms = {path.stem: load_platform(path, root) for path in files}
    if project.box.default_platform not in platforms:
        raise GoldboxError(
            f"{config_file}: box.default_platform = {project.box.default_platform!r}: unknown "
            f"platform (known: {', '.join(sorted(platforms)) or 'none in platforms/'})"
        )
    app_dir = root / project.app.path
    if not (app_dir / "WSGI.py").is_file():
        raise GoldboxError(f"{config_file}: app.path = {project.app.path!r}: no WSGI.py in it")
    for platform in platforms.values():
        label = f"platforms/{platform.name}.toml"
        _require_file(app_dir / platform.python.requirements, label, "python.requirements")
        if platform.python.tools_requirements:
            _require_file(app_dir / platform.python.tools_requirements, label,
                          "python.tools_requirements")
    check_inputs(project, platforms, config_file)
    return Config(root=root, project=project, platforms=platforms)


# ---- settings that contradict each other ----------------------------------------------

SSH_PORT = 22  # the guest's sshd: packer and vagrant reach the guest through it
# What builds a box from each source: the debootstrap base disk is a qcow2 image, which
# only packer's qemu builder boots.
BUILDERS_OF_SOURCE = {"debootstrap": {"qemu"}, "iso": {"qemu", "virtualbox"}}


def check_disk(disk_gib: int | None, platform: Platform, key: str) -> None:
    """A VM's disk cannot be smaller than its box's: vagrant-libvirt only grows it."""
    if disk_gib is None:
        return
    box_gib = (BOX_DISK_GIB if platform.source.kind == "debootstrap"
               else -(-platform.source.disk_size_mb // 1024))
    if disk_gib < box_gib:
        raise GoldboxError(f"{key} = {disk_gib} and platforms/{platform.name}.toml: its box's "
                           f"disk is {box_gib} GiB, and a VM's disk can only be as large or "
                           "larger")


def check_inputs(project: ProjectConfig, platforms: dict[str, Platform],
                 config_file: str = "goldbox.toml") -> None:
    """Every rule that spans two settings, in one place: each valid alone, they
    contradict each other. Stops at the first with one line naming both keys."""
    ports = project.ports
    guest_ports = {"ports.guest_http": ports.guest_http}
    tcp = [name for name, p in platforms.items() if uwsgi_socket_of(project, p) == "tcp"]
    if tcp:
        guest_ports["ports.uwsgi"] = ports.uwsgi
        if ports.uwsgi == ports.guest_http:
            raise GoldboxError(
                f"{config_file}: ports.uwsgi = {ports.uwsgi} and ports.guest_http = "
                f"{ports.guest_http}: uWSGI (on TCP for {', '.join(sorted(tcp))}) and nginx "
                "cannot listen on the same port in the guest")
    for key, port in guest_ports.items():
        if port == SSH_PORT:
            raise GoldboxError(f"{config_file}: {key} = {port}: the guest's sshd listens there "
                               "(packer and vagrant reach the guest through it)")
    for platform in platforms.values():
        label = f"platforms/{platform.name}.toml"
        kind = platform.source.kind
        check_disk(project.vm.disk_gib, platform, f"{config_file}: vm.disk_gib")
        if platform.python.native_bundle and kind != "debootstrap":
            raise GoldboxError(
                f"{label}: python.native_bundle = true and source.kind = {kind!r}: the native "
                "build runs in a debootstrap chroot of the release; set native_bundle = false")
        unusable = [b for b in platform.builders if b not in BUILDERS_OF_SOURCE[kind]]
        if unusable:
            raise GoldboxError(
                f"{label}: builders = {list(platform.builders)} and source.kind = {kind!r}: "
                f"{unusable[0]} cannot build from a {kind} source (usable: "
                f"{', '.join(sorted(BUILDERS_OF_SOURCE[kind]))})")
        if platform.service_manager == "sysv" and uwsgi_socket_of(project, platform) == "unix":
            raise GoldboxError(
                f"{label}: service_manager = 'sysv' and {config_file} ports.uwsgi_socket = "
                "'unix': goldbox serves uWSGI on TCP under SysV init; set uwsgi_socket = "
                f"'tcp' in {label}")
