"""Writing and reading mammography DICOM files with pydicom."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

# Digital Mammography X-Ray Image Storage - For Presentation
MAMMO_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root for generated UIDs
# name -> (transfer syntax, encoder plugin, encoder options)
COMPRESSIONS = {
    "j2k_lossless": (JPEG2000Lossless, "pylibjpeg", {}),
    "j2k_lossy": (JPEG2000, "pylibjpeg", {"j2k_cr": [15]}),
    "rle": (RLELossless, None, {}),
}


def stable_uid(*parts: object) -> str:
    """A DICOM UID that depends only on ``parts`` (reruns write identical files)."""
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[str(p) for p in parts])


def write_mammogram(
    path: Path,
    stored: np.ndarray,
    *,
    bits_stored: int,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    laterality: str,
    view: str,
    photometric: str = "MONOCHROME2",
    rescale: tuple[float, float] = (1.0, 0.0),
    window: tuple[float, float] | None = None,
    extra: dict | None = None,
    transfer_syntax: str = "uncompressed",
) -> None:
    """Write a single-frame 16-bit-allocated mammogram, uncompressed or compressed."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MAMMO_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID_ROOT + "1"

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MAMMO_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "MG"
    ds.PatientID = patient_id
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{rescale[0]:g}"
    ds.RescaleIntercept = f"{rescale[1]:g}"
    if window is not None:
        ds.WindowCenter = f"{window[0]:g}"
        ds.WindowWidth = f"{window[1]:g}"
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    if transfer_syntax != "uncompressed":
        uid, plugin, options = COMPRESSIONS[transfer_syntax]
        # pydicom gives a compressed file a new random SOP Instance UID unless told not to
        if plugin:
            ds.compress(uid, encoding_plugin=plugin, generate_instance_uid=False, **options)
        else:
            ds.compress(uid, generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def read_dicom(path: Path) -> Dataset:
    with warnings.catch_warnings():
        # de-identified releases (VinDr-Mammo) replace UIDs by hex digests, which pydicom
        # flags on every read; the benchmark names images by its tables, not by these UIDs
        warnings.filterwarnings("ignore", message="Invalid value for VR UI", category=UserWarning)
        return pydicom.dcmread(path)
