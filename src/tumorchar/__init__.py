"""tumorchar: computer-aided characterization of lung nodules (CT) and pancreatic cysts (MRI).

Implements Hussein et al., "Lung and Pancreatic Tumor Characterization in the Deep Learning
Era" (IEEE TMI 2019): a 3D CNN with graph-regularized sparse multi-task learning (supervised)
and k-means with a proportion-SVM (unsupervised).
"""

__version__ = "0.1.0"
