"""On-disk layouts of the official data sets: folders, list files and file names, as their readers expect them."""
import re
from dataclasses import dataclass

# CUB-200-2011: CUB_200_2011/images/<NNN.Class>/*.jpg and the 1-based id files below.
CUB_FOLDER = 'CUB_200_2011'
CUB_IMAGE_DIR = 'images'
CUB_IMAGES = 'images.txt'
CUB_LABELS = 'image_class_labels.txt'
CUB_SPLIT = 'train_test_split.txt'
CUB_CLASSES = 'classes.txt'
CUB_BOXES = 'bounding_boxes.txt'

# Stanford Cars, all-in-one release: Stanford_Cars/car_ims/NNNNNN.jpg and cars_annos.mat.
CARS_FOLDER = 'Stanford_Cars'
CARS_IMAGE_DIR = 'car_ims'
CARS_ANNOTATIONS = 'cars_annos.mat'

# FGVC-Aircraft 2013b: fgvc-aircraft-2013b/data/images/NNNNNNN.jpg, variants.txt, images_box.txt and the lists
# images_variant_<list>.txt, each split's images listed in its own list and (train, val) in trainval.
AIRCRAFT_FOLDER = 'fgvc-aircraft-2013b'
AIRCRAFT_DATA_DIR = 'data'
AIRCRAFT_IMAGE_DIR = 'images'
AIRCRAFT_VARIANTS = 'variants.txt'
AIRCRAFT_BOXES = 'images_box.txt'
AIRCRAFT_VARIANT_LIST = 'images_variant_{}.txt'
AIRCRAFT_LISTS = ('train', 'val', 'trainval', 'test')
AIRCRAFT_SPLIT_LISTS = {'train': ('train', 'trainval'), 'val': ('val', 'trainval'), 'test': ('test',)}

# VeRi-776: VeRi/image_{train,query,test}/VVVV_cCCC_FFFFFFFF_N.jpg (vehicle id, 1-based camera id, frame, index),
# listed in name_{train,query,test}.txt; the camera field has 3 digits.
VERI_FOLDER = 'VeRi'
VERI_IMAGE_DIRS = {'train': 'image_train', 'query': 'image_query', 'gallery': 'image_test'}
VERI_NAME_LISTS = {'train': 'name_train.txt', 'query': 'name_query.txt', 'gallery': 'name_test.txt'}
VERI_FILE_PATTERN = 'VVVV_cCCC_FFFFFFFF_N.jpg'
VERI_FILE_NAME = '{vehicle:04d}_c{camera:03d}_{frame:08d}_{index}.jpg'
VERI_FILE_REGEX = re.compile(r'^(?P<vehicle>\d+)_c(?P<camera>\d+)_(?P<frame>\d+)_(?P<index>\d+)\.jpg$')
VERI_MAX_CAMERAS = 999

# MSMT17 V1: msmt17/MSMT17_V1/{train,test}/PPPP/PPPP_SSS_CC_<date><daytime>_FFFF_0.jpg (pid, shot, 1-based
# camera id, capture time, frame), listed as '<PPPP/name> <pid>' in list_{train,val,query,gallery}.txt; the camera
# field has 2 digits.
MSMT_FOLDER = 'msmt17'
MSMT_MAIN_DIR = 'MSMT17_V1'
MSMT_IMAGE_DIRS = {'train': 'train', 'val': 'train', 'query': 'test', 'gallery': 'test'}
MSMT_LISTS = {'train': 'list_train.txt', 'val': 'list_val.txt', 'query': 'list_query.txt',
              'gallery': 'list_gallery.txt'}
MSMT_FILE_NAME = '{pid:04d}/{pid:04d}_{shot:03d}_{camera:02d}_{daytime}_{frame:04d}_0.jpg'
MSMT_MAX_CAMERAS = 99

# Market-1501 and DukeMTMC-reID, one structure: <folder>/<main_dir>/{bounding_box_train,query,bounding_box_test}/
# with the person id first and the 1-based camera as c<digit> in each file name (torchreid's readers parse
# '([-\d]+)_c(\d)'); queries are not repeated in the gallery.
BOUNDING_BOX_DIRS = {'train': 'bounding_box_train', 'query': 'query', 'gallery': 'bounding_box_test'}


@dataclass(frozen=True)
class BoundingBoxLayout:
    """A Market-1501-style release: folder, main folder inside it, file-name format, largest camera id."""

    folder: str
    main_dir: str
    file_name: str  # format fields: pid, camera (1-based), frame
    max_cameras: int


# Market-1501: market1501/Market-1501-v15.09.15/…/PPPP_cCsS_FFFFFF_NN.jpg, cameras c1..c6
MARKET1501 = BoundingBoxLayout('market1501', 'Market-1501-v15.09.15', '{pid:04d}_c{camera}s1_{frame:06d}_01.jpg', 6)
# DukeMTMC-reID: dukemtmc-reid/DukeMTMC-reID/…/PPPP_cC_fFFFFFFF.jpg, cameras c1..c8
DUKEMTMC_REID = BoundingBoxLayout('dukemtmc-reid', 'DukeMTMC-reID', '{pid:04d}_c{camera}_f{frame:07d}.jpg', 8)

# Training images of the official releases, by the name each toolbox's reader goes by (mmpretrain's dataset types,
# torchreid's dataset names): CUB train, Stanford Cars train, FGVC-Aircraft trainval, VeRi-776 image_train, MSMT17 V1
# train (torchreid's msmt17) and train + val (msmt17_trainval, as TransReID trains), Market-1501 and DukeMTMC-reID
# bounding_box_train.
OFFICIAL_TRAIN_IMAGES = {
    'CUB': 5994, 'StanfordCars': 8144, 'FGVCAircraft': 6667,
    'veri776': 37778, 'msmt17': 30248, 'msmt17_trainval': 32621, 'market1501': 12936, 'dukemtmcreid': 16522,
}
