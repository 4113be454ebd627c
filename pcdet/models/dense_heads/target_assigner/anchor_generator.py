"""Anchor grids for anchor heads (OpenPCDet's ``AnchorGenerator``), created on a chosen device."""
import torch


class AnchorGenerator:
    """One anchor grid per ``ANCHOR_GENERATOR_CONFIG`` entry (one per class).

    Each entry: ``anchor_sizes`` [[dx, dy, dz], ...], ``anchor_rotations`` [rad, ...], ``anchor_bottom_heights``
    [z, ...], ``align_center`` bool. ``anchor_range`` = POINT_CLOUD_RANGE [x0, y0, z0, x1, y1, z1] (LiDAR, m).
    """

    def __init__(self, anchor_range, anchor_generator_config):
        self.anchor_generator_cfg = anchor_generator_config
        self.anchor_range = [float(v) for v in anchor_range]
        self.anchor_sizes = [config['anchor_sizes'] for config in anchor_generator_config]
        self.anchor_rotations = [config['anchor_rotations'] for config in anchor_generator_config]
        self.anchor_heights = [config['anchor_bottom_heights'] for config in anchor_generator_config]
        self.align_center = [config.get('align_center', False) for config in anchor_generator_config]

    def generate_anchors(self, grid_sizes, device=None):
        """
        Args:
            grid_sizes: per entry the feature map size [nx, ny].
        Returns:
            all_anchors: list of (1, ny, nx, num_sizes, num_rotations, 7) float32 tensors
                [x, y, z, dx, dy, dz, heading], z = bottom height + dz / 2 (geometric centre);
            num_anchors_per_location: list of num_sizes * num_rotations * num_heights.
        """
        all_anchors, num_anchors_per_location = [], []
        x0, y0, _, x1, y1, _ = self.anchor_range
        for grid_size, anchor_size, anchor_rotation, anchor_height, align_center in zip(
                grid_sizes, self.anchor_sizes, self.anchor_rotations, self.anchor_heights, self.align_center):
            nx, ny = int(grid_size[0]), int(grid_size[1])
            num_anchors_per_location.append(len(anchor_rotation) * len(anchor_size) * len(anchor_height))
            if align_center:
                # cell centres
                x_stride, y_stride = (x1 - x0) / nx, (y1 - y0) / ny
                x_shifts = x0 + x_stride * (torch.arange(nx, dtype=torch.float32, device=device) + 0.5)
                y_shifts = y0 + y_stride * (torch.arange(ny, dtype=torch.float32, device=device) + 0.5)
            else:
                # first and last anchor on the range borders (OpenPCDet: arange(min, max + 1e-5, range / (n - 1)))
                x_shifts = torch.linspace(x0, x1, nx, dtype=torch.float32, device=device)
                y_shifts = torch.linspace(y0, y1, ny, dtype=torch.float32, device=device)
            z_shifts = x_shifts.new_tensor(anchor_height)
            sizes = x_shifts.new_tensor(anchor_size).view(-1, 3)
            rotations = x_shifts.new_tensor(anchor_rotation).view(-1)
            num_size, num_rot = sizes.shape[0], rotations.shape[0]
            xs, ys, zs = torch.meshgrid(x_shifts, y_shifts, z_shifts, indexing='ij')  # (nx, ny, nz)
            centres = torch.stack((xs, ys, zs), dim=-1)
            grid = centres.shape[:3]
            anchors = torch.cat([
                centres[:, :, :, None, None, :].expand(*grid, num_size, num_rot, 3),
                sizes[None, None, None, :, None, :].expand(*grid, num_size, num_rot, 3),
                rotations[None, None, None, None, :, None].expand(*grid, num_size, num_rot, 1)], dim=-1)
            anchors = anchors.permute(2, 1, 0, 3, 4, 5).contiguous()  # (nz, ny, nx, num_size, num_rot, 7)
            anchors[..., 2] += anchors[..., 5] / 2  # bottom height -> box centre
            all_anchors.append(anchors)
        return all_anchors, num_anchors_per_location
