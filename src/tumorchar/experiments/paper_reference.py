"""The paper's published numbers, typed in as reference data for the report.

Source: S. Hussein, P. Kandel, C. W. Bolan, M. B. Wallace, U. Bagci, "Lung and Pancreatic
Tumor Characterization in the Deep Learning Era: Novel Supervised and Unsupervised Learning
Approaches", IEEE Transactions on Medical Imaging 38(8), 2019 — Table II (E1), Table III (E2)
and Table IV (E4). Percentages as printed. The paper gives Fig. 5 (E3) only as a bar chart
without printed values, so no numbers are typed in for it.

Keys are the `paper_row` names used by the experiment modules.
"""

from __future__ import annotations

CITATION = (
    "Hussein et al., Lung and Pancreatic Tumor Characterization in the Deep Learning Era, "
    "IEEE TMI 38(8), 2019"
)

# Table II: accuracy (%, prediction within ±1 of the mean score) and mean absolute score
# difference, 10-fold cross-validation on 1144 LIDC-IDRI nodules (635 benign, 509 malignant).
TABLE_II = {
    "GIST + LASSO": {"accuracy": 76.83, "mean_abs_diff": 0.675},
    "GIST + RR": {"accuracy": 76.48, "mean_abs_diff": 0.674},
    "3D CNN + LASSO (pre)": {"accuracy": 86.02, "mean_abs_diff": 0.530},
    "3D CNN + RR (pre)": {"accuracy": 82.00, "mean_abs_diff": 0.597},
    "3D CNN + LASSO (fine)": {"accuracy": 88.04, "mean_abs_diff": 0.497},
    "3D CNN + RR (fine)": {"accuracy": 84.53, "mean_abs_diff": 0.550},
    "3D CNN MTL trace norm": {"accuracy": 80.08, "mean_abs_diff": 0.626},
    "Proposed": {"accuracy": 91.26, "mean_abs_diff": 0.459},
}

# Table III: accuracy, sensitivity, specificity (%), unsupervised, GIST features.
TABLE_III = {
    "mri": {
        "Clustering": {"accuracy": 49.18, "sensitivity": 45.34, "specificity": 62.83},
        "Clustering + RF": {"accuracy": 53.20, "sensitivity": 51.28, "specificity": 69.33},
        "Clustering + SVM": {"accuracy": 52.03, "sensitivity": 51.96, "specificity": 50.5},
        "Proposed": {"accuracy": 58.04, "sensitivity": 58.61, "specificity": 41.67},
    },
    "lung": {
        "Clustering": {"accuracy": 54.83, "sensitivity": 48.69, "specificity": 60.04},
        "Clustering + RF": {"accuracy": 76.74, "sensitivity": 58.59, "specificity": 91.40},
        "Clustering + SVM": {"accuracy": 76.04, "sensitivity": 57.08, "specificity": 91.28},
        "Proposed": {"accuracy": 78.06, "sensitivity": 77.85, "specificity": 78.28},
    },
}

# Table IV: supervised upper bound, accuracy / sensitivity / specificity (%).
TABLE_IV = {
    "mri": {
        "GIST + SVM": {"accuracy": 76.05, "sensitivity": 83.65, "specificity": 52.67},
        "GIST + RF": {"accuracy": 81.9, "sensitivity": 93.69, "specificity": 43.0},
        "VGG-fc7 + SVM": {"accuracy": 84.18, "sensitivity": 96.91, "specificity": 44.83},
        "VGG-fc7 + RF": {"accuracy": 81.96, "sensitivity": 94.61, "specificity": 42.83},
        "VGG-fc8 + SVM": {"accuracy": 84.22, "sensitivity": 97.2, "specificity": 46.5},
        "VGG-fc8 + RF": {"accuracy": 80.82, "sensitivity": 93.4, "specificity": 45.67},
    },
    "lung": {
        "GIST + SVM": {"accuracy": 81.56, "sensitivity": 71.31, "specificity": 90.02},
        "GIST + RF": {"accuracy": 81.64, "sensitivity": 76.47, "specificity": 85.97},
        "VGG-fc7 + SVM": {"accuracy": 77.97, "sensitivity": 75.2, "specificity": 80.6},
        "VGG-fc7 + RF": {"accuracy": 81.73, "sensitivity": 78.24, "specificity": 84.59},
        "VGG-fc8 + SVM": {"accuracy": 78.76, "sensitivity": 74.67, "specificity": 82.29},
        "VGG-fc8 + RF": {"accuracy": 80.51, "sensitivity": 76.03, "specificity": 84.24},
    },
}

FIG_5_NOTE = (
    "The paper shows E3 (Fig. 5) as a bar chart without printed values; compare by shape: "
    "it reports ReLU features better than no ReLU for both layers and both datasets, "
    "VGG-fc8-ReLU best for lung nodules and VGG-fc7-ReLU best for IPMN."
)
