"""check_images / read_image on the faults users meet: empty, cut short, not an image, corrupt inside."""
import io

import numpy as np
import pytest
from PIL import Image

from dcal_plugin.image_check import CorruptImageError, check_images, read_image, structural_problem


def jpeg_bytes(seed=0, size=48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format='JPEG')
    return buffer.getvalue()


@pytest.fixture
def images(tmp_path):
    good = jpeg_bytes()
    png = io.BytesIO()
    Image.new('RGB', (8, 8)).save(png, format='PNG')
    files = {
        'good.jpg': good, 'padded.jpg': good + b'\x00' * 100, 'good.png': png.getvalue(),
        'empty.jpg': b'', 'cut.jpg': good[:len(good) // 2], 'cut.png': png.getvalue()[:40],
        'text.jpg': b'not an image at all',
        # whole at both ends, scrambled inside: only a full decode finds it
        'scrambled.jpg': good[:20] + bytes(len(good) - 40) + good[-20:],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize('name, problem', [
    ('good.jpg', None), ('padded.jpg', None), ('good.png', None),
    ('empty.jpg', 'empty (0 bytes)'), ('cut.jpg', 'JPEG cut short'), ('cut.png', 'PNG cut short'),
    ('text.jpg', "not an image (starts with b'not an i')"),
])
def test_structural_problems(images, name, problem):
    found = structural_problem(str(images / name))
    assert found is None if problem is None else problem in found


def test_check_images_names_every_bad_file_and_the_data_set(images):
    check_images([str(images / name) for name in ('good.jpg', 'padded.jpg', 'good.png')], 'CUB train')
    bad = [str(images / name) for name in ('good.jpg', 'empty.jpg', 'cut.jpg')]
    with pytest.raises(CorruptImageError, match=r'CUB train: 2 listed image\(s\) cannot be read: .*empty\.jpg: '
                                                r'empty \(0 bytes\); .*cut\.jpg: JPEG cut short'):
        check_images(bad, 'CUB train')


def test_the_decoded_sample_finds_what_the_ends_do_not_show(images):
    paths = [str(images / 'good.jpg')] * 3 + [str(images / 'scrambled.jpg')]
    assert structural_problem(paths[-1]) is None
    with pytest.raises(CorruptImageError, match=r'scrambled\.jpg'):
        check_images(paths, 'VeRi-776 train', decoded_sample=4)


@pytest.mark.parametrize('name', ['empty.jpg', 'cut.jpg', 'text.jpg', 'scrambled.jpg'])
def test_read_image_names_the_file(images, name):
    with pytest.raises(CorruptImageError, match=rf'cannot read image .*{name}: '):
        read_image(str(images / name))
    assert read_image(str(images / 'good.jpg')).mode == 'RGB'
