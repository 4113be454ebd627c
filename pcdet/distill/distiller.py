"""Distiller: the training wrapper holding student, frozen teacher and distillation losses.

Module tree: ``student`` (the detector being trained) and ``losses`` (nn.ModuleDict, tag -> loss module owning
its trainable adapters). The teacher is held outside the module tree (a plain list), so ``parameters()``,
``state_dict()``, DDP and the optimiser never see it; ``train()`` never changes its mode and ``to()`` /
``cpu()`` / ``cuda()`` / ``half()`` move it with the rest (``_apply``).

Checkpoints: ``student_state_dict()`` loads into the plain student config with ``strict=True``;
``distill_state_dict()`` holds the loss modules' adapters (``distill_state`` in the checkpoint dict).
"""
import warnings

import torch
import torch.nn as nn

from .recorders import FeatureRecorder
from .teacher import set_teacher_mode


class Distiller(nn.Module):
    """Wraps a student detector with the detector forward contract.

    Args:
        student: detector (``forward(batch_dict)`` -> train ``(ret_dict, tb_dict, disp_dict)``, eval
            ``(pred_dicts, recall_dicts)``).
        teacher: frozen detector, already loaded and in its configured mode.
        losses: dict tag -> ``DistillLoss`` (each has ``weight``, ``student_features``, ``teacher_features``).
        teacher_mode / teacher_bn: 'eval' | 'train', re-applied whenever ``train()`` is called.
        early_stop: run the teacher's ``module_list`` only until every recorded teacher feature exists.
        resolved: dict of the fully resolved distillation settings (logged, stored for provenance).
    """

    def __init__(self, student, teacher, losses, teacher_mode='eval', teacher_bn='eval', early_stop=True,
                 resolved=None):
        super().__init__()
        self.student = student
        self.losses = nn.ModuleDict(losses)
        self._teacher = [teacher]           # a list: not a registered submodule on purpose
        self.teacher_mode, self.teacher_bn = teacher_mode, teacher_bn
        self.early_stop = early_stop
        self.resolved = resolved or {}
        s_names = [n for loss in losses.values() for n in loss.student_features]
        t_names = [n for loss in losses.values() for n in loss.teacher_features]
        self.student_recorder = FeatureRecorder(student, s_names, 'student')
        self.teacher_recorder = FeatureRecorder(teacher, t_names, 'teacher')
        set_teacher_mode(teacher, teacher_mode, teacher_bn)

    @property
    def teacher(self):
        return self._teacher[0]

    @property
    def adapters(self):
        """Deprecated name of ``losses`` (it holds the loss modules, each owning its adapters)."""
        warnings.warn('Distiller.adapters is deprecated: use Distiller.losses', DeprecationWarning, stacklevel=2)
        return self.losses

    def __getattr__(self, name):
        # Detector attributes the training tools use (update_global_step, num_class, dataset,
        # load_params_from_file, ...) are the student's: forward what nn.Module does not resolve.
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get('_modules', {})
            if 'student' not in modules:
                raise
            return getattr(modules['student'], name)

    def load_params_with_optimizer(self, filename, to_cpu=False, optimizer=None, logger=None, allow_unsafe=False):
        """Resume: student, ``distill_state`` and optimiser, strictly, through the one checkpoint loader."""
        from pcdet.utils import checkpoint_utils
        return checkpoint_utils.load_params_with_optimizer(self, filename, optimizer=optimizer, logger=logger,
                                                           allow_unsafe=allow_unsafe)

    def train(self, mode=True):
        super().train(mode)
        set_teacher_mode(self.teacher, self.teacher_mode, self.teacher_bn)
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return self

    def remove_hooks(self):
        """Detach the recorders' forward hooks from student and teacher (when the Distiller is discarded)."""
        self.student_recorder.remove()
        self.teacher_recorder.remove()

    def student_state_dict(self):
        """The student's own state_dict (``model_state``): loads into the plain student strictly."""
        return self.student.state_dict()

    def distill_state_dict(self):
        """Adapters of all losses (``distill_state``)."""
        return self.losses.state_dict()

    @torch.no_grad()
    def run_teacher(self, batch_dict):
        """Teacher forward on a shallow copy of ``batch_dict``; returns its recorded features (detached)."""
        teacher = self.teacher
        tdict = dict(batch_dict)
        self.teacher_recorder.start()
        module_list = getattr(teacher, 'module_list', None)
        if module_list is None:
            teacher(tdict)       # detector without OpenPCDet's module_list: plain forward
        else:
            for module in module_list:
                tdict = module(tdict)
                if self.early_stop and self.teacher_recorder.complete(tdict):
                    break
        return self.teacher_recorder.collect(tdict, detach=True)

    def forward(self, batch_dict):
        """Training: detection loss + sum_l WEIGHT_l * loss_l. Eval: the plain student forward.

        Args:
            batch_dict: collated batch (``voxels``, ``voxel_coords`` (V, 4) [b, z, y, x], ``gt_boxes``
                (B, M, 8), ...). The student writes its keys into a shallow copy, the teacher into another.

        Returns:
            training: ``(ret_dict, tb_dict, disp_dict)``; ``ret_dict['loss']`` includes the distillation losses,
            ``tb_dict`` gains ``distill/<tag>`` (weighted value) per loss and ``distill_loss`` (their sum).
        """
        if not self.training:
            return self.student(batch_dict)
        teacher_feats = self.run_teacher(batch_dict)
        sdict = dict(batch_dict)
        self.student_recorder.start()
        ret_dict, tb_dict, disp_dict = self.student(sdict)
        student_feats = self.student_recorder.collect(sdict)
        total = 0.0
        for tag, loss_module in self.losses.items():
            value, extra = loss_module(student_feats, teacher_feats, sdict)
            term = loss_module.weight * value
            total = total + term
            tb_dict[f'distill/{tag}'] = float(term.detach())
            for key, val in extra.items():
                tb_dict[f'distill/{tag}/{key}'] = val
        ret_dict['loss'] = ret_dict['loss'] + total
        tb_dict['distill_loss'] = float(total.detach()) if torch.is_tensor(total) else float(total)
        return ret_dict, tb_dict, disp_dict
