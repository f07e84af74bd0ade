"""The core stands alone: importing it never needs mmengine, mmpretrain, mmcv or torchreid."""
import subprocess
import sys

import pytest

BLOCKER = '''
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'mmengine', 'mmpretrain', 'mmcv', 'torchreid'}:
            raise ImportError('blocked toolbox: ' + name)
sys.meta_path.insert(0, Blocker())
import dcal_plugin.core, dcal_plugin.demo_data, dcal_plugin.visualization
loaded = sorted(m for m in sys.modules if m.split('.')[0] in {'mmengine', 'mmpretrain', 'mmcv', 'torchreid'})
print('LOADED', loaded)
'''


@pytest.mark.slow
def test_core_imports_without_any_toolbox():
    result = subprocess.run([sys.executable, '-c', BLOCKER], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'LOADED []' in result.stdout
