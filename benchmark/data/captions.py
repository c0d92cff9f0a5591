"""MaMA's structured report built from EMBED table fields (docs/protocol.md, Data).

Seven sentences, each ending with the separator ``SEP``. At training time each of age,
race, ethnicity, image type, side and view is replaced by "unknown" with probability
``mask_prob`` (0.8 in MaMA). Records missing procedure, reason, density or assessment
get no caption (``None``); the trainer counts and reports them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

SEP = "[SEP]"
BIRADS_MEANING = {
    0: "additional imaging evaluation is needed",
    1: "negative",
    2: "benign",
    3: "probably benign",
    4: "suspicious abnormality",
    5: "highly suggestive of malignancy",
    6: "known biopsy-proven malignancy",
}
DENSITY_PHRASE = {
    1: "The breasts are almost entirely fatty.",
    2: "There are scattered areas of fibroglandular density.",
    3: "The breasts are heterogeneously dense, which may obscure small masses.",
    4: "The breasts are extremely dense.",
}
LOW_SENSITIVITY = "The density may lower the sensitivity of mammography."
FINDING_PHRASE = {
    0: "An indeterminate finding needs additional evaluation",
    1: "No significant masses, calcifications, or other abnormalities are present",
    2: "A benign finding is present",
    3: "A probably benign finding is present",
    4: "A suspicious abnormality is present",
    5: "A finding highly suggestive of malignancy is present",
    6: "A known biopsy-proven malignancy is present",
}
MASS_SHAPE = {"G": "generic", "R": "round", "O": "oval", "X": "irregular", "Q": "questioned architectural distortion",
              "A": "architectural distortion", "T": "asymmetric tubular structure", "N": "intramammary lymph node",
              "B": "global asymmetry", "F": "focal asymmetry", "S": "asymmetry", "V": "developing asymmetry",
              "Y": "lymph node"}
MASS_MARGIN = {"D": "circumscribed", "U": "obscured", "M": "microlobulated", "I": "indistinct", "S": "spiculated"}
MASS_DENSITY = {"+": "high density", "=": "isodense", "-": "low density", "0": "fat-containing"}
CALC_FIND = {"A": "amorphous", "9": "benign", "H": "coarse heterogeneous", "C": "coarse popcorn-like",
             "D": "dystrophic", "E": "rim", "F": "fine-linear", "B": "fine linear-branching", "G": "generic",
             "I": "fine pleomorphic", "L": "large rod-like", "M": "milk of calcium", "J": "oil cyst",
             "K": "pleomorphic"}
CALC_DISTRI = {"G": "grouped", "S": "segmental", "R": "regional", "D": "diffuse", "L": "linear", "C": "clustered"}
MASKED_FIELDS = ("age", "race", "ethnicity", "image_type", "side", "view")


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and str(value) != ""


def finding_description(rec: Mapping) -> str:
    parts = []
    shape = MASS_SHAPE.get(str(rec.get("massshape", "")))
    if shape:
        words = [MASS_DENSITY.get(str(rec.get("massdens", "")), ""), shape]
        margin = MASS_MARGIN.get(str(rec.get("massmargin", "")))
        mass = " ".join(w for w in words if w)
        parts.append(f"a {mass} mass" + (f" with {margin} margins" if margin else "")
                     if "asymmetry" not in shape and "distortion" not in shape else f"a {shape}")
    calc = CALC_FIND.get(str(rec.get("calcfind", "")))
    if calc:
        distri = CALC_DISTRI.get(str(rec.get("calcdistri", "")))
        parts.append(f"{distri + ' ' if distri else ''}{calc} calcifications")
    return " and ".join(parts)


def embed_sentences(rec: Mapping, rng: np.random.Generator | None = None, mask_prob: float = 0.0) -> list[str] | None:
    """The seven report sentences for one image, or None if a required field is missing."""
    for key in ("study_description", "reason", "density", "birads"):
        if not _present(rec.get(key)):
            return None
    birads, density = int(rec["birads"]), int(rec["density"])
    side = {"L": "left", "R": "right"}.get(str(rec.get("laterality", "")), "")
    fields = {"age": str(rec.get("age", "")), "race": str(rec.get("race", "")),
              "ethnicity": str(rec.get("ethnicity", "")), "image_type": str(rec.get("image_type", "")),
              "side": side, "view": str(rec.get("view", ""))}
    for key in MASKED_FIELDS:
        if not fields[key] or (rng is not None and rng.random() < mask_prob):
            fields[key] = "unknown"
    age = fields["age"]
    if age != "unknown":
        age = f"{float(age):.0f}"
    composition = DENSITY_PHRASE[density] + (f" {LOW_SENSITIVITY}" if density >= 3 else "")
    finding = FINDING_PHRASE[birads]
    description = finding_description(rec) if birads != 1 else ""
    finding += f": {description}." if description else "."
    return [
        f"Procedure reported: {rec['study_description']}.",
        f"Reason for procedure: {rec['reason']}.",
        f"Patient info: race {fields['race']}, ethnicity {fields['ethnicity']}, age {age}.",
        f"Image info: {fields['image_type']} image, {fields['side']} breast, {fields['view']} view.",
        f"Breast composition: {composition}",
        f"Findings: {finding}",
        f"Impressions: BI-RADS Category {birads}: {BIRADS_MEANING[birads]}. "
        f"Overall assessment: {BIRADS_MEANING[birads]}.",
    ]


def metadata_prefix(rec: Mapping) -> str:
    """MaMA's zero-shot prompt prefix: the image's own procedure and reason sentences.

    These nearly determine BI-RADS (screening exams carry 0 to 2, diagnostic 3 to 6), so
    prompts with this prefix leak the answer; the default zero-shot protocol omits it and
    the prefixed protocol is reported as its own row."""
    sentences = embed_sentences(rec)
    if sentences is None:
        return ""
    return join_sentences(sentences[:2]) + " "


def prefixed_prompts(rec: Mapping, class_prompts: list[list[str]]) -> list[list[str]]:
    """Each class's prompts with ``rec``'s metadata prefix in front (MaMA's protocol)."""
    prefix = metadata_prefix(rec)
    return [[prefix + p for p in prompts] for prompts in class_prompts]


def join_sentences(sentences: list[str]) -> str:
    return " ".join(f"{s} {SEP}" for s in sentences)


def rsna_caption(rec: Mapping) -> str:
    """A caption templated from RSNA labels, in the same style (RSNA has no reports)."""
    side = {"L": "left", "R": "right"}.get(str(rec.get("laterality", "")), "unknown")
    sentences = [f"Image info: 2D image, {side} breast, {rec.get('view', 'unknown')} view."]
    if _present(rec.get("density")):
        sentences.append(f"Breast composition: {DENSITY_PHRASE[int(rec['density'])]}")
    if int(rec.get("cancer", 0)) == 1:
        sentences.append(f"Findings: {FINDING_PHRASE[5]}.")
    else:
        sentences.append(f"Findings: {FINDING_PHRASE[1]}.")
    return join_sentences(sentences)
