"""``import auxfn.sde_control`` is light (no torch) and its lazy public names are the functions and classes."""

from __future__ import annotations

import subprocess
import sys


def test_import_does_not_load_torch_and_names_resolve():
    code = (
        "import sys, auxfn.sde_control as s\n"
        "assert 'torch' not in sys.modules, 'torch imported eagerly'\n"
        "import auxfn.sde_control.simulation, auxfn.sde_control.training, auxfn.sde_control.ito_generator\n"
        "from auxfn.sde_control import simulate, train, generator, ControlledSDE\n"
        "assert callable(simulate) and simulate.__module__ == 'auxfn.sde_control.simulation'\n"
        "assert train.__module__ == 'auxfn.sde_control.training'\n"
        "assert generator.__module__ == 'auxfn.sde_control.ito_generator'\n"
        "assert isinstance(ControlledSDE, type)\n"
        "assert sorted(s.__all__) == s.__all__ and all(getattr(s, n) is not None for n in s.__all__)\n"
        "try:\n    s.no_such_name\nexcept AttributeError as e:\n    assert 'no_such_name' in str(e)\n"
        "else:\n    raise AssertionError('missing name did not raise')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
