"""Training exports: a batch, or a SQL slice of it, in the layouts training code loads
unchanged (COCO, YOLO, KITTI, BOP, Hugging Face).

``frame.py`` holds what a format writer is given (one frame with its labels and images, the
export's context); ``select.py`` the slice and the split of jobs; ``augment.py`` the
augmented copies made on request; ``run.py`` streams a batch's frames through a writer into a
folder that appears only when whole; one module per format holds its writer (``coco.py``,
``yolo.py``, ``kitti.py``, ``bop.py``, ``hf.py``).
"""
