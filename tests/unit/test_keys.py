"""Cache identity keys (goldbox/cache.py) and the recipe policy's code hashes
(goldbox/recipe.py), computed directly: what changes a key and what does not."""

from __future__ import annotations

import shutil

import pytest

from goldbox.cache import identity_key
from goldbox.errors import GoldboxError
from goldbox.recipe import PROVISION, provision_code, step_names


def test_a_key_is_the_kind_and_the_identity_in_any_key_order():
    one = identity_key("bundle", {"python": "3.13.1", "tags": ["a", "b"]})
    assert one == identity_key("bundle", {"tags": ["a", "b"], "python": "3.13.1"})
    assert len(one) == 64 and int(one, 16) >= 0
    assert one != identity_key("basedisk", {"python": "3.13.1", "tags": ["a", "b"]})
    assert one != identity_key("bundle", {"python": "3.13.2", "tags": ["a", "b"]})
    assert one != identity_key("bundle", {"python": "3.13.1", "tags": ["b", "a"]})


@pytest.fixture
def provision(tmp_path):
    """A copy of provision/ to edit."""
    copy = tmp_path / "provision"
    shutil.copytree(PROVISION, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_a_step_entry_holds_its_steps_and_the_shared_code_only(provision):
    steps = step_names(provision)
    assert {"python", "cleanup"} <= set(steps)
    code = provision_code(["python"], provision)
    assert "steps/python.py" in code and "steps/common.py" in code
    assert "steps/cleanup.py" not in code
    assert set(provision_code(steps, provision)) >= {f"steps/{step}.py" for step in steps}


def test_editing_a_step_changes_only_the_entries_that_run_it(provision):
    python_before = provision_code(["python"], provision)
    cleanup_before = provision_code(["cleanup"], provision)
    step = provision / "steps" / "cleanup.py"
    step.write_text(step.read_text() + "\n# an edit\n")
    assert provision_code(["python"], provision) == python_before
    assert provision_code(["cleanup"], provision) != cleanup_before
    shared = provision / "steps" / "common.py"
    shared.write_text(shared.read_text() + "\n# an edit\n")
    assert provision_code(["python"], provision) != python_before


def test_an_unknown_step_is_one_line_naming_the_known_ones(provision):
    with pytest.raises(GoldboxError, match=r"provision step\(s\) pythn have no module in "
                                           r".*steps \(steps: .*python"):
        provision_code(["pythn"], provision)
