import numpy as np

from benchmark.data.captions import SEP, embed_sentences, join_sentences

REC = {"study_description": "MG Screening Bilateral", "reason": "screening", "age": "56.2",
       "race": "Caucasian or White", "ethnicity": "Non-Hispanic or Latino", "image_type": "2D",
       "laterality": "L", "view": "CC", "density": 3, "birads": 4, "massshape": "X", "massmargin": "S",
       "massdens": "+", "calcfind": "I", "calcdistri": "G"}


def test_seven_sentences_in_order_with_findings():
    sentences = embed_sentences(REC)
    assert len(sentences) == 7
    assert sentences[0] == "Procedure reported: MG Screening Bilateral."
    assert sentences[1] == "Reason for procedure: screening."
    assert "age 56" in sentences[2] and "left breast, CC view" in sentences[3]
    assert "heterogeneously dense" in sentences[4] and "sensitivity" in sentences[4]
    assert "irregular mass with spiculated margins" in sentences[5]
    assert "grouped fine pleomorphic calcifications" in sentences[5]
    assert sentences[6].startswith("Impressions: BI-RADS Category 4: suspicious abnormality.")
    assert join_sentences(sentences).count(SEP) == 7


def test_low_density_has_no_sensitivity_sentence():
    assert "sensitivity" not in embed_sentences(REC | {"density": 2})[4]


def test_missing_required_field_gives_no_caption():
    for key in ("study_description", "reason", "density", "birads"):
        assert embed_sentences(REC | {key: None}) is None
        assert embed_sentences(REC | {key: float("nan")}) is None


def test_metadata_masking_rate_is_about_point_eight():
    rng = np.random.default_rng(0)
    masked = [embed_sentences(REC, rng, 0.8)[3].count("unknown") for _ in range(500)]
    assert np.mean(masked) / 3 == np.clip(np.mean(masked) / 3, 0.75, 0.85)
    assert embed_sentences(REC, rng, 0.0)[3].count("unknown") == 0


def test_prefixed_prompts_carry_the_images_own_metadata():
    from benchmark.data.captions import metadata_prefix, prefixed_prompts

    prefix = metadata_prefix(REC | {"reason": "diagnostic"})
    assert prefix.startswith("Procedure reported: MG Screening Bilateral. [SEP] Reason for procedure: diagnostic.")
    prompts = prefixed_prompts(REC, [["a", "b"], ["c"]])
    assert prompts == [[metadata_prefix(REC) + "a", metadata_prefix(REC) + "b"], [metadata_prefix(REC) + "c"]]
    assert metadata_prefix(REC | {"density": None}) == ""


def test_rsna_caption_is_templated_from_labels():
    from benchmark.data.captions import rsna_caption

    text = rsna_caption({"laterality": "R", "view": "MLO", "density": 4, "cancer": 1})
    assert "right breast, MLO view" in text and "extremely dense" in text and "malignancy" in text
    assert "No significant masses" in rsna_caption({"laterality": "L", "view": "CC", "density": None, "cancer": 0})


def test_label_report_states_each_finding_of_the_breast_or_no_finding():
    from benchmark.data.label_report import label_report

    rec = {"laterality": "R", "massshape": "O", "calcfind": ""}
    report = label_report(rec)  # rng None: the first template of each sentence, in order
    assert report == "there is a mass in the right breast. there are no suspicious calcifications seen."
    assert label_report({"laterality": "L"}) == "no mammographic evidence of malignancy."
    drawn = {label_report(rec | {"calcfind": "A"}, np.random.default_rng(seed)) for seed in range(40)}
    assert len(drawn) > 5  # templates and sentence order drawn at random
    assert all("mass" in r and "calcifications" in r and "right" in r and "no " not in r for r in drawn)
