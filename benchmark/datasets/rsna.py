"""RSNA Screening Mammography Breast Cancer Detection: train.csv and DICOMs (docs/protocol.md, Data)."""

from benchmark.datasets import Dataset, register_dataset
from benchmark.tasks import Task


def _load(root, entry):
    from benchmark.data.rsna import load_rsna

    return load_rsna(root, entry["table"], entry["images"])


def _write_synthetic(root, n_patients, seed, shape, workers):
    from benchmark.data.synth import write_rsna

    return write_rsna(root, n_patients, seed, shape=shape, workers=workers)


register_dataset(Dataset(
    name="rsna",
    title="RSNA-Mammo",
    tasks=(Task("rsna", "cancer", "cancer", (0, 1), ("no cancer", "cancer"), breast_level=True),),
    load=_load,
    main_table="table",
    write_synthetic=_write_synthetic,
    synthetic_images_per_patient=4.2,
))
