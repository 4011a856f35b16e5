"""The project's virtual environment holds exactly requirements.lock's versions (what `make
install` promises: two fresh machines get the same environment)."""
from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)")


def read_lock(path: Path) -> dict[str, str]:
    """{normalised name: version} of every ``name==version`` line."""
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def test_the_lock_pins_every_requirement():
    pins = read_lock(REPO / "requirements.lock")
    for requirements in ("requirements.txt", "requirements-extras.txt"):  # the extras too: CI tests them
        loose = [re.split(r"[<>=!~; \[]", line, maxsplit=1)[0]
                 for line in (REPO / requirements).read_text().splitlines() if line.strip() and not line.startswith("#")]
        missing = [name for name in loose if canonicalize_name(name) not in pins]
        assert loose and not missing, f"{requirements}: {missing} not in requirements.lock; fix: make lock"
    assert {"torch", "numpy", "pillow", "opencv-contrib-python-headless", "nvidia-cudnn-cu13", "onnxruntime",
            "tensorboard"} <= set(pins)


@pytest.mark.skipif(Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
                    reason="only the project's own .venv (make install) is made from the lock")
def test_the_project_venv_holds_exactly_the_locked_versions():
    pins = read_lock(REPO / "requirements.lock")
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {name: (version, installed.get(name)) for name, version in pins.items()
             if name not in installed or Version(installed[name]) != Version(version)}
    assert not wrong, f"locked vs installed: {wrong}; fix: make install (it makes .venv again from the lock)"
    extra = set(installed) - set(pins) - {"pip"}
    assert not extra, f"installed but not in the lock: {sorted(extra)}"
