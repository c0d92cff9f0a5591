"""Data layer: synthetic generator, real-table loaders, DICOM preprocessing, splits, captions."""
