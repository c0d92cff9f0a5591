"""t-SNE of each model's test-split image embeddings (the joint image-text space the
zero-shot scores use), coloured by each of the dataset's task labels.

The 2-D coordinates are computed once per (model, seed, dataset) by ``embed_2d`` and
saved, so the figure is an aggregation that only reads them. A dataset bigger than
``max_points`` test images is subsampled (seeded, whole patients at a time)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmark.evaluate.predictions import label_indices
from benchmark.figures.style import CLASS_NA, PAGE_IN, class_colors, dataset_title, figure, styled
from benchmark.tasks import get_task


def embed_2d(embeddings: np.ndarray, records: pd.DataFrame, tasks: list[str], max_points: int,
             seed: int) -> pd.DataFrame:
    """t-SNE coordinates of ``records`` (rows of ``embeddings``), with a label column per
    task (class index, empty where the image has none for that task)."""
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    patients = records["patient_id"].unique()
    keep = np.ones(len(records), bool)
    if len(records) > max_points:  # whole patients, in a seeded order, until max_points images
        order = rng.permutation(patients)
        counts = records.groupby("patient_id").size().reindex(order).to_numpy()
        chosen = set(order[: int(np.searchsorted(np.cumsum(counts), max_points, side="right"))])
        keep = records["patient_id"].isin(chosen).to_numpy()
    records, embeddings = records[keep], embeddings[keep]
    if len(records) < 5:
        raise ValueError(f"t-SNE needs at least 5 test images, got {len(records)}")
    perplexity = min(30.0, (len(records) - 1) / 3)
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed,
              ).fit_transform(embeddings.astype(np.float64))
    out = pd.DataFrame({"image_id": records["image_id"].to_numpy(), "patient_id": records["patient_id"].to_numpy(),
                        "x": np.round(xy[:, 0], 5), "y": np.round(xy[:, 1], 5)})
    for key in tasks:
        out[key.split("/")[1]] = label_indices(records, get_task(*key.split("/"))).astype("Int64").to_numpy()
    return out


def run_tsne(config: dict, model_name: str, seed: int, dataset: str, manifest, split, features, out) -> None:
    """The ``tsne`` command: 2-D coordinates of the test-split embeddings, with task labels."""
    from pathlib import Path

    from benchmark.data.split import read_split, split_records
    from benchmark.data.tables import read_manifest
    from benchmark.errors import BenchmarkError
    from benchmark.evaluate.inputs import load_features

    records = split_records(read_manifest(manifest), read_split(split), ("test",))
    _, embeddings = load_features(features, records)
    tasks = [t for t in config["tasks"] if t.split("/")[0] == dataset]
    try:
        coordinates = embed_2d(embeddings, records, tasks, config["figures"]["tsne_max_points"], seed)
    except ValueError as exc:
        raise BenchmarkError(f"tsne {model_name} {dataset}: {exc}") from None
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    coordinates.to_csv(out, index=False)
    print(f"tsne {model_name} {dataset}: {len(coordinates)} test images -> {out}")


@styled
def plot_tsne(coordinates: dict[str, pd.DataFrame], dataset: str, tasks: list[str], per_row: int = 5):
    """``coordinates``: {model: embed_2d output}. Per task a block of panels, one per model,
    ``per_row`` models to a row, so that every model's name fits above its panel."""
    models = list(coordinates)
    ncols = min(len(models), per_row)
    block_rows = math.ceil(len(models) / ncols)
    legend_in = 1.3
    side = min((PAGE_IN - legend_in) / ncols, 1.6)
    fig, axes = figure(side * ncols + legend_in, side * block_rows * len(tasks) + 0.5,
                       nrows=block_rows * len(tasks), ncols=ncols)
    for block, key in enumerate(tasks):
        task = get_task(*key.split("/"))
        colors = class_colors(task.n_classes)
        for i in range(block_rows * ncols):
            ax = axes[block * block_rows + i // ncols][i % ncols]
            if i >= len(models):  # the block's last row is not full
                ax.set_visible(False)
                continue
            points = coordinates[models[i]]
            labels = points[task.name]
            ax.scatter(points.x[labels.isna()], points.y[labels.isna()], s=1.5, color=CLASS_NA, linewidths=0,
                       label="no label")
            for k in range(task.n_classes):
                sel = (labels == k).fillna(False).to_numpy()
                ax.scatter(points.x[sel], points.y[sel], s=1.5, color=colors[k], linewidths=0,
                           label=task.class_names[k])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(models[i], pad=2)
            if i % ncols == 0:
                ax.set_ylabel(f"coloured by {task.name}")
        axes[block * block_rows][ncols - 1].legend(loc="upper left", bbox_to_anchor=(1.04, 1.0), frameon=False,
                                                   markerscale=3, title=task.name, title_fontsize=6,
                                                   handletextpad=0.2)
    n = len(next(iter(coordinates.values())))
    fig.suptitle(f"{dataset_title(dataset)}: t-SNE of {n} test-image embeddings per model\n"
                 "(axes: the two t-SNE coordinates, unitless)")
    fig.tight_layout()
    return fig
