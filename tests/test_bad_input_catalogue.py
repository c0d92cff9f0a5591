"""The bad-input catalogue: every command's inputs, got wrong as a tired user or an
attacker would. Each case must end in one ``error:`` line naming the file, key, line or
column (exit 2), or in an exclusion with its reason; never in a traceback.

Cases run the command line in-process (``benchmark.cli.main``), against a small RSNA-format
folder preprocessed and split once per module."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark.cli import main

REPO = Path(__file__).resolve().parents[1]


def run(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stderr, stdout) of one command; an uncaught exception fails the test."""
    err, out = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue(), out.getvalue()


@pytest.fixture(scope="module")
def work(rsna_root, tmp_path_factory):
    w = tmp_path_factory.mktemp("catalogue")
    shutil.copytree(rsna_root, w / "rsna")
    config = yaml.safe_load((REPO / "config/ci.yaml").read_text())
    config["results"] = str(w / "res")
    config["data"] = {"embed": {"root": str(rsna_root.parent), "synthetic": {"patients": 10}},
                      "rsna": {"root": str(w / "rsna")}}
    config["tasks"] = [t for t in config["tasks"] if t.split("/")[0] in config["data"]]
    config["zeroshot"]["prompts"] = str(REPO / "config/prompts.yaml")
    (w / "config.yaml").write_text(yaml.safe_dump(config))
    man, spl = w / "res/cache/rsna/manifest.csv", w / "res/splits/rsna.csv"
    for argv in (["preprocess", "--dataset", "rsna", "--out-dir", str(man.parent)],
                 ["split", "--dataset", "rsna", "--manifest", str(man), "--out", str(spl)]):
        code, err, _ = run(argv + ["--config", str(w / "config.yaml")])
        assert code == 0, err
    return w


# --- builders: each returns a path inside the work folder ---------------------------------
def config_with(w: Path, name: str, change) -> str:
    config = yaml.safe_load((w / "config.yaml").read_text())
    change(config)
    path = w / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def a_file(w: Path, name: str, content) -> str:
    path = w / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def rsna_variant(w: Path, name: str, edit) -> str:
    """A config whose RSNA folder is a copy with ``edit(root)`` applied."""
    root = w / name
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(w / "rsna", root)
    edit(root)
    return config_with(w, name, lambda c: c["data"].update(rsna={"root": str(root)}))


def table_edit(fn):
    def edit(root):
        table = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
        fn(table).to_csv(root / "train.csv", index=False)
    return edit


def text_edit(fn):
    def edit(root):
        (root / "train.csv").write_bytes(fn((root / "train.csv").read_bytes()))
    return edit


def manifest_with(w: Path, name: str, fn) -> str:
    path = w / name
    fn(pd.read_csv(w / "res/cache/rsna/manifest.csv", dtype=str)).to_csv(path, index=False)
    return str(path)


def predictions_with(w: Path, name: str, fn) -> str:
    frame = pd.DataFrame({"dataset": "rsna", "task": "cancer", "protocol": "linear_probe", "fraction": "1",
                          "model": "clip", "seed": 0, "draw": 0, "image_id": ["a", "b", "c", "d"],
                          "patient_id": ["1", "1", "2", "3"], "breast_id": ["1_L", "1_R", "2_L", "3_L"],
                          "split": "test", "label": [0, 1, 0, 1], "score_0": [0.2, 0.4, 0.6, 0.1],
                          "score_1": [0.8, 0.6, 0.4, 0.9]})
    path = w / "preds" / name
    path.parent.mkdir(exist_ok=True)
    fn(frame).to_csv(path, index=False)
    return str(path)


def _check(w, config):
    return ["check-config", "--config", config]


def _data(w, config):
    return ["check-data", "--config", config, "--dataset", "rsna"]


def _split(w, manifest):
    return ["split", "--config", str(w / "config.yaml"), "--dataset", "rsna", "--manifest", manifest,
            "--out", str(w / "out/split.csv")]


def _table(w, *predictions, ledgers=()):
    return ["table", "--config", str(w / "config.yaml"), "--predictions", *predictions, "--ledgers", *ledgers,
            "--out", str(w / "out/table.csv"), "--budget-out", str(w / "out/budget.csv")]


def _eval(w, command, *extra):
    return [command, "--config", str(w / "config.yaml"), "--model", "clip", "--manifest",
            str(w / "res/cache/rsna/manifest.csv"), "--split", str(w / "res/splits/rsna.csv"), *extra]


