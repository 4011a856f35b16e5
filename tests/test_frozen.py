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


@pytest.mark.slow
def test_the_frozen_numbers_hold_under_one_thread():
    """OMP_NUM_THREADS=1 (many Slurm jobs): the comparison runs with the fixture's own thread count
    (the suite itself runs it under this machine's default; test_predict's frozen comparison
    uses the same frozen_threads)."""
    import os
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_recipes.py::"
                           "test_reference_recipe_gives_the_scores_written_before_the_tsn_options"],
                          cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_a_record_says_how_many_threads_wrote_it():
    from tests.frozen import FROZEN_THREADS
    assert written_record("abc1234")["threads"] == FROZEN_THREADS
