"""Synthetic KITTI-format LiDAR dataset (simulated HDL-64E sweeps of random street scenes).

``generate_dataset(out_dir, num_train, num_val, seed, num_test=0, workers=None)`` writes the tree; see
``generate`` for the layout and the command line. Submodules: ``sensor`` (beam pattern, noise model),
``scene`` (entities and their primitive shapes), ``layout`` (random streets), ``raycast`` (numba kernels),
``labels`` (KITTI calib / label / plane files), ``image`` (PNG depth rendering).
"""
__all__ = ['generate_dataset', 'make_frame']


def __getattr__(name):
    # imported lazily so that `python -m pcdet.datasets.synthetic.generate` does not import generate twice
    if name in __all__:
        from . import generate
        return getattr(generate, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
