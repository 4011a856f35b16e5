"""Numbers frozen from a run (scores of a tiny training, predictions) hold only for the
library builds and the processor they were written with: another torch, numpy, Pillow or
OpenCV, or a CPU with other vector units, changes the floats. So each fixture carries a
record of where it was written, and a test that compares with it first checks that record:
under the same versions the comparison stays exact; under others the test fails with one
message naming what differs and the command that writes the fixture again (from the commit
that first wrote it, so that it stays the baseline of that commit's code).
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# torch's CPU threads split float sums, so their order (and the last bits) follow the thread count:
# fixtures are written and compared with this many, whatever the machine or OMP_NUM_THREADS say
FROZEN_THREADS = 2
COMPARED = ("torch", "torchvision", "numpy", "pillow", "opencv", "cpu", "cpu_capability", "cpu_vector_flags")
VECTOR_FLAG = re.compile(r"^(sse4_\d|avx\w*|fma\w*|amx\w*|f16c)$")


def _cpuinfo(field: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what the platform says."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_vector_flags() -> str:
    """The processor's vector extensions (SSE4, AVX*, FMA, AMX): virtual machines often share one
    model name across processors whose kernels, and so whose float sums, differ."""
    flags = (_cpuinfo("flags") or "").split()
    return " ".join(sorted(flag for flag in flags if VECTOR_FLAG.match(flag))) or "unknown"


def opencv_version() -> str:
    """The installed OpenCV wheel's version (5.0.0.93: the last part is the wheel's build, whose
    bundled codecs differ), else cv2's own."""
    import cv2
    from importlib import metadata

    for name in metadata.packages_distributions().get("cv2", []):
        return metadata.version(name)
    return cv2.__version__


def environment() -> dict[str, str]:
    """The versions and processor that decide a run's floats."""
    import numpy
    import PIL
    import torch
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "pillow": PIL.__version__, "opencv": opencv_version(), "cpu": cpu_model(),
            # the vector instructions torch's CPU kernels use: what decides the order of float sums
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_vector_flags": cpu_vector_flags()}


def written_record(commit: str) -> dict[str, str]:
    """What a fixture stores about where it was written: this environment, the thread count and
    the commit whose code wrote it."""
    return {**environment(), "threads": FROZEN_THREADS, "commit": commit}


@contextlib.contextmanager
def frozen_threads(record: dict | None):
    """Run the comparison with the thread count the fixture was written with (fixtures from
    before the record said so were written with FROZEN_THREADS), on any machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int((record or {}).get("threads", FROZEN_THREADS)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_record(record: dict | None, fixture: Path, regenerate: str) -> None:
    """Fail, naming every difference and the command that rewrites ``fixture``, unless it was
    written under this environment's versions and processor. Never skips."""
    import pytest

    if not record:
        pytest.fail(f"{fixture.name} records no versions, so its numbers cannot be compared here\n"
                    f"  fix: write it again under this environment: {regenerate}", pytrace=False)
    here = environment()
    differing = [f"{key} {record.get(key)} (fixture) vs {here[key]} (here)"
                 for key in COMPARED if str(record.get(key)) != here[key]]
    if differing:
        pytest.fail(f"{fixture.name} was written under other versions, so its numbers do not hold here: "
                    + "; ".join(differing)
                    + f"\n  fix: if this environment is the one to keep (the lock file's), write the fixture again "
                      f"from commit {record.get('commit')}'s code: {regenerate}", pytrace=False)


def run_at_commit(commit: str, module: str, produced: str) -> bytes:
    """Run ``python -m module`` in a git worktree of ``commit`` (with this interpreter) and return
    the file it wrote, ``produced`` (relative to the worktree)."""
    with tempfile.TemporaryDirectory(prefix="fixture-") as out:
        tree = Path(out) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit], check=True)
        try:
            env = {**os.environ, "OMP_NUM_THREADS": str(FROZEN_THREADS)}
            subprocess.run([sys.executable, "-m", module], cwd=tree, check=True, env=env)
            return (tree / produced).read_bytes()
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=True)
