"""Rendering is deterministic and every rendered file passes its real validator."""

from __future__ import annotations

import filecmp
import json

import pytest

from goldbox.config import DebootstrapSource, load_config
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
    if isinstance(platform.source, DebootstrapSource):
        # The cached system image's build: provision's system steps only, no box.
        text = rendered.system_template.read_text()
        assert "--only repositories --only packages --only python" in text
        assert 'post-processor "vagrant"' not in text
        packer_validate(rendered.system_template)
    else:
        assert rendered.system_template is None


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
