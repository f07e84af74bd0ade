"""setuptools hook: a wheel ships configs/ and tools/ inside the package, at dcal_plugin/.mim/ (OpenMMLab's layout)."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ('configs', 'tools')  # as dcal_plugin/resources.py finds them


class BuildPyWithConfigsAndTools(build_py):
    """``build_py`` that also copies ``configs/`` and ``tools/`` to ``dcal_plugin/.mim/`` in the build tree.

    An editable install reads them in place (dcal_plugin/resources.py), so it copies nothing.
    """

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for name in SHIPPED:
            target = Path(self.build_lib, 'dcal_plugin', '.mim', name)
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


setup(cmdclass={'build_py': BuildPyWithConfigsAndTools})
