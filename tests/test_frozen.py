"""The record that frozen numbers carry (tests/frozen.py): the same versions compare, others fail
with the differing versions and the command that writes the fixture again."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests import predict_record, reference_run
from tests.frozen import COMPARED, check_record, environment, written_record

FAIL = pytest.fail.Exception


def test_a_record_of_this_environment_compares():
    check_record(written_record("abc1234"), Path("x.npz"), "python -m tests.x")  # no failure


def test_other_versions_fail_naming_each_difference_and_the_command():
    record = {**written_record("abc1234"), "torch": "1.13.0", "cpu": "Some Other CPU"}
    with pytest.raises(FAIL) as failure:
        check_record(record, Path("data/x.npz"), "python -m tests.x")
    message = str(failure.value)
    here = environment()
    assert f"torch 1.13.0 (fixture) vs {here['torch']} (here)" in message
    assert f"cpu Some Other CPU (fixture) vs {here['cpu']} (here)" in message
    assert "numpy" not in message  # only what differs
    assert "x.npz" in message and "python -m tests.x" in message and "abc1234" in message


@pytest.mark.parametrize("key", COMPARED)
def test_each_recorded_quantity_is_compared(key):
    with pytest.raises(FAIL, match=key):
        check_record({**written_record("abc1234"), key: "different"}, Path("x.npz"), "cmd")


def test_a_fixture_without_a_record_fails_with_the_command():
    for record in (None, {}):
        with pytest.raises(FAIL, match="(?s)records no versions.*python -m tests.x"):
            check_record(record, Path("x.npz"), "python -m tests.x")


@pytest.mark.parametrize("load,commit", [(reference_run.load_fixture, reference_run.COMMIT),
                                         (predict_record.load_record, predict_record.COMMIT)])
def test_the_committed_fixtures_say_where_and_from_which_commit_they_were_written(load, commit):
    record, numbers = load()
    assert record is not None and set(COMPARED) <= set(record) and record["commit"] == commit
    assert numbers
