"""Points-in-boxes ops (OpenPCDet's ``roiaware_pool3d`` module path); the CUDA extension is loaded lazily."""
