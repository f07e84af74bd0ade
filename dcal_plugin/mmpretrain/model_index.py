"""The shipped FGVC configs in mmpretrain's ``ModelHub``: ``list_models('*dcal*')`` lists them, ``get_model`` builds."""
from mmpretrain.apis import ModelHub

from ..resources import shipped_dir

METAFILE = 'metafile.yml'  # under configs/: mmpretrain's metafile format, one entry per FGVC config


def register_model_index() -> None:
    """Register ``configs/metafile.yml`` with mmpretrain's ``ModelHub`` (once per process), its configs beside it."""
    configs = shipped_dir('configs')
    if not ModelHub.has('dcal_deit-tiny_cub'):
        ModelHub.register_model_index(configs / METAFILE, config_prefix=configs)
