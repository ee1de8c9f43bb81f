"Tests of translate / edit / evaluate beyond the notebooks': real training checkpoints, joint models, full-size official models, the benchmark."
import re, subprocess, sys, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stargan_nb.model import Generator, Discriminator
from stargan_nb.data import CELEBA_ATTRS, RAFD_EXPRESSIONS, to_float
from stargan_nb.faces import SyntheticFaces, synthetic_dls
from stargan_nb.translate import (load_generator, load_discriminator, save_official, translate_folder, domain_grid,
                                  domain_targets, prepare_image)
from stargan_nb.mask import LabelSpace
from stargan_nb.edit import Editor, decode_png, png_bytes, fast_generator
from stargan_nb.evaluate import evaluate_synthetic, evaluate_checkpoint, train_classifier

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=3)


def _train(tmp, dls, iters=2):
    from stargan_nb.learner import stargan_learner
    torch.manual_seed(0)
    learn = stargan_learner(dls, **TINY, num_iters=iters, num_iters_decay=1, lr_update_step=1, log_step=1, sample_step=10**6,
                            model_save_step=10**6, device='cpu')
    learn.fit_iters(iters)
    return learn, learn.save_checkpoint(tmp / 'models')


@pytest.fixture(scope='module')
def single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('single')
    learn, ckpt = _train(tmp, synthetic_dls(n_train=32, n_valid=16, size=32, bs=8))
    return learn, ckpt


@pytest.fixture(scope='module')
def joint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('joint')
    dls = {'CelebA': synthetic_dls(n_train=32, n_valid=16, size=32, bs=8),
           'RaFD': synthetic_dls(n_train=32, n_valid=16, size=32, bs=8, view='rafd')}
    return _train(tmp, dls)


@pytest.mark.parametrize('c_dim', [5, 8, 15])
def test_full_size_official_round_trip(tmp_path, c_dim):
    torch.manual_seed(c_dim)
    G = Generator(c_dim=c_dim)
    for p in G.parameters(): p.data.add_(torch.randn_like(p) * 0.05)
    G2 = load_generator(save_official(G, tmp_path / '200000-G.ckpt'))
    assert (G2.conv_dim, G2.c_dim, G2.repeat_num) == (64, c_dim, 6)
    x, c = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, c_dim)
    with torch.no_grad(): assert torch.equal(G(x, c), G2(x, c))


def test_project_checkpoint_from_training(single, tmp_path):
    learn, ckpt = single
    G = load_generator(ckpt)
    assert G.config['image_size'] == 32 and G.config['label_names'] == CELEBA_ATTRS
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    c = torch.tensor([[1., 0, 0, 1, 0]] * 3)
    with torch.no_grad(): assert torch.equal(G(x, c), learn.model.G.float().eval()(x, c))
    official = load_generator(ckpt.parent / f'{learn.iteration}-G.ckpt', image_size=32)
    with torch.no_grad(): assert torch.equal(official(x, c), G(x, c))
    D = load_discriminator(ckpt)
    assert D.image_size == 32 and D.c_dim == 5


def test_translate_folder_with_trained_checkpoint(single, tmp_path):
    _, ckpt = single
    G, D = load_generator(ckpt), load_discriminator(ckpt)
    faces = SyntheticFaces(3, size=48, seed=2)
    photos = tmp_path / 'photos'; photos.mkdir()  # the outputs go beside the photos, not among them
    for i in range(3): Image.fromarray(faces.images[i].permute(1, 2, 0).numpy()).save(photos / f'face{i}.png')
    out = translate_folder(G, photos, tmp_path / 'out', D=D, per_target=True)
    assert len(out) == 3 * 5 and all(Image.open(p).size == (32, 32) for p in out)
    grid = translate_folder(G, sorted(photos.glob('face*.png')), tmp_path / 'grid', c_org='Blond_Hair,Male', batch_size=2)
    assert [p.name for p in grid] == ['grid-1.png', 'grid-2.png']
    assert Image.open(grid[0]).size == (6 * 32, 2 * 32)


