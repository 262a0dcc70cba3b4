"""Labels and archives: boxes, masks, occlusion and truncation per object and frame
(``frame_labels``), the label tables' schemas, COCO JSON, H.264 video, the atomic job archive,
and a boxed preview frame read back from an archive."""
