"""What the registry refuses to serve: versions edited since they were registered, bundles
the flows could not load, unreadable version folders (named, not hidden) and labels that
would not print on one line."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.model_dir import SERVING_FILE, read_serving
from pipeline.registry.serving import promote, rollback
from pipeline.registry.versions import (
    MAX_LABEL_CHARS,
    RegistryError,
    check_label,
    content_hash,
    describe,
    register,
)
from tests.registry_support import Registry, make_registry


def _edit(bundle: Path, **changes: object) -> str:
    """Change ``config.json`` and re-hash the manifest, as a careless edit would; returns
    the version id the bundle's content now has."""
    config = bundle / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **changes}))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["config.json"] = hashlib.sha256(config.read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return content_hash(bundle)[:12]


def _filed_by_hand(reg: Registry, **changes: object) -> str:
    """A copy of ``reg.a`` with ``changes``, filed under its new content hash without
    :func:`register` (which would refuse it), as an older roadcast might have; its id."""
    staging = reg.bundles / "versions" / "ar" / ".edit"
    shutil.copytree(reg.a.path, staging)
    version = _edit(staging, **changes)
    staging.rename(staging.with_name(version))
    return version


def _serve_before(reg: Registry, version: str) -> None:
    """Make ``ar@version`` (with the served persistence) the set to roll back to."""
    path = reg.bundles / SERVING_FILE
    serving = json.loads(path.read_text())
    earlier = {**serving["models"], "ar": version}
    serving["history"] = [{"models": earlier, "champion": None, "promoted_at": "t", "reason": "r"}]
    path.write_text(json.dumps(serving))


def test_rollback_refuses_a_version_whose_content_no_longer_hashes_to_its_id(tmp_path):
    reg = make_registry(tmp_path, 5)
    promote(reg.bundles, {"ar": reg.b.version})  # ar@a is now the set to roll back to
    edited = _edit(reg.a.path, extra_key=1)
    before = (reg.bundles / SERVING_FILE).read_text()
    with pytest.raises(RegistryError) as info:
        rollback(reg.bundles)
    message = str(info.value)
    assert message.startswith(f"ar@{reg.a.version} cannot be served: ")
    assert f"now hashes to {edited}" in message and f"ar@{edited}" not in message
    assert "\n" not in message
    assert (reg.bundles / SERVING_FILE).read_text() == before
    result = CliRunner().invoke(app, ["models", "rollback", "--models", str(reg.bundles)])
    assert result.exit_code == 1 and f"error: ar@{reg.a.version} cannot be served" in result.output


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"horizon": 0}, "field 'horizon' must be an integer from 1"),
        ({"floor": [float("nan")] * 6}, "field 'floor'"),
    ],
    ids=["horizon-0", "nan-floor"],
)
def test_promote_and_rollback_refuse_a_version_the_flows_cannot_load(tmp_path, changes, why):
    from models.bundle import BundleError
    from pipeline.model_dir import load_bundles

    reg = make_registry(tmp_path, 5)
    version = _filed_by_hand(reg, **changes)
    path = reg.bundles / "versions" / "ar" / version
    with pytest.raises(BundleError, match=why):
        load_bundles(reg.bundles, paths=[path])  # what the flows and the service do
    before = (reg.bundles / SERVING_FILE).read_text()
    with pytest.raises(RegistryError, match=rf"^ar@{version} cannot be served: .*{why}"):
        promote(reg.bundles, {"ar": version})
    assert (reg.bundles / SERVING_FILE).read_text() == before
    _serve_before(reg, version)
    with pytest.raises(RegistryError, match=rf"^ar@{version} cannot be served: .*{why}"):
        rollback(reg.bundles)
    assert read_serving(reg.bundles).models["ar"] == reg.a.version


def test_register_refuses_a_bundle_with_a_nan_floor(tmp_path):
    from models.bundle import BundleError

    reg = make_registry(tmp_path, 5)
    bundle = tmp_path / "nan-floor"
    shutil.copytree(reg.a.path, bundle)
    _edit(bundle, floor=[float("nan")] * 6)
    with pytest.raises(BundleError, match=rf"{bundle}: config\.json field 'floor' must be"):
        register(reg.bundles, bundle)


def test_list_names_an_unreadable_version_and_promote_says_what_is_wrong(tmp_path):
    reg = make_registry(tmp_path, 5)
    (reg.a.path / "config.json").write_text('{"model": "ar", ')  # ar@a is served
    folder = ["--models", str(reg.bundles)]
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", *folder], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    warning = f"warning: ar@{reg.a.version} (served) cannot be served: "
    assert warning in listed.output and "config.json: Expecting" in listed.output
    assert reg.b.version in listed.output  # the readable versions are still listed
    promoted = runner.invoke(app, ["models", "promote", f"ar@{reg.a.version[:6]}", *folder])
    assert promoted.exit_code == 1
    assert f"error: ar@{reg.a.version} cannot be served: " in promoted.output
    assert "matches no version" not in promoted.output


def test_list_names_a_version_edited_since_it_was_registered(tmp_path):
    reg = make_registry(tmp_path, 5)
    edited = _edit(reg.b.path, extra_key=1)
    listed = CliRunner().invoke(
        app, ["models", "list", "--models", str(reg.bundles)], env={"COLUMNS": "200"}
    )
    assert listed.exit_code == 0, listed.output
    assert f"warning: ar@{reg.b.version} cannot be served: " in listed.output
    assert f"now hashes to {edited}" in listed.output
    assert f"│ {edited}" not in listed.output  # not listed as a version of its own


@pytest.mark.parametrize(
    "label", ["a/b\nc", "tab\there", "\x1b]0;title\x07", "x" * (MAX_LABEL_CHARS + 1)]
)
def test_register_refuses_a_label_that_would_not_print_on_one_line(tmp_path, label):
    reg = make_registry(tmp_path, 5)
    from models.forecasters.baselines import Persistence

    model = Persistence(window=4, horizon=3).fit(reg.panel.slice(0, 150))
    with pytest.raises(RegistryError) as info:
        register(reg.bundles, model, label=label)
    assert "label " in str(info.value) and "\n" not in str(info.value)
    assert len(str(info.value)) < 300
    with pytest.raises(RegistryError):
        check_label(label)
    check_label(None)
    assert register(reg.bundles, model, label="x" * MAX_LABEL_CHARS).label == "x" * MAX_LABEL_CHARS


def test_a_forged_label_in_version_json_is_not_shown(tmp_path):
    reg = make_registry(tmp_path, 5)
    record = reg.b.path / "version.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "label": "two\nlines"}))
    assert describe(reg.b.path).label == ""
    listed = CliRunner().invoke(app, ["models", "list", "--models", str(reg.bundles)])
    assert listed.exit_code == 0 and "two" not in listed.output


def test_the_newest_version_is_the_last_registered_also_within_one_second(tmp_path):
    """``created_at`` has whole seconds: versions registered within one were ordered by
    their hash, so ``promote ar`` could pick the older one."""
    from pipeline.registry.versions import find_version

    reg = make_registry(tmp_path, 5)  # registers a, then b
    assert find_version(reg.bundles, "ar").version == reg.b.version
