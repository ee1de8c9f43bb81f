"FID/KID/LPIPS in `evaluate` (08_evaluate): the weights-loading paths with random weights in the real layouts, the report, the files, the CLI."
import csv, functools, json, pickle
from unittest import mock

import pytest
import torch

from stargan_nb import cli
import stargan_nb.evaluate as ev
from stargan_nb.data import to_uint8


class Payload:
    "An object whose unpickling creates a file: what a hostile weights file does."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (open, (str(self.marker), 'w'))


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    "Random-weight files in the layouts of torch-fidelity's Inception and torchvision's AlexNet, and a hostile one."
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torchvision.models import alexnet
    tmp = tmp_path_factory.mktemp('weights')
    torch.manual_seed(0)
    with mock.patch.object(FeatureExtractorInceptionV3, 'load_state_dict', lambda self, sd, *a, **k: None), \
         mock.patch('torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url', return_value={}):
        inception = FeatureExtractorInceptionV3('inception-v3-compat', ['2048'])  # its layout, random weights
    torch.save(inception.state_dict(), tmp / 'inception.pth')
    torch.save(alexnet(weights=None).state_dict(), tmp / 'alexnet.pth')
    with open(tmp / 'hostile.pth', 'wb') as f: pickle.dump({'w': Payload(tmp / 'ran')}, f)
    return tmp


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    "A project checkpoint of a tiny G trained two iterations on 32x32 synthetic faces (its config says 32 pixels)."
    from stargan_nb.learner import stargan_learner
    from stargan_nb.faces import synthetic_dls
    torch.manual_seed(0)
    learn = stargan_learner(synthetic_dls(n_train=32, n_valid=16, size=32, bs=8), g_conv_dim=8, d_conv_dim=8, g_repeat_num=1,
                            d_repeat_num=3, num_iters=2, num_iters_decay=1, lr_update_step=1, log_step=1, sample_step=10**6,
                            model_save_step=10**6, device='cpu')
    learn.fit_iters(2)
    return learn.save_checkpoint(tmp_path_factory.mktemp('ckpt'))


def test_inception_weights_load_as_torchmetrics_would(weights):
    from torchmetrics.image.fid import NoTrainInceptionV3
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    ours = ev.inception_features(weights / 'inception.pth')
    theirs = NoTrainInceptionV3('inception-v3-compat', ['2048'], feature_extractor_weights_path=str(weights / 'inception.pth'))
    with torch.inference_mode(): a, b = ours(x), theirs(to_uint8(x))
    assert a.shape == (2, 2048) and torch.equal(a, b)   # the same network, the same weights, the same input
    sd = torch.load(weights / 'inception.pth', weights_only=True)
    assert torch.equal(ours.net.Mixed_7c.branch1x1.conv.weight, sd['Mixed_7c.branch1x1.conv.weight'])


def test_lpips_weights_load_into_the_backbone(weights):
    net = ev.lpips_net(weights / 'alexnet.pth')
    sd = torch.load(weights / 'alexnet.pth', weights_only=True)
    assert torch.equal(getattr(net.net.slice5, '10').weight, sd['features.10.weight'])   # torchvision's conv5 is LPIPS' slice 5
    torch.manual_seed(1)
    x, y = torch.rand(2, 4, 3, 32, 32) * 2 - 1
    d = ev.lpips_distances(net, x, y)
    assert d.shape == (4,) and (d > 0).all()
    assert torch.allclose(ev.lpips_distances(net, y, x), d, rtol=1e-5)   # a distance: symmetric
    assert ev.lpips_distances(net, x, x).abs().max() < 1e-6               # and 0 from an image to itself


def test_weights_files_are_never_unpickled(weights):
    for load in (ev.inception_features, ev.lpips_net):
        with pytest.raises(ValueError, match='is not a'): load(weights / 'hostile.pth')
    assert not (weights / 'ran').exists()


