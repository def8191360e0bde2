"""fused-lif: leaky integrate-and-fire layers for TensorFlow/Keras whose whole
time loop (forward, and surrogate-gradient backward) runs in one fused
CPU or CUDA kernel.

    import fused_lif
    layer = fused_lif.LIFLayer(128)                 # the seed's layer, fused
    spikes = fused_lif.lif_scan(currents)           # [batch, time, neurons]
    spikes = fused_lif.reference.lif_scan(currents) # the tf.while_loop ground truth
"""

from . import reference
from .layer import IMPLEMENTATIONS, LIFLayer, MinValue
from .ops import FusedOpUnavailableError, is_available, lif_scan

__version__ = "0.1.0"

__all__ = [
    "FusedOpUnavailableError",
    "IMPLEMENTATIONS",
    "LIFLayer",
    "MinValue",
    "is_available",
    "lif_scan",
    "reference",
]
