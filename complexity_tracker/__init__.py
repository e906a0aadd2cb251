"""complexity_tracker: transformation complexity of piecewise-linear (ReLU) networks.

Implements the metrics of Ren et al., "Towards Theoretical Analysis of Transformation
Complexity of ReLU DNNs" (ICML 2022).  All complexity values are in bits.
"""

from typing import TYPE_CHECKING

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "ComplexityReport": ".metrics",
    "ComplexityTrackerError": ".errors",
    "LayerComplexity": ".metrics",
    "PackedStates": ".gating",
    "capture_gating_states": ".gating",
    "class_balanced_probe": ".metrics",
    "find_gating_modules": ".gating",
    "measure_complexity": ".metrics",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = [
    "ComplexityReport",
    "ComplexityTrackerError",
    "LayerComplexity",
    "PackedStates",
    "capture_gating_states",
    "class_balanced_probe",
    "find_gating_modules",
    "measure_complexity",
    "__version__",
]

if TYPE_CHECKING:
    from .errors import ComplexityTrackerError
    from .gating import PackedStates, capture_gating_states, find_gating_modules
    from .metrics import ComplexityReport, LayerComplexity, class_balanced_probe, measure_complexity
