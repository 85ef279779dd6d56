"""dltk_mm: multi-modal learning from unpaired CT and MRI in TensorFlow 2 / Keras 3.

A reproduction of V. Valindria et al., "Multi-Modal Learning from Unpaired Images: Application to
Multi-Organ Segmentation in CT and MRI", IEEE WACV 2018.

Importing the package sets TensorFlow's environment defaults (oneDNN CPU kernels on), see
:mod:`dltk_mm.runtime`; import it before TensorFlow.
"""

from dltk_mm.runtime import apply_environment_defaults

apply_environment_defaults()

__version__ = "0.1.0"
