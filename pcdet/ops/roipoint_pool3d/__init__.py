"""Point pooling in 3D RoIs (OpenPCDet's ``roipoint_pool3d`` module path); the CUDA extension is loaded lazily."""
