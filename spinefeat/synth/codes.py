"""Tissue and region codes of the phantom (what each pixel is, and which label point it belongs to)."""

from __future__ import annotations

AIR, FAT, MUSCLE, MARROW, CORTEX, ANNULUS, NUCLEUS, CSF, NERVE, EPIFAT, LIGAMENT, POST_BONE, VISCERA, VESSEL, \
    JOINT = range(15)
TISSUES = ("air", "fat", "muscle", "marrow", "cortex", "annulus", "nucleus", "csf", "nerve", "epidural_fat",
           "ligament", "posterior_bone", "viscera", "vessel", "joint_fluid")
#: The lateral recess's fat, drawn apart from the epidural fat (its T2 signal: :data:`.rendering.CONTRAST`).
RECESS_FAT = len(TISSUES)
TISSUES = TISSUES + ("recess_fat",)
# Region codes (what a label point marks) -------------------------------------
SAC, FORAMEN_L, FORAMEN_R, RECESS_L, RECESS_R = 1, 2, 3, 4, 5
REGIONS = {"sac": SAC, "left_foramen": FORAMEN_L, "right_foramen": FORAMEN_R,
           "left_recess": RECESS_L, "right_recess": RECESS_R}
