"""Region segmenters: image + seed + pixel spacing -> mask, measurements in mm, quality flag.

Pure functions; a hard image gives a ``failed`` or ``weak`` flag and NaN
measurements, never an exception.
"""

from .canal import measure_sagittal_canal, segment_axial_sac
from .common import FAILED, FOUND, WEAK, Segmentation
from .foramen import segment_foramen
from .recess import measure_recess

__all__ = ["FAILED", "FOUND", "WEAK", "Segmentation", "measure_recess", "measure_sagittal_canal",
           "segment_axial_sac", "segment_foramen"]