PROMPTS = yaml.safe_load((REPO / "config/prompts.yaml").read_text())
RSNA_COLUMNS = "site_id, patient_id, image_id, laterality"
# name: (argv builder, text the one error line must hold)
ERRORS = {
    # config files
    "config: not UTF-8": (lambda w: _check(w, a_file(w, "bin.yaml", bytes(range(256)))), "not a text file"),
    "config: a tab in YAML": (lambda w: _check(w, a_file(w, "tab.yaml", "results:\tx\n\tfoo: [\n")), "invalid YAML"),
    "config: empty file": (lambda w: _check(w, a_file(w, "empty.yaml", "")), "'results' is a required property"),
    "config: threads as text": (lambda w: _check(w, config_with(w, "c1", lambda c: c.update(threads="two"))),
                                "threads: 'two' is not of type"),
    "config: 12-bit PNGs": (lambda w: _check(w, config_with(w, "c2", lambda c: c["preprocess"].update(bits=12))),
                            "preprocess.bits"),
    "config: ratios not summing to 1": (
        lambda w: _check(w, config_with(w, "c3", lambda c: c["split"].update(
            ratios={"train": 0.9, "val": 0.3, "test": 0.2}))), "split.ratios: train, val and test"),
    "config: a fraction above 1": (
        lambda w: _check(w, config_with(w, "c4", lambda c: c["split"].update(fractions=[0.5, 1.0, 1.5]))),
        "split.fractions.2"),
    "config: a repeated fraction": (
        lambda w: _check(w, config_with(w, "c5", lambda c: c["split"].update(fractions=[1.0, 1.0]))),
        "split.fractions"),
    "config: an unknown task": (lambda w: _check(w, config_with(w, "c6", lambda c: c.update(tasks=["embed/foo"]))),
                                "tasks: unknown task 'embed/foo'"),
    "config: no seeds": (lambda w: _check(w, config_with(w, "c7", lambda c: c.update(seeds=[]))), "seeds"),
    "config: a repeated seed": (lambda w: _check(w, config_with(w, "c8", lambda c: c.update(seeds=[0, 0]))),
                                "seeds: [0, 0] has non-unique"),
    "config: an unknown key": (lambda w: _check(w, config_with(w, "c9", lambda c: c.update(foo=1))), "'foo'"),
    "config: results is a file": (
        lambda w: _check(w, config_with(w, "c10", lambda c: c.update(results=a_file(w, "afile", "x")))),
        "results:"),
    "config: zero bootstrap draws": (
        lambda w: _check(w, config_with(w, "c11", lambda c: c["stats"].update(n_boot=0))), "stats.n_boot"),
    "config: ci as a percentage": (lambda w: _check(w, config_with(w, "c12", lambda c: c["stats"].update(ci=95))),
                                   "stats.ci"),
    "config: a negative C": (lambda w: _check(w, config_with(w, "c13", lambda c: c["linear_probe"].update(C=[-1.0]))),
                             "linear_probe.C.0"),
    "config: prompts file missing": (
        lambda w: _check(w, config_with(w, "c14", lambda c: c["zeroshot"].update(prompts=str(w / "nope.yaml")))),
        "prompts file not found"),
    "config: prompts not YAML": (
        lambda w: _check(w, config_with(w, "c15", lambda c: c["zeroshot"].update(prompts=a_file(w, "p.yaml", "a: [")))),
        "not a readable YAML file"),
    "config: prompts without a class": (
        lambda w: _check(w, config_with(w, "c16", lambda c: c["zeroshot"].update(prompts=a_file(
            w, "p2.yaml", "rsna/cancer: {0: [a normal mammogram]}\nembed/density: {}\nembed/birads: {}\n")))),
        "no prompts for class(es)"),
    "config: a prompt list of numbers": (
        lambda w: _check(w, config_with(w, "c17", lambda c: c["zeroshot"].update(prompts=a_file(
            w, "p3.yaml", yaml.safe_dump(PROMPTS | {"rsna/cancer": {0: [1, 2], 1: ["cancer"]}}))))),
        "rsna/cancer.0: expected a non-empty list of non-empty prompt strings"),
    "config: zero samples seen": (
        lambda w: _check(w, config_with(w, "c18", lambda c: c["pretrain"].update(samples_seen=0))),
        "pretrain.samples_seen"),
    "config: a model name with a slash": (
        lambda w: _check(w, config_with(w, "c19", lambda c: c["models"].update({"a/b": {"method": "clip",
                                                                                       "preset": "tiny"}}))),
        "'a/b'"),
    "config: an unknown method": (
        lambda w: _check(w, config_with(w, "c20", lambda c: c["models"].update(x={"method": "foo", "preset": "tiny"}))),
        "models.x.method"),
    "config: an unknown preset": (
        lambda w: _check(w, config_with(w, "c21", lambda c: c["models"].update(x={"method": "clip", "preset": "huge"}))),
        "models.x.preset"),
    "config: an unknown override": (
        lambda w: _check(w, config_with(w, "c22", lambda c: c["models"].update(
            x={"method": "clip", "preset": "tiny", "overrides": {"nope": 1}}))), "models.x.overrides"),
    "config: reference model not a model": (
        lambda w: _check(w, config_with(w, "c23", lambda c: c["stats"].update(reference_model="nope"))),
        "stats.reference_model"),
    "command line: zero threads": (lambda w: ["check-config", "--config", str(w / "config.yaml"), "--threads", "0"],
                                   "--threads"),
    # dataset tables
    "table: a column missing": (lambda w: _data(w, rsna_variant(w, "r1", table_edit(lambda t: t.drop(columns=["laterality"])))),
                                "train.csv: table is missing column(s) laterality"),
    "table: file missing": (lambda w: _data(w, rsna_variant(w, "r2", lambda r: (r / "train.csv").unlink())),
                            "train.csv: table not found"),
    "table: binary junk": (lambda w: _data(w, rsna_variant(w, "r3", text_edit(lambda b: bytes(range(256)) * 4))),
                           "is not UTF-8 text"),
    "table: semicolons": (lambda w: _data(w, rsna_variant(w, "r4", text_edit(lambda b: b.replace(b",", b";")))),
                          f"missing column(s) {RSNA_COLUMNS}"),
    "table: Latin-1 bytes": (lambda w: _data(w, rsna_variant(w, "r5", text_edit(lambda b: b.replace(b"\nCC", b"\nC\xe9", 1)
                                                                                  .replace(b",CC,", b",C\xe9,", 1)))),
                             "line "),
    "table: a ragged row": (lambda w: _data(w, rsna_variant(w, "r6", text_edit(lambda b: b + b"1," * 20 + b"1\n"))),
                            "not a well-formed CSV"),
    "table: header only": (lambda w: _data(w, rsna_variant(w, "r7", table_edit(lambda t: t.head(0)))), "no usable"),
    "table: image folder gone": (lambda w: _data(w, rsna_variant(w, "r8", lambda r: shutil.rmtree(r / "train_images"))),
                                 "no usable image"),
    "preprocess: out-dir is a file": (
        lambda w: ["preprocess", "--config", str(w / "config.yaml"), "--dataset", "rsna", "--out-dir",
                   a_file(w, "outfile", "x")], "outfile"),
    # manifests and splits
    "split: manifest missing": (lambda w: _split(w, str(w / "nope.csv")), "manifest not found"),
    "split: manifest empty file": (lambda w: _split(w, a_file(w, "m0.csv", "")), "manifest is empty"),
    "split: manifest without patient_id": (
        lambda w: _split(w, manifest_with(w, "m1.csv", lambda m: m.drop(columns=["patient_id"]))),
        "manifest is missing column(s) patient_id"),
    "split: manifest header only": (lambda w: _split(w, manifest_with(w, "m2.csv", lambda m: m.head(0))),
                                    "no image to split"),
    "split: manifest with a repeated image": (
        lambda w: _split(w, manifest_with(w, "m3.csv", lambda m: pd.concat([m, m.head(1)]))), "appears more than once"),
    "tokenizer: split missing": (
        lambda w: ["tokenizer", "--config", str(w / "config.yaml"), "--manifest", str(w / "res/cache/rsna/manifest.csv"),
                   "--split", str(w / "nope.csv"), "--out", str(w / "out/tok.json")], "split file not found"),
    "split file with a repeated patient": (
        lambda w: _eval(w, "probe", "--task", "rsna/cancer", "--features", str(w / "f.npz"), "--fraction", "1.0",
                        "--out", str(w / "out/p.csv"))[:7] + ["--split", a_file(
                            w, "s2.csv", "patient_id,split\n1,train\n1,test\n")] + [
            "--task", "rsna/cancer", "--features", str(w / "f.npz"), "--fraction", "1.0", "--out", str(w / "out/p.csv")],
        "patient_id '1' appears more than once"),
    # predictions, ledgers, tables
    "table: predictions empty file": (lambda w: _table(w, a_file(w, "preds/e.csv", "")), "predictions file is empty"),
    "table: predictions header only": (lambda w: _table(w, predictions_with(w, "h.csv", lambda d: d.head(0))),
                                       "has no rows"),
    "table: predictions without label": (lambda w: _table(w, predictions_with(w, "l.csv", lambda d: d.drop(columns=["label"]))),
                                         "missing column(s) label"),
    "table: a NaN score": (lambda w: _table(w, predictions_with(w, "n.csv", lambda d: d.assign(score_1=[np.nan, .1, .2, .3]))),
                           "row 2 (image a): missing or non-numeric score"),
    "table: a text score": (lambda w: _table(w, predictions_with(w, "t.csv", lambda d: d.assign(score_1=["x", .1, .2, .3]))),
                            "row 2 (image a): missing or non-numeric score"),
    "table: a score column missing": (lambda w: _table(w, predictions_with(w, "s.csv", lambda d: d.drop(columns=["score_1"]))),
                                      "score_1 are missing"),
    "table: a label out of range": (lambda w: _table(w, predictions_with(w, "r.csv", lambda d: d.assign(label=[0, 1, 2, 1]))),
                                    "row 4 (image c): label is not a class index 0..1"),
    "table: a text label": (lambda w: _table(w, predictions_with(w, "x.csv", lambda d: d.assign(label=["a", 1, 0, 1]))),
                            "row 2 (image a): label is not a class index"),
    "table: an unknown task": (lambda w: _table(w, predictions_with(w, "u.csv", lambda d: d.assign(task="foo"))),
                               "unknown task 'rsna/foo'"),
    "table: two tasks in one file": (
        lambda w: _table(w, predictions_with(w, "two.csv", lambda d: d.assign(task=["cancer", "cancer", "x", "x"]))),
        "more than one task"),
    "table: a repeated image": (lambda w: _table(w, predictions_with(w, "d.csv", lambda d: pd.concat([d, d.head(1)]))),
                                "image_id 'a' appears more than once"),
    "table: no test rows": (lambda w: _table(w, predictions_with(w, "v.csv", lambda d: d.assign(split="val"))),
                            "has a test-split row"),
    "table: a ledger that is not JSON": (
        lambda w: _table(w, predictions_with(w, "g1.csv", lambda d: d), ledgers=[a_file(w, "ledger.json", "{oops")]),
        "not a readable ledger"),
    "table: a ledger missing": (lambda w: _table(w, predictions_with(w, "g2.csv", lambda d: d),
                                                 ledgers=[str(w / "nope.json")]), "ledger not found"),
    # evaluation inputs
    "probe: features missing": (lambda w: _eval(w, "probe", "--task", "rsna/cancer", "--features", str(w / "no.npz"),
                                                 "--fraction", "1.0", "--out", str(w / "out/p.csv")),
                                "features file not found"),
    "probe: features not an npz": (lambda w: _eval(w, "probe", "--task", "rsna/cancer", "--features",
                                                   a_file(w, "c.npz", b"junk" * 30), "--fraction", "1.0",
                                                   "--out", str(w / "out/p.csv")), "not a features file"),
    "probe: an unknown task": (lambda w: _eval(w, "probe", "--task", "rsna/foo", "--features", str(w / "no.npz"),
                                               "--fraction", "1.0", "--out", str(w / "out/p.csv")),
                               "unknown task 'rsna/foo'"),
    "probe: outputs and fractions disagree": (
        lambda w: _eval(w, "probe", "--task", "rsna/cancer", "--features", str(w / "no.npz"), "--fraction", "1.0",
                        "0.1", "--out", str(w / "out/p.csv")), "per (fraction, draw): 4 for [1.0, 0.1]"),
    "features: checkpoint missing": (lambda w: _eval(w, "features", "--checkpoint", str(w / "nockpt"), "--out",
                                                     str(w / "out/f.npz")), "not a checkpoint"),
    "finetune: a fraction the split lacks": (
        lambda w: _eval(w, "finetune", "--task", "rsna/cancer", "--checkpoint", str(w / "nockpt"), "--fraction", "0.3",
                        "--out", *(str(w / f"out/ft{d}.csv") for d in range(3))), "no column frac_0.3"),
    "finetune: outputs and fractions disagree": (
        lambda w: _eval(w, "finetune", "--task", "rsna/cancer", "--checkpoint", str(w / "nockpt"), "--fraction", "0.1",
                        "--out", str(w / "out/ft.csv")), "give one --out per (fraction, draw)"),
    "pretrain: an unknown model": (
        lambda w: ["pretrain", "--config", str(w / "config.yaml"), "--model", "nope", "--manifest",
                   str(w / "res/cache/rsna/manifest.csv"), "--split", str(w / "res/splits/rsna.csv"),
                   "--out-dir", str(w / "out/pt")], "models.nope"),
    "pretrain: tokenizer missing": (
        lambda w: ["pretrain", "--config", str(w / "config.yaml"), "--model", "mama", "--manifest",
                   str(w / "res/cache/rsna/manifest.csv"), "--split", str(w / "res/splits/rsna.csv"),
                   "--tokenizer", str(w / "nope.json"), "--out-dir", str(w / "out/pt")], "tokenizer not found"),
    "pretrain: tokenizer not JSON": (
        lambda w: ["pretrain", "--config", str(w / "config.yaml"), "--model", "mama", "--manifest",
                   str(w / "res/cache/rsna/manifest.csv"), "--split", str(w / "res/splits/rsna.csv"),
                   "--tokenizer", a_file(w, "tok.json", "{not json"), "--out-dir", str(w / "out/pt")],
        "not a tokenizer file"),
    "figures: table missing": (lambda w: ["figures", "label_efficiency", "--config", str(w / "config.yaml"),
                                          "--out-dir", str(w / "out/fig"), "--table", str(w / "nope.csv")],
                               "table not found"),
    "figures: inputs without =": (lambda w: ["figures", "tsne", "--config", str(w / "config.yaml"),
                                             "--out-dir", str(w / "out/fig"), "--inputs", "foo"], "--inputs foo"),
    "convert-weights: folder missing": (
        lambda w: ["convert-weights", str(w / "nohf"), str(w / "out/w.safetensors"), "--config", str(w / "config.yaml"),
                   "--model", "mama"], "not a Hugging Face model folder"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_input_is_one_line(work, case):
    build, expected = ERRORS[case]
    code, err, _ = run(build(work))
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1, f"{case}: exit {code}, stderr {err!r}"
    assert expected in lines[0], f"{case}: {lines[0]!r}"
    assert "Traceback" not in err


# name: (config builder, reason the exclusion report must hold)
EXCLUSIONS = {
    "a repeated image id": (lambda w: rsna_variant(w, "x1", table_edit(lambda t: pd.concat([t, t.head(2)]))),
                            "duplicate image id"),
    "laterality X": (lambda w: rsna_variant(w, "x2", table_edit(lambda t: t.assign(laterality=["X"] + list(t.laterality[1:])))),
                     "laterality is 'X', not L or R"),
    "an empty patient id": (lambda w: rsna_variant(w, "x3", table_edit(lambda t: t.assign(patient_id=[""] + list(t.patient_id[1:])))),
                            "patient_id '' is empty"),
    "a folder where a DICOM should be": (
        lambda w: rsna_variant(w, "x4", lambda r: (lambda f: (f.unlink(), f.mkdir()))(next((r / "train_images").rglob("*.dcm")))),
        "DICOM file not found"),
    "a byte-order mark": (lambda w: rsna_variant(w, "x5", text_edit(lambda b: b"\xef\xbb\xbf" + b)), None),
    "Windows line ends": (lambda w: rsna_variant(w, "x6", text_edit(lambda b: b.replace(b"\n", b"\r\n"))), None),
}


@pytest.mark.parametrize("case", EXCLUSIONS)
def test_odd_rows_are_excluded_with_their_reason(work, case):
    build, reason = EXCLUSIONS[case]
    config = build(work)
    out = work / "out" / case.replace(" ", "_")
    code, err, _ = run(["preprocess", "--config", config, "--dataset", "rsna", "--out-dir", str(out)])
    assert code == 0, err
    rows_in = len(pd.read_csv(Path(yaml.safe_load(Path(config).read_text())["data"]["rsna"]["root"]) / "train.csv",
                              dtype=str, encoding="utf-8-sig"))
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    excluded = pd.read_csv(out / "exclusions.csv", dtype=str, keep_default_na=False)
    image_level = excluded[excluded["scope"] == "all"]
    assert len(manifest) + len(image_level) == rows_in  # nothing lost without a reason
    if reason is None:
        assert image_level.empty
    else:
        assert image_level["reason"].str.contains(reason, regex=False).any(), image_level["reason"].tolist()


@pytest.mark.parametrize("content, expected", [(b"\x89PNG\r\n\x1a\n" + b"junk" * 10, "cached image unreadable"),
                                               (None, "cached image not found"), ("rgb", "cached image is RGB")])
def test_a_broken_cached_image_is_one_line(tmp_path, content, expected):
    from PIL import Image

    from benchmark.data.images import load_images
    from benchmark.errors import BenchmarkError

    if content == "rgb":
        Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    elif content is not None:
        (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(BenchmarkError, match=expected):
        load_images(tmp_path, ["x.png"], 16)
