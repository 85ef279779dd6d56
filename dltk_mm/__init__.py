"""dltk_mm: multi-modal learning from unpaired CT and MRI in TensorFlow 2 / Keras 3.

A reproduction of V. Valindria et al., "Multi-Modal Learning from Unpaired Images: Application to
Multi-Organ Segmentation in CT and MRI", IEEE WACV 2018.
"""

__version__ = "0.1.0"