def test_joint_checkpoint(joint):
    learn, ckpt = joint
    G = load_generator(ckpt)
    ls = LabelSpace.from_config(G.config)
    assert ls.n == 2 and ls.g_dim == 15 and G.c_dim == 15
    faces = SyntheticFaces(2, size=32, seed=3, view='rafd')
    x, c = to_float(faces.images), faces.labels
    names, targets = domain_targets(c, G.config, dataset='RaFD')
    assert names[:8] == RAFD_EXPRESSIONS and len(targets) == 13
    grid, cols = domain_grid(G, x, c, dataset="RaFD")
    assert grid.shape == (3, 2 * 32, 14 * 32)
    ed = Editor(G, faces)
    assert set(ed.toggles) == {'RaFD'} and list(ed.sliders) == CELEBA_ATTRS
    ed.toggles['RaFD'].value = 'surprised'
    assert ed.wait(30) and decode_png(ed.output_view.value).shape == (256, 256, 3)
    assert torch.equal(ed.label()[0, 13:], torch.tensor([0., 1]))
    clf = train_classifier(SyntheticFaces(64, size=32, seed=9, view='rafd'), categorical=True, epochs=1)
    res = evaluate_synthetic(G, n=16, view='rafd', classifier=clf)
    assert [r['domain'] for r in res['per_domain']] == RAFD_EXPRESSIONS
    assert np.isnan(res['non_target_accuracy'])   # one categorical label: nothing else to keep


def test_evaluate_checkpoint_files(single, tmp_path):
    _, ckpt = single
    res = evaluate_checkpoint(ckpt, tmp_path / 'ev', n=24, n_train=96, epochs=1)
    assert {'target_accuracy', 'counterfactual_l1', 'identity_l1', 'psnr', 'reconstruction_l1'} <= set(res)
    assert sorted(p.name for p in (tmp_path / 'ev').iterdir()) == ['best_worst.png', 'distances.csv', 'results.csv', 'results.json', 'results.md']
    assert res['n_images'] == 24 and 0 <= res['target_accuracy'] <= 1


def test_editor_fast_path_matches_its_display():
    torch.manual_seed(0)
    G = Generator(conv_dim=16, c_dim=5, repeat_num=2)
    faces = SyntheticFaces(2, size=32, seed=4)
    ed = Editor(G, faces, preview=16)
    for v in (-1., 0.35, 2.):
        ed.sliders['Young'].value = v
        c = faces.labels[0].clone(); c[4] = v
        assert ed.wait(30)
        assert np.array_equal(decode_png(ed.output_view.value), decode_png(png_bytes(ed.G(faces[0][0][None], c[None])[0], 256)))
    ed.close()


def test_load_image_bytes_and_cmyk(tmp_path):
    Image.new('CMYK', (50, 40), (0, 255, 255, 0)).save(tmp_path / 'cmyk.jpg')
    x = prepare_image(tmp_path / 'cmyk.jpg', 32)
    assert x.shape == (3, 32, 32) and x[0].mean() > 0.8 and x[1].mean() < -0.8
    assert torch.equal(prepare_image((tmp_path / 'cmyk.jpg').read_bytes(), 32), x)


@pytest.mark.slow
def test_latency_benchmark_runs():
    r = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'edit_latency.py'), '--n', '2', '--size', '32',
                        '--drags', '2', '--isa', 'avx2'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert re.fullmatch(r'drag_ms: \d+\.\d', lines[-2]), lines[-2:]
    assert re.fullmatch(r'release_ms: \d+\.\d', lines[-1]), lines[-2:]
    assert 'ONEDNN_MAX_CPU_ISA=AVX2' in r.stdout and 'editor: torch.float32' in r.stdout, r.stdout
    assert 'skipped: bf16 (emulated on this CPU)' in r.stdout, r.stdout
