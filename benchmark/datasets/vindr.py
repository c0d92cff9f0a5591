"""VinDr-Mammo 1.0.0: breast-level and finding tables, DICOM tags, DICOMs (docs/real-data.md).
Evaluation only; the release's training/test split is kept (benchmark/data/vindr.py)."""

from benchmark.datasets import Dataset, register_dataset
from benchmark.tasks import Task


def _load(root, entry):
    from benchmark.data.vindr import load_vindr

    return load_vindr(root, entry["breast_table"], entry["finding_table"], entry["metadata"], entry["images"])


def _write_synthetic(root, n_patients, seed, shape, workers):
    from benchmark.data.synth import write_vindr

    return write_vindr(root, n_patients, seed, shape=shape, workers=workers)


register_dataset(Dataset(
    name="vindr",
    title="VinDr-Mammo",
    tasks=(
        Task("vindr", "birads", "birads", (1, 2, 3, 4, 5),
             ("1 negative", "2 benign", "3 probably benign", "4 suspicious", "5 highly suggestive of malignancy")),
        Task("vindr", "density", "density", (1, 2, 3, 4),
             ("almost entirely fatty", "scattered fibroglandular", "heterogeneously dense", "extremely dense")),
        Task("vindr", "mass", "mass", (0, 1), ("no mass", "mass"), breast_level=True),
        Task("vindr", "calcification", "calcification", (0, 1),
             ("no suspicious calcification", "suspicious calcification"), breast_level=True),
    ),
    load=_load,
    main_table="breast_table",
    write_synthetic=_write_synthetic,
    synthetic_images_per_patient=4.0,
))
