"""Figures: drawn from saved artefacts, legible at a paper's width, colour-blind safe, and
saying what they show; t-SNE subsampling and the alignment maps behave as documented."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_hex
from matplotlib.text import Text

from benchmark.data.captions import embed_sentences, join_sentences
from benchmark.evaluate.alignment import alignment_maps, pick_examples
from benchmark.figures import draw, names
from benchmark.figures.alignment import plot_alignment
from benchmark.figures.bars import plot_bars
from benchmark.figures.compute_ledger import plot_compute_ledger
from benchmark.figures.label_efficiency import plot_label_efficiency
from benchmark.figures.roc import FPR_GRID, mean_roc, plot_roc
from benchmark.figures.style import MIN_FONT_PT, OKABE_ITO, PAGE_IN, model_style
from benchmark.figures.tsne import embed_2d, plot_tsne
from benchmark.registry import build_model
from benchmark.tables import TABLE_COLUMNS
from benchmark.tasks import get_task
from tests.conftest import REC

MODELS = ["mama", "clip", "random_init"]
TASKS = ["embed/density", "embed/birads", "rsna/cancer"]


def _table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for task in TASKS:
        dataset, name = task.split("/")
        cells = [("zeroshot", "")] + [("linear_probe", f) for f in ("0.01", "0.1", "1")] + [("finetune", "1")]
        cells += [("zeroshot_prefixed", "")] if dataset == "embed" else []
        for protocol, fraction in cells:
            for model in MODELS:
                for metric in ("auc", "bacc") + (("auc_breast",) if dataset == "rsna" else ()):
                    value = rng.uniform(0.4, 0.9)
                    rows.append(dict.fromkeys(TABLE_COLUMNS) | dict(
                        dataset=dataset, task=name, protocol=protocol, fraction=fraction, model=model, metric=metric,
                        value=value, ci_low=value - 0.05, ci_high=value + 0.05,
                        method_ci_low=value - 0.08, method_ci_high=value + 0.08))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _predictions(task_key: str, n: int = 80) -> pd.DataFrame:
    task = get_task(*task_key.split("/"))
    rng = np.random.default_rng(1)
    frames = []
    for protocol, fraction in [("zeroshot", ""), ("linear_probe", "1"), ("linear_probe", "0.1")]:
        for model in MODELS:
            labels = np.arange(n) % task.n_classes
            scores = rng.dirichlet(np.ones(task.n_classes), n)
            frame = pd.DataFrame({"dataset": task.dataset, "task": task.name, "protocol": protocol,
                                  "fraction": fraction, "model": model, "seed": 0, "draw": 0,
                                  "image_id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k // 4}" for k in range(n)],
                                  "breast_id": [f"p{k // 4}_{'LR'[k % 2]}" for k in range(n)],
                                  "split": "test", "label": labels})
            for k in range(task.n_classes):
                frame[f"score_{k}"] = scores[:, k]
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _check_legible(fig, title_words: list[str]):
    """Paper-width figure, no text under 6 pt, every visible axes labelled, a title naming the task."""
    width, _ = fig.get_size_inches()
    assert width <= PAGE_IN + 0.2, width
    for text in fig.findobj(Text):
        if text.get_text().strip() and text.get_visible():
            assert text.get_fontsize() >= MIN_FONT_PT, (text.get_text(), text.get_fontsize())
    title = fig._suptitle.get_text()
    for word in title_words:
        assert word in title, (word, title)
    for ax in fig.axes:
        if ax.get_visible() and ax.axison and ax.get_label() != "<colorbar>" and ax.has_data():
            assert ax.get_xlabel() or ax.get_ylabel() or ax.get_title(), ax


def _legend_labels(fig) -> set[str]:
    labels = set()
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]:
        labels |= {t.get_text().split(" (")[0] for t in legend.get_texts()}
    return labels


@pytest.mark.parametrize("task", TASKS)
def test_table_figures_are_legible_and_name_every_model(task):
    table = _table()
    for plot in (plot_label_efficiency, plot_bars):
        fig = plot(table, task, MODELS)
        _check_legible(fig, [task.split("/")[1]])
        assert set(MODELS) <= _legend_labels(fig)
        matplotlib.pyplot.close(fig)


def test_bands_and_whiskers_are_the_method_level_intervals():
    table = _table()
    probe = table[(table.dataset == "embed") & (table.task == "density") & (table.protocol == "linear_probe")
                  & (table.metric == "auc") & (table.model == MODELS[0])]
    fig = plot_label_efficiency(table, "embed/density", MODELS)
    band = next(c for c in fig.axes[0].collections if len(c.get_paths()))  # the first model's band
    y = band.get_paths()[0].vertices[:, 1]
    assert np.isclose(y.min(), probe.method_ci_low.min()) and np.isclose(y.max(), probe.method_ci_high.max())
    assert "method-level" in fig._suptitle.get_text()
    bars = plot_bars(table, "embed/density", MODELS)
    whiskers = [c for c in bars.axes[0].collections if len(c.get_segments())]
    lengths = np.concatenate([[s[1, 1] - s[0, 1] for s in c.get_segments()] for c in whiskers])
    assert np.allclose(lengths, 0.16)  # method_ci_high - method_ci_low, not the conditional 0.10
    matplotlib.pyplot.close("all")


def test_roc_figure_shows_breast_level_for_rsna_and_table_aucs():
    table = _table()
    fig = plot_roc(_predictions("rsna/cancer"), table, "rsna/cancer", MODELS)
    _check_legible(fig, ["cancer", "ROC"])
    titles = [ax.get_title() for ax in fig.axes]
    assert any("breast level" in t for t in titles) and any("image level" in t for t in titles)
    assert not any("0.1" in t or "10 %" in t for t in titles)  # only the full label fraction
    expected = table[(table.dataset == "rsna") & (table.protocol == "zeroshot") & (table.model == "clip")
                     & (table.metric == "auc")].value.iloc[0]
    legend_texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert f"clip ({expected:.3f})" in legend_texts
    matplotlib.pyplot.close(fig)


def test_mean_roc_separates_perfect_from_random_scores():
    labels = np.repeat([0, 1, 2], 50)
    perfect = np.eye(3)[labels]
    assert np.allclose(mean_roc(labels, perfect)[1:], 1.0)
    rng = np.random.default_rng(0)
    noise = mean_roc(labels, rng.random((150, 3)))
    assert np.abs(noise - FPR_GRID).mean() < 0.1  # near the diagonal
    binary = np.repeat([0, 1], 40)
    assert np.trapezoid(mean_roc(binary, np.eye(2)[1 - binary]), FPR_GRID) < 0.05  # inverted scores


def test_models_keep_their_colour_and_marker_and_the_palette_is_okabe_ito():
    styles = model_style(["mama", "clip", "convirt"])
    assert [s["color"] for s in styles.values()] == OKABE_ITO[:3]
    assert len({s["marker"] for s in styles.values()}) == 3  # never colour alone
    fig = plot_label_efficiency(_table(), "embed/density", MODELS)
    colours = {line.get_label(): to_hex(line.get_color()).upper() for ax in fig.axes for line in ax.get_lines()}
    assert colours["mama"] == OKABE_ITO[0].upper() and colours["clip"] == OKABE_ITO[1].upper()
    matplotlib.pyplot.close(fig)


def test_compute_ledger_shows_each_run():
    budget = pd.DataFrame({"model": ["mama", "mama", "clip", "random_init"], "samples_seen": [512, 528, 512, 0],
                           "device_seconds": [60.0, 64.0, 30.0, 0.0], "flops": [1e15, 1.1e15, 5e14, 0],
                           "device": "cpu"})
    fig = plot_compute_ledger(budget, MODELS)
    _check_legible(fig, ["Compute ledger", "cpu", "untrained controls left out: 1"])
    samples_ax = fig.axes[0]
    dots = np.concatenate([c.get_offsets()[:, 1] for c in samples_ax.collections])
    assert sorted(dots.tolist()) == [512, 512, 528]  # random_init (untrained) has no bar
    assert [t.get_text() for t in samples_ax.get_xticklabels()] == ["mama", "clip"]
    matplotlib.pyplot.close(fig)


def _records(n_patients: int, images_each: int = 3) -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        for i in range(images_each):
            rows.append({"image_id": f"p{p}_i{i}", "patient_id": f"p{p}", "density": [1, 2, 3, 4, 5][p % 5],
                         "birads": p % 7, "split": "test"})
    return pd.DataFrame(rows)


def test_tsne_subsamples_whole_patients_and_is_seeded():
    records = _records(40)
    embeddings = np.random.default_rng(0).normal(size=(len(records), 8))
    a = embed_2d(embeddings, records, ["embed/density", "embed/birads"], max_points=31, seed=0)
    b = embed_2d(embeddings, records, ["embed/density", "embed/birads"], max_points=31, seed=0)
    assert len(a) == 30 and a.groupby("patient_id").size().eq(3).all()  # whole patients, at most 31 images
    pd.testing.assert_frame_equal(a, b)
    assert a["density"].isna().sum() == (records.set_index("image_id").loc[a.image_id, "density"] == 5).sum()
    fig = plot_tsne({"mama": a, "clip": b}, "embed", ["embed/density", "embed/birads"])
    _check_legible(fig, ["EMBED", "t-SNE"])
    assert "no label" in _legend_labels(fig)
    matplotlib.pyplot.close(fig)


def test_tsne_of_fifteen_models_names_each_without_overlap():
    """The default run's 15 models: the panels wrap, five to a row, so no two names collide."""
    records = _records(20)
    points = embed_2d(np.random.default_rng(0).normal(size=(len(records), 8)), records, ["embed/density"],
                      max_points=100, seed=0)
    models = [f"{m}{suffix}" for m in ("mama", "glam", "clip", "convirt", "mgca", "medclip", "mammoclip")
              for suffix in ("", "_untrained")] + ["clip_shuffled"]
    fig = plot_tsne({m: points for m in models}, "embed", ["embed/density"])
    _check_legible(fig, ["EMBED", "t-SNE"])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    titles = [ax.title for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert sorted(t.get_text() for t in titles) == sorted(models)
    boxes = [t.get_window_extent(renderer) for t in titles]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    matplotlib.pyplot.close(fig)


def test_alignment_maps_for_mama_and_a_note_for_models_without(tmp_path, tokenizer):
    from PIL import Image

    records = []
    for p, birads in enumerate([1, 4, 2, 0]):
        png = f"{p}.png"
        Image.fromarray(np.random.default_rng(p).integers(0, 255, (64, 52), dtype=np.uint8)).save(tmp_path / png)
        records.append(REC | {"density": 2, "birads": birads, "patient_id": f"p{p}", "image_id": f"i{p}",
                              "png": png, "split": "test" if p < 3 else "train"})
    records = pd.DataFrame(records)
    assert pick_examples(records, 2, seed=0)["birads"].tolist() == [4, 2]  # findings first, test split only

    torch.manual_seed(0)
    mama = build_model("mama", "tiny", tokenizer=tokenizer).eval()
    maps = alignment_maps(mama, records, tmp_path, n_examples=2, seed=0)
    grid = mama.image_size // 16
    assert maps["maps"].shape[:1] == (2,) and maps["maps"].shape[2:] == (grid, grid)
    assert np.abs(maps["maps"]).max() <= 1 + 1e-5  # cosine similarities
    sentences = embed_sentences(records.iloc[1].to_dict())
    shown = [s for s in maps["sentences"][0] if s]
    assert shown == sentences[: len(shown)] and len(shown) >= 1
    with torch.no_grad():  # sentence s is the s-th sentence of the report, as the loss sees it
        sim, mask = mama.sentence_patch_similarity(torch.zeros(1, 3, 96, 96), [join_sentences(sentences)])
    assert int(mask.sum()) == len(shown)

    clip = build_model("clip", "tiny", tokenizer=tokenizer)
    assert not alignment_maps(clip, records, tmp_path, 2, 0)["supported"]
    fig = plot_alignment({"mama": maps, "clip": {"supported": np.array(False)}})
    _check_legible(fig, ["alignment"])
    assert sum(ax.get_title() == "image" for ax in fig.axes) == 1
    matplotlib.pyplot.close(fig)


def test_draw_family_writes_the_declared_files(tmp_path):
    table_path = tmp_path / "table.csv"
    _table().to_csv(table_path, index=False)
    written = draw.draw_family("bars", tmp_path / "figures", models=MODELS, tasks=TASKS, table=table_path)
    expected = {f"{stem}.{ext}" for stem in names.figure_stems("bars", TASKS)
                for ext in ("png", "pdf")}
    assert {p.name for p in written} == expected and all(p.stat().st_size > 1000 for p in written)
    with pytest.raises(ValueError, match="--inputs clip:embed"):
        draw.draw_family("tsne", tmp_path, models=["clip"], tasks=["embed/density"])


def test_every_plot_function_draws_under_the_shared_style():
    """Each figure module's plot_* function runs under style.RC (the @styled decorator)."""
    import importlib
    import inspect
    import pkgutil

    import benchmark.figures

    found = 0
    for info in pkgutil.iter_modules(benchmark.figures.__path__):
        module = importlib.import_module(f"benchmark.figures.{info.name}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("plot_") and fn.__module__ == module.__name__:
                found += 1
                assert getattr(fn, "__wrapped__", None) is not None, f"{module.__name__}.{name} is not @styled"
    assert found >= 5
