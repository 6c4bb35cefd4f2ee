"""Find the 25 condition-level points without labels: classical features, a learned detector, a chain model.

1. Sagittal T2: the mid-sagittal slice is the one with the most CSF in its
   elongated bright column; a curve ``col = f(row)`` is fitted through the
   column (pieces broken by a tight canal joined along the curve), continued
   straight past its ends, and sampled every millimetre.
2. At each sample, the vertebral column anterior to the canal, read along the
   curve's normals (straightened) and scaled by its own median and
   interquartile range (no scanner or sequence sets the scale), near the
   sample and up to 64 mm along the curve (is there a disc above and below:
   the sacrum has none), its edges (the endplates), the canal's width and
   direction and the distance to the end of the CSF, and beside them the
   image's own intensities (scaled per image) and the height in the image,
   feed a LightGBM classifier: background or one of the five discs. It is
   trained on each sample also with the contrast flipped: discs are bright
   on a healthy T2, dark on a degenerated one.
3. A chain model picks exactly five ordered samples, L1/L2 at the top, by
   dynamic programming over the detector's log-probabilities plus spacing
   priors learned from the training coordinates: no level is skipped or
   doubled. Each disc then sits at the centre of the plateau of p(any disc). A
   field of view that ends at L5/S1, an L5/S1 not clearly seen or a disc
   below it (transitional anatomy) is flagged and caps the study's confidence.
4. The dural sac centres on the axial T2 slices through the discs give the
   midline at each level (a Theil-Sen line along the spine: the sagittal plane
   may be tilted); each spinal point goes on the sagittal slice nearest to it.
5. Foramina (sagittal T1) are placed from the midline points through
   patient-space offsets learned from the training labels, on the slice chosen by
   patient position (never instance order), then moved to the middle of the run of
   slices showing their fat keyhole and to the keyhole's centre.
6. Recesses (axial T2): the slice nearest the level's disc point over every axial
   stack; the dural sac searched for around the disc point (bright, round, on the
   midline: :func:`find_sac`); each recess from the sac's centre and antero-lateral
   corner by a rule learned from the training labels (:func:`fit_recess_rule`), with
   the sac fit's confidence; a level without a sac from the other levels' sacs
   (:func:`place_study_recesses`).

The detector is a LightGBM text model; everything else is JSON.
"""

from .canal import (
           Canal,
           body_depth_mm,
           csf_column,
           fit_canal,
           follow_column,
           mid_sagittal,
)
from .chain import chain, disc_centre_mm
from .check import confidence_auc, point_errors, summarize_errors
from .detector import (
           Localizer,
           count_discs,
           disc_samples,
           fit_detector,
           gap_stats,
           rsna_samples,
           train_localizer,
           train_localizers,
)
from .placement import (
           RECESSES,
           SacFit,
           find_sac,
           fit_recess_rule,
           middle_of_run,
           midline_offsets_mm,
           place_foramen,
           place_level_recesses,
           place_recesses,
           place_study_recesses,
           sac_centre,
)
from .study import COORD_COLUMNS, localize, localize_study

__all__ = ["COORD_COLUMNS", "Canal", "Localizer", "RECESSES", "body_depth_mm", "chain", "confidence_auc",
           "count_discs", "csf_column", "disc_centre_mm", "disc_samples", "fit_canal", "fit_detector", "follow_column",
           "gap_stats", "localize", "localize_study", "mid_sagittal", "middle_of_run", "midline_offsets_mm",
           "place_foramen", "place_level_recesses", "place_recesses", "place_study_recesses", "point_errors", "SacFit",
           "find_sac", "fit_recess_rule", "rsna_samples", "sac_centre", "summarize_errors", "train_localizer", "train_localizers"]
