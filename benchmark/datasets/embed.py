"""EMBED (Emory Breast Imaging Dataset): metadata + clinical tables, DICOMs (docs/protocol.md, Data)."""

from benchmark.datasets import Dataset, register_dataset
from benchmark.tasks import Task


def _load(root, entry):
    from benchmark.data.embed import load_embed

    return load_embed(root, entry["metadata"], entry["clinical"], entry["path_prefix"])


def _write_synthetic(root, n_patients, seed, shape, workers):
    from benchmark.data.synth import write_embed

    return write_embed(root, n_patients, seed, shape=shape, workers=workers)


register_dataset(Dataset(
    name="embed",
    title="EMBED",
    tasks=(
        Task("embed", "density", "density", (1, 2, 3, 4),
             ("almost entirely fatty", "scattered fibroglandular", "heterogeneously dense", "extremely dense")),
        Task("embed", "birads", "birads", (0, 1, 2, 3, 4, 5, 6),
             ("0 incomplete", "1 negative", "2 benign", "3 probably benign", "4 suspicious",
              "5 highly suggestive of malignancy", "6 known malignancy")),
    ),
    load=_load,
    main_table="metadata",
    write_synthetic=_write_synthetic,
    synthetic_images_per_patient=5.7,
))
