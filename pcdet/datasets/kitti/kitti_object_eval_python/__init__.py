"""KITTI 3D object evaluation on the CPU (OpenPCDet's module path): ``eval.get_official_eval_result``."""
