"""`make demo`'s script end to end, at a small size."""
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_and_writes_heat_maps(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'demo.py'), '--out', str(tmp_path), '--img-size', '224',
         '--num-images', '2'], capture_output=True, text=True, timeout=600, check=True)
    assert 'loss_sa' in result.stdout and 'loss_pwca' in result.stdout and 'PWCA not run' in result.stdout
    assert 'patch grid (14, 14)' in result.stdout
    for index in range(2):
        with Image.open(tmp_path / f'rollout_{index}.png') as picture:
            assert picture.format == 'PNG' and picture.size == (3 * 224 + 8, 224)
