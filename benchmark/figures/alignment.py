"""Sentence-to-patch alignment heat maps: for each model that provides them, a few test
images and, beside each, where every report sentence matches the image: the cosine
similarity of the sentence with each patch, upsampled onto the image. Each map is scaled
from its own minimum to its maximum (where, not how much; the raw range is printed under
each panel), and low values are transparent so the anatomy stays visible."""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from PIL import Image

from benchmark.figures.style import PAGE_IN, figure, styled

COLORMAP = "inferno"  # perceptually uniform, colour-blind safe, readable over grey


def sentence_title(sentence: str) -> str:
    """'Reason for procedure: ...' -> 'Reason for\nprocedure' (fits a narrow panel)."""
    return textwrap.fill(sentence.split(":")[0] if ":" in sentence else sentence[:24], 16)


def overlay(image_hw: np.ndarray, map_pq: np.ndarray) -> np.ndarray:
    """RGB image: grey anatomy under the min-max scaled map, whose alpha grows with it."""
    size = image_hw.shape[0]
    up = np.asarray(Image.fromarray(map_pq.astype(np.float32), mode="F").resize((size, size),
                                                                                Image.Resampling.BILINEAR))
    span = up.max() - up.min()
    scaled = (up - up.min()) / span if span > 0 else np.zeros_like(up)
    grey = np.repeat((image_hw.astype(np.float32) / 255.0)[..., None], 3, axis=2)
    heat = colormaps[COLORMAP](scaled)[..., :3]
    alpha = (0.75 * scaled)[..., None]
    return grey * (1 - alpha) + heat * alpha


@styled
def plot_alignment(maps: dict[str, dict]):
    """``maps``: {model: arrays from ``alignment_maps``}; a figure with no supporting model
    says so and lists the models."""
    shown = {m: a for m, a in maps.items() if bool(a["supported"])}
    if not shown:
        fig, axes = figure(PAGE_IN / 2, 1.0)
        axes[0][0].axis("off")
        axes[0][0].text(0.5, 0.5, "no model provides sentence_patch_similarity\n(models: " + ", ".join(maps) + ")",
                        ha="center", va="center")
        fig.suptitle("Sentence-to-patch alignment")
        return fig
    rows = [(model, i) for model, a in shown.items() for i in range(len(a["images"]))]
    n_cols = 1 + max(a["sentences"].shape[1] for a in shown.values())
    cell = PAGE_IN / (n_cols + 0.5)
    fig, axes = figure(PAGE_IN, cell * 1.3 * len(rows) + 0.6, nrows=len(rows), ncols=n_cols)
    for r, (model, i) in enumerate(rows):
        arrays = shown[model]
        image = arrays["images"][i]
        axes[r][0].imshow(image, cmap="gray", vmin=0, vmax=255)
        axes[r][0].set_ylabel(f"{model}\n{arrays['label'][i]}", fontsize=6)
        for s in range(1, n_cols):
            ax = axes[r][s]
            sentences = arrays["sentences"][i]
            if s - 1 >= len(sentences) or not sentences[s - 1]:
                ax.axis("off")
                continue
            map_pq = arrays["maps"][i, s - 1]
            ax.imshow(overlay(image, map_pq))
            ax.set_title(sentence_title(sentences[s - 1]), fontsize=6)
            ax.set_xlabel(f"cos {map_pq.min():.2f} to {map_pq.max():.2f}", fontsize=6)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_title("image", fontsize=6)
    fig.subplots_adjust(left=0.06, right=0.9, top=1 - 0.45 / fig.get_figheight(), bottom=0.03, wspace=0.08,
                        hspace=0.45)
    bar_ax = fig.add_axes((0.92, 0.15, 0.015, 0.6))
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), COLORMAP), cax=bar_ax)
    bar.set_label("sentence-patch cosine similarity,\neach map scaled min (0) to max (1)", fontsize=6)
    fig.suptitle("Sentence-to-patch alignment on test images (each sentence of the image's report)")
    return fig
