"""PointNet++ ops (OpenPCDet's ``pcdet.ops.pointnet2`` module path): the batched variant is ``pointnet2_batch``."""
