"""KITTI dataset (``KittiDataset``), its file helpers and the official evaluator (``kitti_object_eval_python``)."""