def _evaluate(args, monkeypatch, capsys):
    "`stargan_nb evaluate ARGS` in this process, with a quick judge (96 faces, 1 epoch) in place of the 3,000-face one."
    monkeypatch.setattr(ev, 'evaluate_synthetic', functools.partial(ev.evaluate_synthetic, n_train=96, epochs=1))
    rc = cli.main(['evaluate', *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_reports_judge_fid_and_skips_in_one_line(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'empty_cache'))   # no cached weights
    rc, out, err = _evaluate(['--checkpoint', checkpoint, '--n', 30, '--out_dir', tmp_path / 'ev'], monkeypatch, capsys)
    assert rc == 0 and not err, err
    lines = out.splitlines()
    assert ev.SKIPPED['inception'] in lines and ev.SKIPPED['lpips'] in lines
    head = next(l for l in lines if 'judge-FID' in l)
    assert 'FID (Inception)' not in head and 'judge-KID' in head
    table = [l.split(' | ')[0].strip('| ') for l in lines[lines.index(head) + 2:] if l.startswith('|')]
    assert table == ['Black_Hair', 'Blond_Hair', 'Brown_Hair', 'Male', 'not Male', 'Young', 'not Young', 'mean']
    res = json.loads((tmp_path / 'ev' / 'results.json').read_text())
    assert res['measures']['judge'].startswith("judge: channel means of the SmallClassifier's stages below its last (112-d)")
    assert res['skipped'] == [ev.SKIPPED['inception'], ev.SKIPPED['lpips']]
    rows = list(csv.DictReader(open(tmp_path / 'ev' / 'distances.csv')))
    assert {'feature', 'domain', 'n_real', 'n_fake', 'fid', 'kid', 'kid_std', 'identity_fid', 'kid_subset_size'} <= set(rows[0])
    per = {r['domain']: r for r in rows if r['feature'] == 'judge'}
    for d in ('Male', 'not Male', 'Young', 'not Young'):   # a binary domain: its real images and its sources are the 30 faces
        assert int(per[d]['n_real']) + int(per[d]['n_fake']) == 30
    assert int(per['Male']['n_real']) == int(per['not Male']['n_fake'])
    hair = sum(int(per[d]['n_real']) for d in ('Black_Hair', 'Blond_Hair', 'Brown_Hair'))
    assert hair == 30 and sum(int(per[d]['n_fake']) for d in ('Black_Hair', 'Blond_Hair', 'Brown_Hair')) == 2 * 30
    assert float(per['mean']['fid']) == pytest.approx(res['judge_fid'])


@pytest.mark.slow
def test_cli_with_weights_reports_inception_fid_and_lpips(checkpoint, weights, tmp_path, monkeypatch, capsys):
    from torchmetrics.image.fid import NoTrainInceptionV3
    monkeypatch.setattr(NoTrainInceptionV3, 'INPUT_IMAGE_SIZE', 75)   # the CLI's path, not Inception's numbers: 1/16 of the work
    rc, out, err = _evaluate(['--checkpoint', checkpoint, '--n', 8, '--out_dir', tmp_path / 'ev', '--inception_weights',
                              weights / 'inception.pth', '--lpips_weights', weights / 'alexnet.pth'], monkeypatch, capsys)
    assert rc == 0 and not err, err
    assert 'skipped' not in out and '| FID (Inception) |' in out and 'LPIPS input→translation' in out
    res = json.loads((tmp_path / 'ev' / 'results.json').read_text())
    assert res['measures']['inception'].startswith('Inception v3 pt_inception-2015-12-05') and 'inception_fid' in res
    assert all(r['lpips'] > 0 for r in res['per_domain'])


def test_cli_bad_weights_are_a_user_error(checkpoint, weights, tmp_path, monkeypatch, capsys):
    for bad, says in ((tmp_path / 'missing.pth', 'weights not found'), (weights / 'alexnet.pth', 'not the pt_inception-2015-12-05')):
        rc, out, err = _evaluate(['--checkpoint', checkpoint, '--n', 8, '--out_dir', tmp_path / 'ev', '--inception_weights', bad],
                                 monkeypatch, capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    assert not (tmp_path / 'ev').exists()   # reported before any work
