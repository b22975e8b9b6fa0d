"""``import auxfn.jslds`` is light (no torch) and its lazy public names are the classes and functions."""

from __future__ import annotations

import subprocess
import sys


def test_import_does_not_load_torch_and_names_resolve():
    code = (
        "import sys, auxfn.jslds as j, auxfn.jslds.cli\n"
        "assert 'torch' not in sys.modules, 'torch imported eagerly'\n"
        "from auxfn.jslds import JSLDS, GRUCell, jslds_losses, FlipFlopTask\n"
        "assert JSLDS.__module__ == 'auxfn.jslds.model' and GRUCell.__module__ == 'auxfn.jslds.cells'\n"
        "assert jslds_losses.__module__ == 'auxfn.jslds.losses' and isinstance(FlipFlopTask, type)\n"
        "assert sorted(j.__all__) == j.__all__ and all(getattr(j, n) is not None for n in j.__all__)\n"
        "try:\n    j.no_such_name\nexcept AttributeError as e:\n    assert 'no_such_name' in str(e)\n"
        "else:\n    raise AssertionError('missing name did not raise')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
