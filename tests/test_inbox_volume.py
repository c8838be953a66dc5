"""The file-drop sensor at volume and against hostile inboxes (issue 19 item 6, issue 20
item 3): a cap on the runs a tick requests, a cursor of bounded size, appended JSONL lines
run once, and links that lead out of the inbox refused unread. Each tick is Dagster's own
evaluation of the sensor, against a real instance."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from agents_pipelines.orchestration import build_definitions
from agents_pipelines.orchestration.inbox import RECENT_DIGESTS, SETTLE_NS
from conftest import LINEAR, write


def inbox_defs(tmp_path: Path, sensor: str = "") -> tuple[dg.Definitions, Path]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    text = LINEAR.replace("flow: {name: linear}", "flow: {name: drop}").replace(
        "orchestration:\n  inputs: {topic: cats}\n",
        f"orchestration:\n  inputs: {{topic: cats}}\n  sensor: {{path: '{inbox}/*'{sensor}}}\n",
    )
    folder = tmp_path / "workflows"
    folder.mkdir()
    write(folder, text, "drop.yaml")
    return build_definitions(folder), inbox


def tick(defs: dg.Definitions, cursor: str | None, instance: dg.DagsterInstance) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def("drop_inbox")
    context = dg.build_sensor_context(cursor=cursor, instance=instance, definitions=defs)
    return sensor.evaluate_tick(context)


def topics(result: dg.SensorResult) -> list[Any]:
    return [r.run_config["ops"]["drop"]["config"]["topic"] for r in result.run_requests or []]


def settle() -> None:
    """Waits until the files written so far are older than the cursor's settle time, past
    which the watermark holds them instead of the cursor's list of recent files. Not a race:
    a file's change time is fixed once it is written."""
    time.sleep(SETTLE_NS / 1e9 + 0.1)


def test_a_tick_requests_at_most_its_cap_and_the_rest_run_on_the_next(tmp_path: Path) -> None:
    defs, inbox = inbox_defs(tmp_path, ", max_runs_per_tick: 40")
    for index in range(100):
        (inbox / f"{index:03}.json").write_text(json.dumps({"topic": f"t{index}"}))
    seen: list[Any] = []
    cursor = None
    with dg.instance_for_test() as instance:
        for expected in (40, 40, 20, 0):
            result = tick(defs, cursor, instance)
            assert len(result.run_requests or []) == expected
            seen += topics(result)
            cursor = result.cursor
    assert sorted(seen) == sorted(f"t{index}" for index in range(100))  # each once


def test_the_cursor_stays_bounded_however_many_files_it_has_seen(tmp_path: Path) -> None:
    files = 3 * RECENT_DIGESTS
    defs, inbox = inbox_defs(tmp_path, ", max_runs_per_tick: 500")
    for index in range(files):
        (inbox / f"{index:04}.json").write_text(json.dumps({"topic": f"t{index}"}))
    settle()
    cursor = None
    runs = 0
    sizes = []
    with dg.instance_for_test() as instance:
        for _ in range(files // 500 + 2):
            result = tick(defs, cursor, instance)
            runs += len(result.run_requests or [])
            cursor = result.cursor
            sizes.append(len(cursor or ""))
    assert runs == files
    # The digest of every file seen would be 67 bytes a file (103 KB here); the cursor keeps
    # the last RECENT_DIGESTS of them and a watermark, whatever the number of files.
    assert max(sizes) < 67 * RECENT_DIGESTS + 1_000, sizes
    assert len(json.loads(cursor or "")["digests"]) == RECENT_DIGESTS


def test_lines_appended_to_a_jsonl_file_run_once(tmp_path: Path) -> None:
    defs, inbox = inbox_defs(tmp_path)
    batch = inbox / "batch.jsonl"
    batch.write_text('{"topic": "a"}\n{"topic": "b"}\n')
    with dg.instance_for_test() as instance:
        first = tick(defs, None, instance)
        assert topics(first) == ["a", "b"]
        with batch.open("a") as appended:
            appended.write('{"topic": "c"}\n\n{"topic": "d"}\n')
        second = tick(defs, first.cursor, instance)
        assert topics(second) == ["c", "d"]
        assert [r.tags["agents_pipelines/input_file"] for r in second.run_requests] == [
            str(batch)
        ] * 2
        # Run keys of earlier lines do not change as lines are appended: past the cursor's
        # memory, Dagster drops a repeat by its key.
        keys = {r.run_key for r in [*first.run_requests, *second.run_requests]}
        fresh = tick(defs, None, instance)
        assert {r.run_key for r in fresh.run_requests} == keys
        assert tick(defs, second.cursor, instance).run_requests == []


def test_a_jsonl_file_larger_than_the_cap_is_read_over_several_ticks(tmp_path: Path) -> None:
    defs, inbox = inbox_defs(tmp_path, ", max_runs_per_tick: 3")
    (inbox / "batch.jsonl").write_text("".join(f'{{"topic": "l{n}"}}\n' for n in range(7)))
    with dg.instance_for_test() as instance:
        first = tick(defs, None, instance)
        second = tick(defs, first.cursor, instance)
        third = tick(defs, second.cursor, instance)
        assert [topics(first), topics(second), topics(third)] == [
            ["l0", "l1", "l2"],
            ["l3", "l4", "l5"],
            ["l6"],
        ]
        assert tick(defs, third.cursor, instance).run_requests == []


def test_links_that_leave_the_inbox_are_refused_unread(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    defs, inbox = inbox_defs(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.json").write_text(json.dumps({"topic": "from outside"}))
    (outside / "dagster.yaml").write_text("storage: {postgres: {password: hunter2}}\n")
    (inbox / "linked.json").symlink_to(outside / "secret.json")
    (inbox / "config.yaml").symlink_to(outside / "dagster.yaml")
    (inbox / "folder").symlink_to(outside)  # a link to a folder is no file to read either
    (inbox / "own.json").write_text(json.dumps({"topic": "inside"}))
    (inbox / "alias.json").symlink_to(inbox / "own.json")  # stays inside: the same file
    with dg.instance_for_test() as instance:
        result = tick(defs, None, instance)
    assert topics(result) == ["inside"]
    logged = capfd.readouterr().err
    for name in ("linked.json", "config.yaml", "folder"):
        assert (
            f"Skipped input file {inbox / name}: it is a symbolic link, or lies under one, "
            f"that leads out of the inbox {os.path.realpath(inbox)}"
        ) in logged
    assert "from outside" not in logged and "storage" not in logged
    assert "postgres" not in (result.cursor or "")


def test_a_cursor_of_the_earlier_form_runs_no_file_again(tmp_path: Path) -> None:
    """Before, the cursor was the digest of every file seen: after an upgrade, those files
    are not run again, a new one is, and the long list is dropped once passed."""
    import hashlib

    defs, inbox = inbox_defs(tmp_path)
    old = json.dumps({"topic": "already run"}).encode()
    (inbox / "old.json").write_bytes(old)
    legacy = json.dumps([hashlib.sha256(old).hexdigest()])
    (inbox / "new.json").write_text(json.dumps({"topic": "new"}))
    with dg.instance_for_test() as instance:
        first = tick(defs, legacy, instance)
        assert topics(first) == ["new"]
        settle()
        second = tick(defs, first.cursor, instance)
    assert second.run_requests == []
    assert "legacy" not in json.loads(second.cursor or "")
