"""``FeatureRecorder`` on a toy two-layer model: hooks, batch keys, start / complete / collect / remove, errors."""
import pytest
import torch
import torch.nn as nn

from pcdet.distill.recorders import FeatureRecorder, canonical_name


class Toy(nn.Module):
    """batch_dict['x'] (N, 2) -> body (Linear 2 -> 3, ReLU) -> 'hidden'; head (Linear 3 -> 1) -> 'out'."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        self.head = nn.Linear(3, 1)
        with torch.no_grad():
            self.body[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
            self.body[0].bias.zero_()
            self.head.weight.fill_(1.0)
            self.head.bias.fill_(0.5)

    def forward(self, batch_dict, upto='out'):
        batch_dict['hidden'] = self.body(batch_dict['x'])
        if upto == 'out':
            batch_dict['out'] = self.head(batch_dict['hidden'])
        return batch_dict


X = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
LINEAR0 = torch.tensor([[1.0, 2.0, -1.0], [3.0, -1.0, 4.0]])     # X @ W^T of body.0
HIDDEN = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 4.0]])        # after the ReLU
OUT = torch.tensor([[3.5], [7.5]])                                # row sums + 0.5


def test_canonical_name():
    assert canonical_name('batch_dict:spatial_features_2d') == 'spatial_features_2d'
    assert canonical_name('module:body.0') == 'module:body.0'
    assert canonical_name('pillar_features') == 'pillar_features'


def test_records_module_outputs_and_batch_keys():
    model = Toy()
    rec = FeatureRecorder(model, ['module:body.0', 'batch_dict:hidden', 'out', 'hidden'], 'student')
    assert rec.keys == ['hidden', 'out'] and rec.paths == ['body.0']          # prefix stripped, duplicates merged
    rec.start()
    batch = model({'x': X.clone()})
    feats = rec.collect(batch)
    assert sorted(feats) == ['hidden', 'module:body.0', 'out']
    assert torch.equal(feats['module:body.0'], LINEAR0)
    assert feats['hidden'] is batch['hidden'] and torch.equal(feats['hidden'], HIDDEN)
    assert torch.equal(feats['out'], OUT)
    assert feats['out'].requires_grad                                         # not detached by default
    detached = FeatureRecorder(model, ['module:head', 'out'], 'teacher')
    detached.start()
    feats = detached.collect(model({'x': X.clone()}), detach=True)
    assert not feats['module:head'].requires_grad and not feats['out'].requires_grad
    assert torch.equal(feats['module:head'], OUT)


def test_capture_only_between_start_and_collect():
    model = Toy()
    rec = FeatureRecorder(model, ['module:body.0'], 'student')
    model({'x': X.clone()})                                    # before start: nothing captured
    with pytest.raises(KeyError, match="student module 'body.0' did not run"):
        rec.collect({})
    rec.start()
    model({'x': X.clone()})
    assert torch.equal(rec.collect({})['module:body.0'], LINEAR0)
    model({'x': X.clone() * 2})                                # after collect: not captured, records cleared
    with pytest.raises(KeyError, match='did not run'):
        rec.collect({})
    rec.start()
    model({'x': -X})                                           # start clears what an earlier pass left
    rec.start()
    with pytest.raises(KeyError, match='did not run'):
        rec.collect({})


def test_complete_tracks_keys_and_module_outputs():
    model = Toy()
    rec = FeatureRecorder(model, ['module:head', 'hidden'], 'teacher')
    rec.start()
    batch = {'x': X.clone()}
    assert not rec.complete(batch)
    model(batch, upto='hidden')                                # 'hidden' exists, head did not run
    assert 'hidden' in batch and not rec.complete(batch)
    model(batch)
    assert rec.complete(batch)
    assert sorted(rec.collect(batch)) == ['hidden', 'module:head']


def test_remove_detaches_the_hooks():
    model = Toy()
    rec = FeatureRecorder(model, ['module:body.0', 'module:head'], 'student')
    rec.remove()
    rec.start()
    model({'x': X.clone()})
    with pytest.raises(KeyError, match='did not run'):
        rec.collect({})
    rec.remove()                                               # a second remove is harmless


def test_unknown_names_are_named_in_the_error():
    model = Toy()
    with pytest.raises(KeyError, match=r"teacher model has no module \['body.7'\]; available module paths: "
                                       r"\['body', 'body.0', 'body.1', 'head'\]"):
        FeatureRecorder(model, ['module:body.7', 'module:head'], 'teacher')
    with pytest.raises(KeyError, match=r"student model has no module \[''\]"):
        FeatureRecorder(model, ['module:'], 'student')        # the root module is not a feature
    rec = FeatureRecorder(model, ['hiddn'], 'student')        # batch keys are only known after the forward pass
    rec.start()
    with pytest.raises(KeyError, match=r"student batch_dict has no key 'hiddn' after the forward pass; "
                                       r"available keys: \['hidden', 'out', 'x'\]"):
        rec.collect(model({'x': X.clone()}))
