"""fused-lif: leaky integrate-and-fire layers for TensorFlow/Keras whose whole
time loop (forward, and surrogate-gradient backward) runs in one fused
CPU or CUDA kernel.

    import fused_lif
    layer = fused_lif.LIFLayer(128)                 # the seed's layer, fused
    spikes = fused_lif.LIF()(currents)              # LIF neurons on [batch, time, ...]
    conv = fused_lif.TimeFolded(keras.layers.Conv2D(16, 3))  # any layer, time folded
    spikes = fused_lif.lif_scan(currents)           # [batch, time, neurons]
    spikes = fused_lif.reference.lif_scan(currents) # the tf.while_loop ground truth
    current = fused_lif.spike_matmul(spikes2d, w)   # binary spikes @ w, zeros skipped
    spikes = fused_lif.recurrent_lif_scan(currents, recurrent_kernel)  # s[t-1] @ R fused in
    model = fused_lif.create_snn_model(784, 128, 10, 20, training="dfa")  # DFAModel
"""

from . import reference
from .dfa import DFAModel
from .encoding import rate_encode, rate_encode_tf
from ._library import IMPLEMENTATIONS, FusedOpUnavailableError, is_available
from .folding import TimeFolded
from .layer import LIFLayer
from .neurons import LIF, MinValue
from .losses import spike_categorical_accuracy, spike_categorical_crossentropy
from .models import create_snn_model
from .ops import lif_scan
from .recurrent import recurrent_lif_scan
from .spikes import spike_density, spike_matmul

__version__ = "0.2.0"

# Register the ops with TensorFlow now, so that graphs that use them (a
# SavedModel, a .keras file) load after a plain `import fused_lif`. A library
# that cannot load is reported when the fused op is used, not here.
is_available()

__all__ = [
    "DFAModel",
    "FusedOpUnavailableError",
    "IMPLEMENTATIONS",
    "LIF",
    "LIFLayer",
    "MinValue",
    "create_snn_model",
    "is_available",
    "lif_scan",
    "rate_encode",
    "rate_encode_tf",
    "recurrent_lif_scan",
    "reference",
    "spike_categorical_accuracy",
    "spike_categorical_crossentropy",
    "spike_density",
    "spike_matmul",
    "TimeFolded",
]
