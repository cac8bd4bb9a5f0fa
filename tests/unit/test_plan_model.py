"""plan.json against its typed model (goldbox/plan_model.py): every platform's rendered
plan fits it, and the host's one reader turns a broken plan into one line."""

from __future__ import annotations

import json

import pytest

from goldbox.config import load_config
from goldbox.errors import GoldboxError
from goldbox.plan_model import read_plan
from goldbox.render import render_platform

CONFIG = load_config()


@pytest.mark.parametrize("name", sorted(CONFIG.platforms))
def test_every_rendered_plan_fits_the_model(name, tmp_path):
    rendered = render_platform(CONFIG, CONFIG.platform(name), tmp_path)
    plan = read_plan(rendered.plan)
    assert plan.platform == name
    assert plan.model_dump(exclude_unset=True) == json.loads(rendered.plan.read_text())


def test_a_broken_plan_is_one_line_naming_the_key(tmp_path):
    rendered = render_platform(CONFIG, CONFIG.platform("debian-12"), tmp_path)
    data = json.loads(rendered.plan.read_text())
    data["uwsgi"]["socket"]["kind"] = "carrier-pigeon"
    rendered.plan.write_text(json.dumps(data))
    with pytest.raises(GoldboxError) as caught:
        read_plan(rendered.plan)
    assert str(caught.value).startswith(
        f"{rendered.plan}: uwsgi.socket.kind = 'carrier-pigeon': expected ")
    rendered.plan.write_text("{")
    with pytest.raises(GoldboxError, match="not valid JSON"):
        read_plan(rendered.plan)
