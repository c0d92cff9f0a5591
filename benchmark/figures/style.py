"""The look every figure shares: sized for a paper, colour-blind safe, one colour and
marker per model across all figures.

Widths are a two-column paper's column (3.5 in) and full page (7.0 in); fonts are 6 to 7
pt at that size, so a figure placed at its natural width stays legible. Colours are
Okabe & Ito's palette (distinguishable under the common colour-vision deficiencies),
and every model also gets its own marker so that no figure relies on colour alone.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmark.datasets import DATASETS  # noqa: E402
from benchmark.metrics import METRICS  # noqa: E402
from benchmark.protocols import PROTOCOLS  # noqa: E402

COLUMN_IN = 3.5
PAGE_IN = 7.0
MIN_FONT_PT = 6
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
CLASS_NA = "#BBBBBB"  # images without a label for the task

RC = {
    "font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "xtick.labelsize": 6, "ytick.labelsize": 6,
    "legend.fontsize": 6, "figure.titlesize": 8, "lines.linewidth": 1.0, "lines.markersize": 3.5,
    "axes.spines.top": False, "axes.spines.right": False, "savefig.dpi": 300, "savefig.bbox": "tight",
    "pdf.fonttype": 42, "ps.fonttype": 42, "font.family": "DejaVu Sans",
}


# The interval the figures draw: the method-level one (pretraining seeds, label draws and
# patients resampled together), which answers "is this method better", not only "is this
# checkpoint better" (docs/reading-the-table.md).
INTERVAL = ("method_ci_low", "method_ci_high")
INTERVAL_TITLE = "95 % method-level interval over seeds, draws and patients"


def protocol_title(protocol: str) -> str:
    return PROTOCOLS[protocol].title if protocol in PROTOCOLS else protocol


def metric_label(metric: str) -> str:
    return METRICS[metric].label if metric in METRICS else metric


def model_style(models: list[str]) -> dict[str, dict]:
    """{model: {color, marker, linestyle, hatch}} in the given (config) order; past eight
    models the colours repeat, with dashed lines and hatched bars."""
    return {m: {"color": OKABE_ITO[i % len(OKABE_ITO)], "marker": MARKERS[i % len(MARKERS)],
                "linestyle": "-" if i < len(OKABE_ITO) else "--", "hatch": None if i < len(OKABE_ITO) else "////"}
            for i, m in enumerate(models)}


def class_colors(n_classes: int) -> list[str]:
    if n_classes > len(OKABE_ITO):
        raise ValueError(f"{n_classes} classes: the colour-blind-safe palette has {len(OKABE_ITO)} colours")
    return OKABE_ITO[:n_classes]


def dataset_title(dataset: str) -> str:
    return DATASETS[dataset].title if dataset in DATASETS else dataset


def task_title(task_key: str) -> str:
    dataset, name = task_key.split("/")
    return f"{dataset_title(dataset)} {name}"


def fraction_label(fraction: float) -> str:
    return f"{fraction * 100:g} %"


def styled(draw):
    """Run a drawing function under the shared rc settings (text takes its size when made)."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context(RC):
            return draw(*args, **kwargs)

    return wrapper


def figure(width_in: float, height_in: float, nrows: int = 1, ncols: int = 1, **kwargs):
    return plt.subplots(nrows, ncols, figsize=(width_in, height_in), squeeze=False, **kwargs)


def save(fig, out_dir: Path, stem: str) -> list[Path]:
    """``stem``.png and ``stem``.pdf in ``out_dir``; closes the figure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    with plt.rc_context(RC):
        for path in paths:
            # fixed metadata: the same inputs give byte-identical PDFs
            fig.savefig(path, metadata={"CreationDate": None} if path.suffix == ".pdf" else {"Software": None})
    plt.close(fig)
    return paths
