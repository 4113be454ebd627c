"""Model building and batch helpers (OpenPCDet's ``pcdet.models`` API).

Detectors are imported on first use, so ``import pcdet.models`` is cheap and never imports spconv.
"""
from collections import namedtuple

import numpy as np
import torch

# arrays that are metadata, not tensors
_NON_TENSOR_KEYS = ('frame_id', 'metadata', 'calib', 'image_paths', 'ori_shape', 'img_process_infos')


def build_network(model_cfg, num_class, dataset):
    """Build the detector named by ``model_cfg.NAME`` (see ``pcdet.models.detectors``)."""
    from .detectors import build_detector
    return build_detector(model_cfg=model_cfg, num_class=num_class, dataset=dataset)


def load_data_to_gpu(batch_dict, device=None):
    """Convert the numeric ndarrays of a collated batch to tensors on ``device`` (in place) and return it.

    device None -> CUDA if available, else CPU. ndarrays become float32 tensors (``image_shape`` int32),
    as in OpenPCDet; tensors are moved; metadata (frame_id, calib, ...) and non-numeric arrays stay.
    """
    if device is None:
        device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(device)
    for key, val in batch_dict.items():
        if key in _NON_TENSOR_KEYS:
            continue
        if torch.is_tensor(val):
            batch_dict[key] = val.to(device)
        elif isinstance(val, np.ndarray) and val.dtype.kind in 'biuf':
            if key == 'image_shape':
                batch_dict[key] = torch.from_numpy(val).int().to(device)
            else:
                batch_dict[key] = torch.from_numpy(val).float().to(device)
    return batch_dict


def model_fn_decorator():
    """``model_func(model, batch_dict) -> ModelReturn(loss, tb_dict, disp_dict)`` for the training loop.

    The batch goes to the device of the model's parameters (device follows the model).
    """
    ModelReturn = namedtuple('ModelReturn', ['loss', 'tb_dict', 'disp_dict'])

    def model_func(model, batch_dict):
        device = next(model.parameters()).device
        load_data_to_gpu(batch_dict, device=device)
        ret_dict, tb_dict, disp_dict = model(batch_dict)
        loss = ret_dict['loss'].mean()
        if hasattr(model, 'update_global_step'):
            model.update_global_step()
        else:
            model.module.update_global_step()
        return ModelReturn(loss, tb_dict, disp_dict)

    return model_func
