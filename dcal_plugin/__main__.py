"""``python -m dcal_plugin COMMAND ...``: the same as the ``dcal`` command."""
import sys

from .cli import main

sys.exit(main())
