"""Rendering is deterministic and every rendered file passes its real validator."""

from __future__ import annotations

import filecmp
import json
import os
import re
import subprocess

import pytest

from goldbox.config import load_config
from goldbox.errors import GoldboxError
from goldbox.render import RenderOptions, packer_source_name, render_platform
from goldbox.validate import nginx_test, packer_validate, vagrant_validate

CONFIG = load_config()
PLATFORMS = sorted(CONFIG.platforms)


@pytest.fixture(scope="module", params=PLATFORMS)
def rendered(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    return render_platform(CONFIG, CONFIG.platforms[request.param], out)


def test_same_inputs_give_byte_identical_output(rendered, tmp_path):
    platform = json.loads(rendered.plan.read_text())["platform"]
    again = render_platform(CONFIG, CONFIG.platforms[platform], tmp_path)
    names = sorted(p.relative_to(rendered.directory) for p in rendered.files())
    assert names == sorted(p.relative_to(tmp_path) for p in again.files())
    match, mismatch, errors = filecmp.cmpfiles(rendered.directory, tmp_path,
                                               [str(n) for n in names], shallow=False)
    assert (mismatch, errors) == ([], [])


def test_packer_validate(rendered):
    platform = CONFIG.platforms[json.loads(rendered.plan.read_text())["platform"]]
    for builder in platform.builders:
        only = None if len(platform.builders) == 1 else _source_name(builder, platform.name)
        packer_validate(rendered.packer_template, only=only)  # raises on any error
    # The system image is made natively (goldbox/system_image.py): one packer build, the
    # golden one, which runs the whole plan and exports the box.
    assert sorted(path.name for path in rendered.directory.glob("*.pkr.hcl")) == [
        rendered.packer_template.name]
    text = rendered.packer_template.read_text()
    assert "--only" not in text and 'post-processor "vagrant"' in text


def test_packer_validate_catches_a_broken_template(tmp_path):
    rendered = render_platform(CONFIG, CONFIG.platform(None), tmp_path)
    text = rendered.packer_template.read_text()
    rendered.packer_template.write_text(text.replace('ssh_username         = "vagrant"', ""))
    with pytest.raises(GoldboxError, match="ssh_username"):
        packer_validate(rendered.packer_template)


def _source_name(builder: str, platform: str) -> str:
    label = packer_source_name(CONFIG.platforms[platform])
    return f"{'qemu' if builder == 'qemu' else 'virtualbox-iso'}.{label}"


def test_vagrant_validate(rendered):
    assert "validated successfully" in vagrant_validate(rendered.vagrantfile)


def test_a_bigger_vm_disk_is_asked_of_vagrant_libvirt(tmp_path):
    from goldbox.render import render_vagrantfile
    from goldbox.vm import with_disk

    platform = CONFIG.platform("debian-13")
    for name in ("default", "bigger"):
        (tmp_path / name).mkdir()
    assert "machine_virtual_size" not in render_vagrantfile(
        CONFIG, platform, tmp_path / "default").read_text()
    vagrantfile = render_vagrantfile(with_disk(CONFIG, platform, "8"), platform,
                                     tmp_path / "bigger")
    assert "libvirt.machine_virtual_size = 8\n" in vagrantfile.read_text()
    assert "validated successfully" in vagrant_validate(vagrantfile)


def test_nginx_accepts_the_site_config(rendered):
    assert "test is successful" in nginx_test(rendered.nginx_conf)


def test_plan_carries_the_rendered_configs(rendered):
    plan = json.loads(rendered.plan.read_text())
    assert plan["format"] == 1
    contents = [f["content"] for f in plan["uwsgi"]["files"] + plan["nginx"]["files"]]
    assert rendered.uwsgi_ini.read_text() in contents
    assert rendered.uwsgi_unit.read_text() in contents
    assert rendered.nginx_conf.read_text() in contents
    assert "module = WSGI:app" in rendered.uwsgi_ini.read_text()
    assert "uwsgi_pass goldbox_uwsgi;" in rendered.nginx_conf.read_text()


def test_required_plugins_block_only_for_packer_1_7_and_newer(tmp_path):
    platform = CONFIG.platform(None)
    old = render_platform(CONFIG, platform, tmp_path / "a", RenderOptions(packer_version=(1, 6, 6)))
    new = render_platform(CONFIG, platform, tmp_path / "b", RenderOptions(packer_version=(1, 9, 4)))
    assert "required_plugins" not in old.packer_template.read_text()
    text = new.packer_template.read_text()
    assert 'source  = "github.com/hashicorp/qemu"' in text
    assert 'source  = "github.com/hashicorp/vagrant"' in text


def test_render_task_writes_build_folder(project_copy):
    from tests.conftest import run_invoke

    result = run_invoke(project_copy, "render")
    assert result.returncode == 0, result.stderr
    written = {line.strip() for line in result.stdout.splitlines()}
    default = load_config(project_copy).project.box.default_platform
    assert f"build/{default}/plan.json" in written
    assert (project_copy / f"build/{default}/{default}.pkr.hcl").is_file()


# Values that would run code if a template put them raw into a quoted string: Ruby
# interpolates #{...} in "..."; HCL interpolates ${...} and %{...}; a newline ends a comment.
def _payloads(marker) -> list[str]:
    return [f'x"; File.write("{marker}", "ruby ran"); "',
            f"#{{File.write('{marker}', 'ruby ran')}}",
            f"x'; File.write('{marker}', 'ruby ran'); '",
            "back\\slash \\' and \\\\' and a\nnewline",
            '${file("/etc/passwd")} %{ if true }x%{ endif } $${a} a$',
            'é \u2028 \x01 "quoted"']


def _hostile_box(config, name):
    """`config` with box.name set without validation: what the filter alone must make
    inert (the config and catalog models refuse such a name before any render)."""
    box = config.project.box.model_copy(update={"name": name})
    return config.model_copy(update={"project": config.project.model_copy(update={"box": box})})


@pytest.mark.parametrize("index", range(6))
def test_the_ruby_filter_gives_the_exact_string_and_runs_nothing(index, tmp_path):
    from goldbox.render import render_vagrantfile

    marker = tmp_path / "ran"
    value = _payloads(marker)[index]
    vagrantfile = render_vagrantfile(_hostile_box(CONFIG, value), CONFIG.platform("debian-12"),
                                     tmp_path)
    literal = re.search(r"^  config\.vm\.box = (.*?)\n  config\.vm\.box_version",
                        vagrantfile.read_text(), re.S | re.M).group(1)
    printed = subprocess.run(["ruby", "-e", f"STDOUT.write({literal})"], capture_output=True,
                             check=True).stdout
    assert printed == value.encode()
    # Vagrant itself evaluates the whole file: the payload stays a box name.
    subprocess.run(["vagrant", "validate"], cwd=tmp_path, capture_output=True, timeout=300,
                   env={**os.environ, "VAGRANT_HOME": str(tmp_path / "home")}, check=False)
    assert not marker.exists()


def test_the_hcl_filter_gives_packer_the_exact_string(tmp_path):
    """packer's own HCL parser reads each value back as it was (`packer console`)."""
    from goldbox.render import hcl_string

    values = _payloads(tmp_path / "ran")
    template = tmp_path / "t.pkr.hcl"
    template.write_text("".join(
        f'variable "v{index}" {{\n  type = string\n  default = {hcl_string(value)}\n}}\n'
        for index, value in enumerate(values)))
    for index, value in enumerate(values):
        shown = subprocess.run(["packer", "console", template.name], cwd=tmp_path, text=True,
                               input=f"jsonencode(var.v{index})\n", capture_output=True,
                               check=True).stdout
        assert json.loads(shown) == value


def test_a_platform_description_cannot_leave_its_packer_comment(tmp_path):
    """The description lands in the template's comment: a newline in it would start
    HCL of its own (here a variable with no type, which packer refuses)."""
    platform = CONFIG.platform("debian-12")
    hostile = platform.model_copy(update={"description": 'x\nvariable "evil" {\n  nope = 1\n}'})
    config = CONFIG.model_copy(update={"platforms": {**CONFIG.platforms, "debian-12": hostile}})
    rendered = render_platform(config, hostile, tmp_path)
    assert '\nvariable "evil"' not in rendered.packer_template.read_text()
    packer_validate(rendered.packer_template)


def test_a_trial_vm_gets_a_libvirt_domain_name_of_its_own(tmp_path):
    """`verify --from-catalog`'s VM: vagrant-libvirt names it from default_prefix, not
    from the folder (which `invoke up` names its VM from)."""
    from goldbox.render import render_vagrantfile

    vagrantfile = render_vagrantfile(CONFIG, CONFIG.platform("debian-12"), tmp_path,
                                     RenderOptions(domain_prefix="goldbox-trial-0.1.0-"))
    assert "    libvirt.default_prefix = 'goldbox-trial-0.1.0-'\n" in vagrantfile.read_text()
    assert "validated successfully" in vagrant_validate(vagrantfile)


@pytest.mark.parametrize(("platform", "guest"), [("debian-13", "debian"), ("centos-6.4", "redhat")])
def test_vagrant_is_told_the_guest_os_instead_of_probing_for_it(platform, guest, tmp_path):
    """Unsaid, Vagrant finds the guest's OS by running its guest plugins' tests one by one
    over SSH before it swaps the insecure key (each a login shell, slow under TCG)."""
    from goldbox.render import render_vagrantfile

    vagrantfile = render_vagrantfile(CONFIG, CONFIG.platform(platform), tmp_path)
    assert f"  config.vm.guest = '{guest}'\n" in vagrantfile.read_text()
    assert "validated successfully" in vagrant_validate(vagrantfile)


def test_a_vm_given_its_own_key_logs_in_with_it_and_carries_it_as_a_credential(tmp_path):
    """`invoke up`'s VM of a box that takes goldbox's key: Vagrant logs in with the VM's
    own key and swaps nothing; the domain carries the public key in an SMBIOS OEM string,
    which systemd in the guest reads as the credential goldbox.ssh_key."""
    from goldbox.render import render_vagrantfile
    from goldbox.vm import vm_key

    key = vm_key(tmp_path, fresh=True)
    assert key is not None
    vagrantfile = render_vagrantfile(CONFIG, CONFIG.platform("debian-13"), tmp_path,
                                     RenderOptions(ssh_key=key)).read_text()
    assert f"  config.ssh.private_key_path = '{key.private}'\n" in vagrantfile
    assert "  config.ssh.insert_key = false\n" in vagrantfile
    assert ("    libvirt.sysinfo = {\"oem strings\" => "
            f"['io.systemd.credential:goldbox.ssh_key={key.public}']}}\n") in vagrantfile
    assert "validated successfully" in vagrant_validate(tmp_path / "Vagrantfile")
    # Without a key (a box whose guest does not take it): Vagrant's own swap, as before.
    plain = render_vagrantfile(CONFIG, CONFIG.platform("debian-13"), tmp_path / "plain")
    assert "private_key_path" not in plain.read_text() and "sysinfo" not in plain.read_text()
