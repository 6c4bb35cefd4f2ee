"""A corpus of damaged inputs (DICOM files, CSVs, models folders, output paths) and what each must give."""
