"""JSLDS: RNNs co-trained with a Jacobian switching linear dynamical system (Smith et al. 2021)."""

from auxfn.jslds.cells import GRUCell, TorchCell, VanillaRNNCell, cell_jacobians, cell_jvp
from auxfn.jslds.expansion import ExpansionNet
from auxfn.jslds.losses import LossWeights, jslds_losses
from auxfn.jslds.model import JSLDS, StaticChannels, Trajectories
from auxfn.jslds.tasks import ContextIntegrationTask, FlipFlopTask

__all__ = [
    "JSLDS",
    "ContextIntegrationTask",
    "ExpansionNet",
    "FlipFlopTask",
    "GRUCell",
    "LossWeights",
    "StaticChannels",
    "TorchCell",
    "Trajectories",
    "VanillaRNNCell",
    "cell_jacobians",
    "cell_jvp",
    "jslds_losses",
]
