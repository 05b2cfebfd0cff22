"""What a prediction is written as, for the places where scans are read.

One module per output: `sr` (DICOM SR, TID 1500 measurement report), `seg` (DICOM SEG of the
region used), `heatmap` (class-activation map of the malignancy head: Grad-CAM or occlusion
sensitivity, as NIfTI / NRRD or a DICOM Parametric Map) and `html` (a self-contained case
view). `source` reads the source series and holds the allow-list of the only patient / study
attributes that DICOM outputs carry over from it.
"""
