"""Code a scenario names (package.module:Name): checked from its source before any import."""

from __future__ import annotations

import sys
import textwrap

import pytest

from hierfl.errors import ScenarioError
from hierfl.plugins import check_reference, find_module, load_object


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package ``userpkg`` on sys.path whose every module records that it was imported."""
    root = tmp_path / "userpkg"
    root.mkdir()
    (root / "__init__.py").write_text("import builtins\nbuiltins.IMPORTED = ['userpkg']\n")
    (root / "things.py").write_text(
        textwrap.dedent(
            """
            import builtins
            builtins.IMPORTED.append("things")
            import torch.nn as nn

            s = "a string, not a function"
            LIMIT = 3 * 4

            def good(candidates, battery, fraction, rng):
                return list(candidates)

            def one_arg(candidates):
                return list(candidates)

            def extra_required(candidates, battery, fraction, rng, more):
                return list(candidates)

            def flexible(*args, **kwargs):
                return list(args[0])

            class Model(nn.Module):
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    for name in [m for m in sys.modules if m.startswith("userpkg")]:
        del sys.modules[name]
    import builtins

    if hasattr(builtins, "IMPORTED"):
        del builtins.IMPORTED


def imported() -> list[str]:
    import builtins

    return getattr(builtins, "IMPORTED", [])


@pytest.mark.parametrize(
    ("reference", "key", "needle"),
    [
        ("userpkg.things:s", "selection.policy", "is a value, not a function"),
        ("userpkg.things:LIMIT", "compression.codec", "is a value"),
        ("userpkg.things:missing", "selection.policy", "defines no top-level 'missing'"),
        ("userpkg.things:one_arg", "selection.policy", "takes (candidates); a policy takes"),
        ("userpkg.things:extra_required", "selection.policy", "a policy takes"),
        ("userpkg.things:good", "model.name", "is a function, not an nn.Module class"),
        ("userpkg.nothere:x", "model.name", "no module named 'userpkg.nothere'"),
        ("nosuchpackage.sub:x", "model.name", "no module named 'nosuchpackage.sub'"),
    ],
)
def test_bad_references_are_refused_without_importing(package, reference, key, needle):
    """Each bad reference is one ScenarioError naming the key, and no module code has run."""
    with pytest.raises(ScenarioError, match=None) as caught:
        check_reference(reference, key)
    assert str(caught.value).startswith(f"{key}: ")
    assert needle in str(caught.value)
    assert imported() == []


@pytest.mark.parametrize(
    ("reference", "key"),
    [
        ("userpkg.things:good", "selection.policy"),
        ("userpkg.things:flexible", "selection.policy"),
        ("userpkg.things:Model", "model.name"),
    ],
)
def test_fitting_references_pass_the_check_without_importing(package, reference, key):
    """A reference that can fit its key passes, still without running the module."""
    check_reference(reference, key)
    assert imported() == []


def test_this_s_does_not_print_the_zen_of_python(capsys):
    """selection.policy = 'this:s' is refused before ``this`` prints on import."""
    sys.modules.pop("this", None)
    with pytest.raises(ScenarioError, match="'this:s' is a value, not a function"):
        load_object("this:s", "selection.policy")
    assert "this" not in sys.modules
    assert capsys.readouterr().out == ""


def test_find_module_imports_no_parent(package):
    """Finding userpkg.things runs neither userpkg/__init__.py nor the module."""
    spec = find_module("userpkg.things")
    assert spec is not None and spec.origin.endswith("things.py")
    assert "userpkg" not in sys.modules and imported() == []


def test_loaded_policy_with_a_wrong_signature_is_refused(package):
    """A policy that imports but cannot take four arguments is refused on load, naming them."""
    (package / "dyn.py").write_text(
        "def make():\n    return lambda a, b: a\n\nbad = make()\n"
    )
    with pytest.raises(ScenarioError, match=r"takes \(a, b\); a policy takes"):
        load_object("userpkg.dyn:bad", "selection.policy")
    assert load_object("userpkg.things:good", "selection.policy").__name__ == "good"


def test_policy_of_an_imported_module_is_checked_too(package):
    """Once a module is imported, its policy's signature is still checked before a run."""
    load_object("userpkg.things:good", "selection.policy")
    with pytest.raises(ScenarioError, match=r"takes \(candidates\); a policy takes"):
        check_reference("userpkg.things:one_arg", "selection.policy")
