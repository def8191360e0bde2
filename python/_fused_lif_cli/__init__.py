"""The `fused-lif` console script, kept outside the fused_lif package.

`import fused_lif` imports TensorFlow, seconds of start-up: the package
registers its ops at import, as SavedModels need. Python runs a package's
__init__ before any of its modules, so this launcher loads fused_lif/cli.py
by its path instead; `fused-lif --help` and argument errors answer at once,
and the commands import fused_lif (after quieting TensorFlow's logging) when
they run. `python -m fused_lif` runs the same cli.py after importing the
package.
"""

import importlib.util
import os


def main(argv=None):
    """`fused_lif.cli.main(argv)`, without importing the fused_lif package first."""
    package = importlib.util.find_spec("fused_lif")  # finds it; runs no code of it
    path = os.path.join(next(iter(package.submodule_search_locations)), "cli.py")
    spec = importlib.util.spec_from_file_location("_fused_lif_cli.cli", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli.main(argv)
