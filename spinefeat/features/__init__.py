"""Feature registry: every column `<region>_<family>_<name>` with a definition and a unit.

Families live in their own modules (:mod:`.texture`); shape measurements come
from :mod:`spinefeat.segment` and are registered here from their keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class Feature:
    name: str
    definition: str
    unit: str


REGISTRY: dict[str, Feature] = {}


def register(name: str, definition: str, unit: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"feature names are [a-z0-9_]: {name!r}")
    REGISTRY[name] = Feature(name, definition, unit)
    return name


def _unit(key: str) -> str:
    for suffix, unit in (("_mm2", "mm2"), ("_mm", "mm"), ("_fraction", "1"), ("_ratio", "1")):
        if key.endswith(suffix):
            return unit
    return "1"


SHAPE_DEFINITIONS = {
    "canal_ax": ("dural sac on the axial T2 slice at the level (convex hull of its CSF)", {
        "area_mm2": "cross-sectional area",
        "csf_area_mm2": "cross-sectional area of its CSF: area times the share that is bright CSF (rootlets and "
                        "grey tissue inside the sac left out; 0 when it holds no CSF)",
        "ap_diameter_mm": "antero-posterior extent (direction from the orientation tags)",
        "transverse_diameter_mm": "left-right extent (direction from the orientation tags)",
        "equivalent_diameter_mm": "diameter of the circle of the same area (any orientation)",
        "feret_max_mm": "largest Feret (caliper) diameter, any orientation",
        "minor_axis_mm": "minor axis of the ellipse with the same second moments",
        "csf_fraction": "share of the sac that is bright CSF",
        "solidity": "CSF area over its convex hull (low when rootlets clump)",
        "width_front_mm": "width across (direction from the orientation tags) at 0.2 of its AP extent from its front",
        "width_middle_mm": "width across at the middle of its AP extent",
        "width_back_mm": "width across at 0.8 of its AP extent from its front",
        "back_to_front_width": "width near its back over width near its front (low: a triangle with its apex at "
                               "the back, as the posterior epidural fat)"}),
    "canal_sag": ("CSF column on the sagittal T2 slice of the point", {
        "ap_width_mm": "AP width at the disc", "ap_width_above_mm": "AP width 17 mm above",
        "ap_width_below_mm": "AP width 17 mm below", "width_ratio": "width at the disc over the mean of above and below"}),
    "foramen": ("foraminal fat keyhole on the sagittal T1 slice of the point", {
        "area_mm2": "area (fat and root)", "fat_area_mm2": "area of its fat (the pieces around the root)",
        "fat_within_mm2": "area of all fat within the keyhole ellipse (semi-axes 11 mm cranio-caudal, 7 mm antero-posterior) around the point",
        "height_mm": "cranio-caudal extent (directions from the orientation tags)",
        "width_mm": "antero-posterior extent (directions from the orientation tags)",
        "narrowest_width_mm": "narrowest AP width over its cranio-caudal middle", "fat_fraction": "share that is bright fat",
        "root_area_mm2": "area of the dark root inside", "fat_up_mm": "fat above the root",
        "fat_down_mm": "fat below the root", "fat_front_mm": "fat in front of the root",
        "fat_back_mm": "fat behind the root", "min_fat_mm": "thinnest fat around the root",
        "n_directions_lost": "directions (of 4) with fat under 1 mm (Lee)",
        "fat_level": "brightest tissue within 4 mm over the series' 99.5th percentile",
        "feret_max_mm": "largest Feret (caliper) diameter, any orientation",
        "major_axis_mm": "major axis of the ellipse with the same second moments",
        "minor_axis_mm": "minor axis of the ellipse with the same second moments"}),
    "recess": ("bright space of the lateral recess on the axial T2 slice of the point (each the mean over the "
               "point and the 4 points 3 mm in front of, behind, lateral and medial of it)", {
        "area_mm2": "area within a 16 mm crop",
        "depth_mm": "antero-posterior depth through the point (direction from the orientation tags)",
        "lateral_extent_mm": "medial-lateral extent through the point (direction from the orientation tags)",
        "csf_fraction": "bright share",
        "lf_thickness_mm": "dark band (ligamentum flavum, facet) behind the recess",
        "dark_fraction": "share of the crop darker than the half-maximum",
        "free_space_mm": "bright length (above half the 16 mm crop's 1st-99.5th percentile range) within 6 mm of "
                         "the point, mean of 7 rays from front through lateral to back (directions from the "
                         "orientation tags)",
        "free_space_front_mm": "the same, mean of the rays 90 and 60 deg towards the front",
        "free_space_lateral_mm": "the same, mean of the rays within 30 deg of lateral",
        "free_space_back_mm": "the same, mean of the rays 60 and 90 deg towards the back",
        "free_space_medial_mm": "the same, mean of the rays within 30 deg of medial (towards the sac)",
        "wall_mm": "distance from the point to the first pixel under 0.2 of a 24 mm crop's 1st-99.5th "
                   "percentile range (facet bone, ligamentum flavum: the recess's wall), within 7.5 mm, mean of 6 "
                   "rays from 60 deg towards the front through lateral to the back (directions from the "
                   "orientation tags)",
        "wall_front_mm": "the same, mean of the rays 60 and 30 deg towards the front",
        "wall_lateral_mm": "the same, mean of the rays lateral and 30 deg towards the back",
        "wall_back_mm": "the same, mean of the rays 60 and 90 deg towards the back"}),
}


def shape_name(region: str, key: str) -> str:
    return f"{region}_shape_{key}"


for _region, (_what, _keys) in SHAPE_DEFINITIONS.items():
    for _key, _definition in _keys.items():
        register(shape_name(_region, _key), f"{_definition}, {_what}", _unit(_key))
    register(f"{_region}_quality_flag", f"segmentation quality of the {_region} region: 0 failed, 1 weak, 2 found", "1")

register("context_level_index", "disc level, 0 = L1/L2 .. 4 = L5/S1", "1")
register("context_side", "+1 left, -1 right, 0 for the spinal canal", "1")

#: Shape features compared within the patient (``_rel_study``) and between sides (``_rel_side``).
RELATIVE = {
    "spinal_canal_stenosis": [shape_name("canal_ax", "area_mm2"), shape_name("canal_ax", "ap_diameter_mm"),
                              shape_name("canal_sag", "ap_width_mm")],
    "neural_foraminal_narrowing": [shape_name("foramen", k) for k in ("area_mm2", "fat_area_mm2", "height_mm", "width_mm",
                                                                      "min_fat_mm")],
    "subarticular_stenosis": [shape_name("recess", k) for k in ("area_mm2", "depth_mm", "lateral_extent_mm")]
    + ["recess_profile_point"],
}
for _group, _names in RELATIVE.items():
    for _n in _names:
        register(f"{_n}_rel_study", f"{_n} over its median across the study's levels (and sides)", "1")
        if _group != "spinal_canal_stenosis":
            register(f"{_n}_rel_side", f"{_n} over the same measurement on the other side at this level", "1")


#: Foramen measurements read against the same study's other levels, as a reader compares them (and the
#: boosted trees cannot: each row is graded alone): the study's median over its foramina, this level's rank
#: among its side's levels (0-1, 1 = largest), and the difference to the level above and below on its side.
STUDY_CONTEXT = {
    "neural_foraminal_narrowing": [shape_name("foramen", k) for k in ("fat_area_mm2", "height_mm", "fat_level")]
    + ["foramen_profile_ring_0_1p5mm", "foramen_profile_ring_1p5_3mm", "foramen_profile_peak_6mm",
       "foramen_profile_centre_to_peak"],
}
for _group, _names in STUDY_CONTEXT.items():
    for _n in _names:
        _u = _unit(_n)
        register(f"{_n}_study_median", f"median of {_n} over the study's foramina (both sides)", _u)
        register(f"{_n}_study_rank", f"rank of {_n} among the levels of its side in the study (0-1, 1 = largest)", "1")
        register(f"{_n}_minus_above", f"{_n} minus the same measurement one level up on the same side", _u)
        register(f"{_n}_minus_below", f"{_n} minus the same measurement one level down on the same side", _u)


def table():
    """The registry as rows ``(name, unit, definition)``."""
    return [(f.name, f.unit, f.definition) for f in sorted(REGISTRY.values(), key=lambda f: f.name)]
