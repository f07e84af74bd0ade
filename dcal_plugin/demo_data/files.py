"""Byte-deterministic writers for the files of the dataset layouts (JPEG, text lists, MATLAB 5 .mat)."""
import io
from pathlib import Path
from typing import Any, Dict, Iterable

import numpy as np
import scipy.io
from PIL import Image

MAT_HEADER_TEXT = b'MATLAB 5.0 MAT-file, Platform: posix, written by dcal_plugin.demo_data'
MAT_HEADER_TEXT_BYTES = 116  # the MATLAB 5 header's descriptive text field; scipy puts a timestamp there


def save_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    """Write image (H, W, 3) uint8 as a baseline JPEG with fixed quality and no chroma subsampling."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format='JPEG', quality=quality, subsampling=0)


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write one line per item, each ending in a newline (no blank trailing line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(f'{line}\n' for line in lines), encoding='utf-8')


def save_mat(path: Path, variables: Dict[str, Any]) -> None:
    """Write a MATLAB 5 .mat file via scipy, with the creation timestamp replaced by fixed text."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, format='5')
    data = bytearray(buffer.getvalue())
    data[:MAT_HEADER_TEXT_BYTES] = MAT_HEADER_TEXT.ljust(MAT_HEADER_TEXT_BYTES, b' ')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
