"""Labels and archives: boxes, masks, occlusion and truncation per object and frame
(``frame_labels``), the label tables' schemas, COCO JSON, H.264 video, the atomic job archive,
and previews read back from archives: a boxed frame, and contact sheets of frames with
masks, boxes and category names (``preview``)."""
