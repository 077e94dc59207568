"""pip install . : builds convmat's extension, convmat._convmat, with the
project's CMake (target convmat_python) and puts it beside the package's
Python files (python/convmat). The metadata is in pyproject.toml.

CONVMAT_CMAKE_BUILD_DIR=<dir> builds in that CMake build directory as it is
configured (one made for the module, e.g. by scripts/test.sh), instead of a
fresh one under pip's build directory: an incremental build.
CONVMAT_CMAKE_ARGS adds arguments to the configure step."""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = pathlib.Path(__file__).resolve().parent


def version():
    """The version of project(convmat VERSION ...) in CMakeLists.txt."""
    text = (ROOT / "CMakeLists.txt").read_text()
    return re.search(r"project\(convmat VERSION ([0-9.]+)", text).group(1)


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures (unless CONVMAT_CMAKE_BUILD_DIR names a configured build),
    builds the target convmat_python and copies the module into place."""

    def build_extension(self, ext):
        given = os.environ.get("CONVMAT_CMAKE_BUILD_DIR")
        build = pathlib.Path(given).resolve() if given else pathlib.Path(self.build_temp).resolve() / "cmake"
        if not given:
            arguments = ["-DCMAKE_BUILD_TYPE=Release", f"-DPython_EXECUTABLE={sys.executable}",
                         "-DCONVMAT_BUILD_PYTHON=ON", "-DCONVMAT_BUILD_TESTS=OFF", "-DCONVMAT_BUILD_EXAMPLES=OFF",
                         "-DCONVMAT_BUILD_CLI=OFF", "-DCONVMAT_BUILD_ONNX=OFF", "-DCONVMAT_BUILD_PETSC=OFF",
                         "-DCONVMAT_TEST_CONSUMERS=OFF"]
            try:  # pybind11 from pip (an online build) has its CMake files inside the package
                import pybind11
                arguments.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
            except ImportError:
                pass  # Debian's pybind11-dev: CMake finds it by itself
            arguments += shlex.split(os.environ.get("CONVMAT_CMAKE_ARGS", ""))
            subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), *arguments], check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        print(f"convmat: building the extension in {build} with {jobs} jobs (a few minutes on 2 cores)", flush=True)
        subprocess.run(["cmake", "--build", str(build), "--target", "convmat_python", "-j", jobs], check=True)
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        built = build / "python" / "convmat" / f"_convmat{suffix}"
        if not built.exists():
            sys.exit(f"convmat: the build made no {built.name} in {built.parent}: was it configured for "
                     f"{sys.executable}?")
        target = pathlib.Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, target)


setup(version=version(), ext_modules=[CMakeExtension("convmat._convmat")], cmdclass={"build_ext": CMakeBuild})
