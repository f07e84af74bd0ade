"""``DCALLoadImageFromFile``: mmcv's ``LoadImageFromFile`` whose failure names the file and what is wrong with it."""
from typing import Optional

from mmcv.transforms import LoadImageFromFile
from mmpretrain.registry import TRANSFORMS

from ..image_check import CorruptImageError, decode_problem


@TRANSFORMS.register_module()
class DCALLoadImageFromFile(LoadImageFromFile):
    """Load ``results['img_path']`` as mmcv does; a file that cannot be read raises ``CorruptImageError`` naming it.

    mmcv's own error for a zero-byte file is OpenCV's ``!buf.empty()``, which names no file, and
    its decoder can fail inside a worker mid-epoch; the message here says which file and why
    (empty, cut short, not an image, or the decoder's error).
    """

    def transform(self, results: dict) -> Optional[dict]:
        """mmcv's loading, its errors re-raised with the file named."""
        try:
            return super().transform(results)
        except Exception as error:
            path = results.get('img_path')
            problem = decode_problem(path) or f'{type(error).__name__}: {error}'
            raise CorruptImageError(f'cannot read image {path}: {problem}') from error
