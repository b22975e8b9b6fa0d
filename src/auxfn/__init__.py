"""auxfn: learning with an auxiliary function.

A model is trained jointly with a second function that anchors it: a Lyapunov
function for a neural controller (``auxfn.sde_control``), an expansion-point
network for an RNN (``auxfn.jslds``), an auxiliary regression head for a JEPA
encoder (``auxfn.jepa``), an auxiliary-code agent for a main-code agent
(``auxfn.magrpo``).

Importing this package is cheap on purpose: the method subpackages are imported
on demand, and nothing here pulls in torch or transformers.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
