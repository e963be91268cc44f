"""Packaging beyond pyproject.toml: the wheel carries the top-level conf/ and experiments/ as plmbench/conf and
plmbench/experiments, so that an installed plmbench (a wheel, a git URL) finds its configs and published tables
without a source tree. The repository keeps them at the top, where a reader looks for them; setuptools'
package-data reaches only files inside a package, hence this copy in build_py."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("conf", "experiments")  # read at run time through plmbench.paths.shipped()


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the repository's own folders: edits take effect
            return
        for folder in SHIPPED:
            for source in sorted(Path(folder).rglob("*.yaml")):
                target = Path(self.build_lib, "plmbench", source)
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildPy})
