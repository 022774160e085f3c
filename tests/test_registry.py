"""The model registry: versions named by content, a serving set changed only whole and
verified, rollback, plain bundle folders moved in without changing what serves, and the
``roadcast models`` commands."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.model_dir import read_champion, read_serving
from pipeline.registry.serving import promote, rollback
from pipeline.registry.versions import RegistryError, list_versions, register, scan_versions
from pipeline.registry.watch import load_serving
from tests.registry_support import make_registry
from tests.service_support import HORIZON, make_world


def test_plain_bundles_become_versions_without_changing_what_serves(tmp_path):
    from pipeline.model_dir import Champion
    from pipeline.model_dir import promote as write_champion

    world = make_world(tmp_path / "bundles")
    write_champion(world.bundles, Champion("ar", ("persistence",), {"ar": 1.0}, "m", "sim", "t"))
    before = load_serving(world.bundles)
    assert before.serving is None and set(before.ids()) == {"ar", "persistence"}
    result = CliRunner().invoke(app, ["models", "promote", "ar", "--models", str(world.bundles)])
    assert result.exit_code == 0, result.output
    serving = read_serving(world.bundles)
    assert serving is not None and serving.models == before.ids()  # the same bundles serve
    assert serving.reason == "imported from unversioned bundles"
    assert serving.champion is not None and serving.champion["champion"] == "ar"
    for name in ("ar", "persistence"):
        link = world.bundles / name
        assert link.is_symlink() and (link / "version.json").is_file()
    assert {v.label for v in list_versions(world.bundles)} == {"imported"}
    after = load_serving(world.bundles)
    assert after.ids() == before.ids() and after.serving == serving
    assert read_champion(world.bundles) is not None


def test_models_commands_list_promote_and_roll_back(tmp_path):
    reg = make_registry(tmp_path, 5)
    folder = ["--models", str(reg.bundles)]
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", *folder], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert reg.a.version in listed.output and reg.b.version in listed.output
    assert "serving" in listed.output and "0 earlier set(s)" in listed.output
    promoted = runner.invoke(
        app, ["models", "promote", f"ar@{reg.b.version[:5]}", "--champion", "ar", *folder]
    )
    assert promoted.exit_code == 0, promoted.output
    assert f"ar@{reg.b.version}" in promoted.output
    assert read_champion(reg.bundles).champion == "ar"
    by_label = runner.invoke(app, ["models", "promote", "ar@first", *folder])
    assert f"ar@{reg.a.version}" in by_label.output
    back = runner.invoke(app, ["models", "rollback", "--steps", "2", *folder])
    assert back.exit_code == 0 and f"ar@{reg.a.version}" in back.output
    unknown = runner.invoke(app, ["models", "promote", "ar@nope", *folder])
    assert unknown.exit_code == 1
    assert "error: 'ar@nope' matches no version; the newest are" in unknown.output
    escape = runner.invoke(app, ["models", "promote", "ar@\x1b]0;title\x07", *folder])
    assert escape.exit_code == 1 and "\x1b" not in escape.output  # no terminal escapes echoed
    twice = runner.invoke(app, ["models", "promote", "ar", f"ar@{reg.b.version}", *folder])
    assert twice.exit_code == 2 and "ar is named twice" in " ".join(twice.output.split())
    empty = runner.invoke(app, ["models", "rollback", *folder])
    assert empty.exit_code == 1 and "history holds 0 earlier" in empty.output
    one = runner.invoke(app, ["models", "list", "--models", str(reg.a.path)])
    assert one.exit_code == 2 and "is one model bundle" in " ".join(one.output.split())


def test_the_serving_set_is_only_changed_whole_and_verified(tmp_path):
    """Promotion refuses unknown, corrupt and foreign versions before touching
    ``serving.json``; rollback walks the history back."""
    from models.forecasters.ar import AutoRegressive

    reg = make_registry(tmp_path, 5)
    before = (reg.bundles / "serving.json").read_text()
    with pytest.raises(RegistryError, match="matches no version"):
        promote(reg.bundles, {"ar": "ffffff"})
    small = AutoRegressive(window=3, horizon=HORIZON).fit(
        reg.panel.slice(0, 150).select(reg.panel.sensor_ids[:3])
    )
    foreign = register(reg.bundles, small)
    with pytest.raises(RegistryError, match=r"forecasts 3 sensors, not the 6 of network\.json"):
        promote(reg.bundles, {"ar": foreign.version})
    config = reg.b.path / "config.json"
    config.write_text(config.read_text().replace('"window": 3', '"window": 4'))
    with pytest.raises(RegistryError, match="sha256 differs"):
        promote(reg.bundles, {"ar": reg.b.version})
    assert (reg.bundles / "serving.json").read_text() == before
    with pytest.raises(RegistryError, match="history holds 0"):
        rollback(reg.bundles)
    third = register(reg.bundles, AutoRegressive(window=3, horizon=HORIZON).fit(reg.panel))
    promote(reg.bundles, {"ar": third.version[:6]})
    assert read_serving(reg.bundles).models == {
        "ar": third.version,
        "persistence": read_serving(reg.bundles).models["persistence"],
    }
    assert (reg.bundles / "ar").resolve() == third.path.resolve()
    assert json.loads((reg.bundles / "ar" / "version.json").read_text())["version"] == (
        third.version
    )
    served = rollback(reg.bundles)
    assert served.models["ar"] == reg.a.version and served.history == ()


def test_promoting_the_serving_set_again_rewrites_it_for_a_service_that_refused_it(tmp_path):
    """A service refuses a set whose bundle is broken and keeps the old one; once the
    bundle is repaired, promoting the same set again must reach it, and used to be a
    no-op that left serving.json untouched (the service watches its stat)."""
    from pipeline.registry.watch import _signature

    reg = make_registry(tmp_path, 5)
    path = reg.bundles / "serving.json"
    before = _signature(path)
    again = promote(reg.bundles, {"ar": reg.a.version})
    assert _signature(path) != before
    assert again.history == () and read_serving(reg.bundles).history == ()  # no new entry


def test_a_serving_set_of_no_model_is_named(tmp_path):
    from pipeline.model_dir import BundleDirError, discover_bundles

    (tmp_path / "serving.json").write_text(json.dumps({"models": {}}))
    with pytest.raises(BundleDirError, match=r"serving\.json serves no model"):
        discover_bundles(tmp_path)


def test_promotions_at_once_take_turns_and_keep_every_set_in_the_history(tmp_path, monkeypatch):
    """Two promotions that both read serving.json before either wrote it: one set used to
    vanish from the history. The publish is slowed down to widen that window."""
    import threading
    import time

    import pipeline.registry.serving as serving

    reg = make_registry(tmp_path, 5)
    publish = serving._publish

    def slow_publish(root, chosen):
        time.sleep(0.5)
        publish(root, chosen)

    monkeypatch.setattr(serving, "_publish", slow_publish)
    moves = [
        lambda: promote(reg.bundles, {"ar": reg.b.version}),
        lambda: promote(reg.bundles, {"persistence": None}, replace=True),
    ]
    threads = [threading.Thread(target=move) for move in moves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = read_serving(reg.bundles)
    assert final is not None and len(final.history) == 2
    sets = [final.models, *(entry["models"] for entry in final.history)]
    assert len({json.dumps(s, sort_keys=True) for s in sets}) == 3  # each set once


def test_a_lock_held_too_long_is_a_one_line_error(tmp_path):
    from pipeline.registry.serving import registry_root, serving_lock

    reg = make_registry(tmp_path, 5)
    root = registry_root(reg.bundles)
    with (
        serving_lock(root),
        pytest.raises(RegistryError, match=r"held its lock for 0\.2 s"),
        serving_lock(root, wait_s=0.2),
    ):
        pass


def _ar_champion(tmp_path):
    """A registry serving ar (the champion) and persistence; its --models option; a runner."""
    reg = make_registry(tmp_path, 5)
    folder = ["--models", str(reg.bundles)]
    runner = CliRunner()
    assert (
        runner.invoke(app, ["models", "promote", "ar", "--champion", "ar", *folder]).exit_code == 0
    )
    return reg, folder, runner


def test_promote_only_keeps_a_served_champion_and_replaces_an_unreadable_set(tmp_path):
    from pipeline.model_dir import SERVING_FILE

    reg, folder, runner = _ar_champion(tmp_path)
    only = runner.invoke(app, ["models", "promote", "ar", "--only", *folder])
    assert only.exit_code == 0, only.output
    assert read_champion(reg.bundles).champion == "ar"  # still served: still the champion
    (reg.bundles / SERVING_FILE).write_text("[")
    listed = runner.invoke(app, ["models", "list", *folder])
    assert listed.exit_code == 1 and "promote --only" in listed.output
    plain = runner.invoke(app, ["models", "promote", "ar", *folder])
    assert plain.exit_code == 1  # keeping the other served models needs the set
    again = runner.invoke(app, ["models", "promote", "ar", "--only", *folder])
    assert again.exit_code == 0, again.output
    assert read_serving(reg.bundles).models == {"ar": reg.b.version}


def test_promote_only_without_the_champion_says_the_set_has_none(tmp_path, caplog):
    """``--only`` over a set whose champion it leaves out dropped the champion silently."""
    reg, folder, runner = _ar_champion(tmp_path)
    only = runner.invoke(app, ["models", "promote", "persistence", "--only", *folder])
    assert only.exit_code == 0, only.output
    assert "the champion 'ar' is no longer served" in caplog.text  # stderr, from the CLI
    assert "no longer served: ar (not in the new set" in caplog.text
    assert read_serving(reg.bundles).champion is None


def test_a_report_over_a_serving_set_of_missing_versions_says_why(tmp_path):
    """The report flow said only "no model bundles" for a serving set it could not load."""
    import json

    from flows.report_flow import read_model_info
    from pipeline.model_dir import SERVING_FILE

    reg = make_registry(tmp_path, 5)
    path = reg.bundles / SERVING_FILE
    serving = json.loads(path.read_text())
    serving["models"]["ar"] = "f" * 12
    path.write_text(json.dumps(serving))
    info = read_model_info.fn(str(reg.bundles))
    assert not info.horizons
    assert "names versions that do not exist" in info.unusable
    assert "roadcast models promote MODEL" in info.unusable


def test_a_version_or_model_folder_that_is_a_symbolic_link_is_not_served(tmp_path):
    reg = make_registry(tmp_path, 5)
    versions = reg.bundles / "versions"
    outside = tmp_path / "outside"
    shutil.move(str(versions / "ar" / reg.b.version), outside)
    (versions / "ar" / reg.b.version).symlink_to(outside, target_is_directory=True)
    (versions / "etc").symlink_to(tmp_path, target_is_directory=True)
    good, broken = scan_versions(reg.bundles)
    assert reg.b.version not in {v.version for v in good}
    reasons = {(b.model, b.version): b.reason for b in broken}
    assert set(reasons) == {("ar", reg.b.version), ("etc", "*")}
    assert all("symbolic link" in r for r in reasons.values())
    result = CliRunner().invoke(
        app, ["models", "promote", f"ar@{reg.b.version}", "--models", str(reg.bundles)]
    )
    assert result.exit_code != 0 and "symbolic link" in result.output, result.output


def test_a_rollback_to_or_a_serving_set_of_a_linked_version_is_refused(tmp_path):
    """promote refused a version folder linked from outside, but a rollback to a set that
    served it, and a service reading that set, took it."""
    from pipeline.model_dir import BundleDirError, discover_bundles

    reg = make_registry(tmp_path, 5)
    promote(reg.bundles, {"ar": reg.b.version})  # served b, then a again: b is one back
    promote(reg.bundles, {"ar": reg.a.version})
    linked = reg.bundles / "versions" / "ar" / reg.b.version
    shutil.move(str(linked), tmp_path / "outside")
    linked.symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(RegistryError, match=r"cannot be served: .* is a symbolic link"):
        rollback(reg.bundles)
    assert read_serving(reg.bundles).models["ar"] == reg.a.version
    serving = json.loads((reg.bundles / "serving.json").read_text())
    serving["models"]["ar"] = reg.b.version  # as a hand edit, or an older roadcast, left it
    (reg.bundles / "serving.json").write_text(json.dumps(serving))
    with pytest.raises(BundleDirError, match="names versions that are symbolic links"):
        discover_bundles(reg.bundles)


def test_a_promotion_after_serving_json_was_lost_keeps_what_the_links_serve(tmp_path):
    """With serving.json deleted, a service served the linked versions, but promoting one
    model served that model alone: the others were dropped, and the champion with them."""
    reg = make_registry(tmp_path, 5)
    (reg.bundles / "serving.json").unlink()
    promote(reg.bundles, {"ar": reg.b.version})
    serving = read_serving(reg.bundles)
    assert serving.models == {"ar": reg.b.version, "persistence": serving.models["persistence"]}
    assert serving.history[0]["reason"].startswith("recovered from the links")


def test_a_broken_bundle_left_out_with_only_does_not_stop_the_others(tmp_path):
    """`serve --only ar` refused to start because the persistence bundle, which it was
    told not to load, was corrupt: every bundle was loaded before `only` was applied."""
    from pipeline.model_dir import discover_bundles, load_bundles

    reg = make_registry(tmp_path, 5)
    persistence = next(p for p in discover_bundles(reg.bundles) if p.parent.name == "persistence")
    (persistence / "config.json").write_text('{"x": 1}')
    assert list(load_bundles(reg.bundles, only=["ar"])) == ["ar"]


@pytest.mark.parametrize("inner", ["versions/ar", "detectors"])
def test_a_folder_inside_a_model_directory_is_not_taken_for_one(tmp_path, inner):
    """`promote --models DIR/bundles/versions/ar` took the versions for unversioned
    bundles: it registered them again inside and deleted the served originals."""
    reg = make_registry(tmp_path, 5)
    folder = reg.bundles / inner
    folder.mkdir(parents=True, exist_ok=True)
    before = sorted(p.relative_to(reg.bundles) for p in reg.bundles.rglob("*"))
    with pytest.raises(RegistryError, match=f"inside the model directory {reg.bundles}"):
        promote(folder, {"ar": None})
    assert sorted(p.relative_to(reg.bundles) for p in reg.bundles.rglob("*")) == before
    result = CliRunner().invoke(app, ["models", "list", "--models", str(folder)])
    assert result.exit_code == 2 and "inside the model directory" in result.output


def test_an_empty_serving_set_names_the_file_that_holds_it(tmp_path):
    """Given the train output folder, the message named OUT/serving.json, which does not
    exist (the file is OUT/bundles/serving.json)."""
    from pipeline.model_dir import BundleDirError, discover_bundles

    reg = make_registry(tmp_path, 5)
    serving = json.loads((reg.bundles / "serving.json").read_text())
    (reg.bundles / "serving.json").write_text(json.dumps({**serving, "models": {}}))
    with pytest.raises(BundleDirError, match=f"^{reg.bundles / 'serving.json'} serves no model"):
        discover_bundles(reg.bundles.parent)


def test_a_prefix_of_several_versions_names_the_ones_it_matches(tmp_path):
    from collections import defaultdict

    from models.forecasters.baselines import Persistence
    from pipeline.data.simulate import simulate_network
    from pipeline.registry.versions import find_version

    panel = simulate_network(sensors=2, days=1, seed=3, faults_per_day=0.0, dropout=0.0)
    by_first: defaultdict[str, list[str]] = defaultdict(list)
    for start in range(17):  # 17 ids over 16 hex digits: two share a first digit
        fitted = Persistence(window=3, horizon=HORIZON).fit(panel.slice(start, start + 40))
        version = register(tmp_path, fitted, label=f"fit{start}").version
        by_first[version[0]].append(version)
    first, shared = next((k, v) for k, v in by_first.items() if len(v) > 1)
    with pytest.raises(RegistryError) as caught:
        find_version(tmp_path, "persistence", first)
    message = str(caught.value)
    assert "matches several versions: " + ", ".join(sorted(shared)) in message
    others = [v for k, vs in by_first.items() if k != first for v in vs]
    assert not any(v in message for v in others)


def test_a_rollback_to_a_set_whose_champion_it_does_not_serve_drops_it_saying_so(tmp_path, caplog):
    from pipeline.model_dir import Champion

    reg = make_registry(tmp_path, 5)
    champion = Champion("ar", ("persistence",), {"ar": 1.0}, "m", "sim", "t")
    promote(reg.bundles, {"ar": reg.b.version}, champion=champion)
    path = reg.bundles / "serving.json"
    serving = json.loads(path.read_text())
    serving["history"][0]["champion"] = {**serving["champion"], "champion": "lstm"}
    path.write_text(json.dumps(serving))
    with caplog.at_level("WARNING", logger="roadcast.registry"):
        back = rollback(reg.bundles)
    assert back.models["ar"] == reg.a.version and back.champion is None
    assert read_champion(reg.bundles) is None
    assert "names champion 'lstm', which it does not serve" in caplog.text


def test_a_killed_registration_is_swept_and_a_new_label_on_an_old_version_is_named(
    tmp_path, caplog
):
    """A registration killed part-way left its staging folder for good; registering the
    same bundle again under another label kept the old record without a word."""
    import os
    import time

    from models.forecasters.baselines import Persistence
    from pipeline.registry.versions import STALE_STAGING_S

    reg = make_registry(tmp_path, 5)
    parent = reg.bundles / "versions" / "ar"
    stale, live = parent / ".staging-killed", parent / ".staging-writing"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    old = time.time() - STALE_STAGING_S - 60
    os.utime(stale, (old, old))
    again = register(reg.bundles, reg.a.path, label="another")
    assert again.version == reg.a.version and again.label == "first"
    assert not stale.exists() and live.exists()  # a recent one may be another process's
    assert "registered before (label 'first'" in caplog.text and "'another'" in caplog.text
    fresh = Persistence(window=3, horizon=HORIZON).fit(reg.panel.slice(0, 50))
    caplog.clear()
    register(reg.bundles, fresh, label="new")
    assert "registered before" not in caplog.text
