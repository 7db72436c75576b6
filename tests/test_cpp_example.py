"""The C++ embedding path: install convt with CMake, build examples/cpp via find_package, run it."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cpp_example_builds_and_runs_through_find_package(tmp_path: Path) -> None:
    build, prefix, example = tmp_path / "build", tmp_path / "prefix", tmp_path / "example"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    jobs = str(os.cpu_count() or 2)
    # The compiler the extension module was built with (scikit-build-core takes sysconfig's CXX
    # unless CXX is set): where ccache is installed, CMakeLists.txt compiles through it, and
    # this build then reuses the wheel build's objects (ccache tells compilers apart by name).
    env = dict(os.environ)
    cxx = sysconfig.get_config_var("CXX")
    if "CXX" not in env and cxx:
        env["CXX"] = shlex.split(cxx)[0]
    _run(["cmake", "-S", str(ROOT), "-B", str(build), *gen, "-DCMAKE_BUILD_TYPE=Release"], env=env)
    _run(["cmake", "--build", str(build), "-j", jobs])
    _run(["cmake", "--install", str(build), "--prefix", str(prefix)])
    assert (prefix / "include" / "convt" / "convt.h").exists()
    _run(
        [
            "cmake",
            "-S",
            str(ROOT / "examples" / "cpp"),
            "-B",
            str(example),
            *gen,
            f"-DCMAKE_PREFIX_PATH={prefix}",
        ]
    )
    _run(["cmake", "--build", str(example)])
    exe = example / "convt_example"
    result = _run([str(exe)])
    assert "100 2010 200 3020 300 4030 400" in result.stdout
    assert result.stdout.strip().endswith("OK")
