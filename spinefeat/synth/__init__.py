"""Synthetic lumbar spine studies written as real DICOM files in the exact RSNA layout.

A study is an analytic 3-D phantom defined in spine-local coordinates and
rendered through real DICOM geometry, so every series of a study agrees in
patient space exactly as a real study does:

* ``u`` (mm): lateral, ``+`` towards the patient's left (LPS +x);
* ``v`` (mm): antero-posterior, ``0`` on the posterior wall of the vertebral
  bodies, ``+`` posterior;
* ``s`` (mm): along the spine, ``+`` inferior, following a circular lordotic
  arc so that discs tilt progressively as in real spines.

Severity is rendered, not only written: each (condition, level) has a latent
narrowing fraction ``f`` in [0, 1) drawn from a Gaussian copula whose margins
are the real class frequencies of train.csv (``data/label_stats.json``); the
dural sac area at the disc is ``(1 - f)`` of the patient's own normal (Lurie
thirds), the foraminal fat keyhole shrinks around the root and finally
deforms it (Lee), and the lateral recess closes (Bartynski). A small fraction
of labels disagrees with the rendered grade near grade boundaries, to mimic
reader disagreement.

The truth sidecar (``truth/``) keeps the latent values, the true grades and
the true measurements in mm, plus the labels and coordinates of the test
split.

The package, stage by stage:

* :mod:`.latents`: the latent narrowing, the rendered grade and the label;
* :mod:`.anatomy`: the phantom (frame, narrowing geometry) and its draw;
* :mod:`.codes` and :mod:`.tissue`: which tissue and region is at a point;
* :mod:`.acquisition`: the series' stacks, spacing, obliquity and instance order;
* :mod:`.rendering`: a slice's signal (contrast, blur, coil, noise);
* :mod:`.dicom_writer`: a slice as a DICOM file;
* :mod:`.truth`: the label points and the true measurements;
* :mod:`.cohort`: one study drawn, rendered and written; a cohort and its CSVs.
"""

from .acquisition import SeriesPlan, plan_study
from .anatomy import LUMBAR_DISC0, VERTEBRAE, Phantom, make_phantom
from .codes import (AIR, ANNULUS, CORTEX, CSF, EPIFAT, FAT, FORAMEN_L, FORAMEN_R, JOINT, LIGAMENT, MARROW, MUSCLE,
                    NERVE, NUCLEUS, POST_BONE, RECESS_FAT, RECESS_L, RECESS_R, REGIONS, SAC, TISSUES, VESSEL, VISCERA)
from .cohort import StudyResult, draw_study, study_phantom, synth_cohort, synth_study
from .latents import GRADE_BANDS, READER_NOISE, draw_latents, label_stats
from .rendering import CONTRAST, render_slice
from .tissue import tissue, tissue_local
from .truth import label_points, true_measurements

__all__ = [
    "AIR", "ANNULUS", "CONTRAST", "CORTEX", "CSF", "EPIFAT", "FAT", "FORAMEN_L", "FORAMEN_R", "GRADE_BANDS", "JOINT",
    "LIGAMENT", "LUMBAR_DISC0", "MARROW", "MUSCLE", "NERVE", "NUCLEUS", "POST_BONE", "READER_NOISE", "RECESS_FAT",
    "RECESS_L", "RECESS_R", "REGIONS", "SAC", "TISSUES", "VERTEBRAE", "VESSEL", "VISCERA", "Phantom", "SeriesPlan",
    "StudyResult", "draw_latents", "draw_study", "label_points", "label_stats", "make_phantom", "plan_study",
    "render_slice", "study_phantom", "synth_cohort", "synth_study", "tissue", "tissue_local", "true_measurements",
]
