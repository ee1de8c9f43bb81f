"""A hostile user and hostile files (issue #12): nothing runs that should not, nothing is lost, every error names the fix."""
import os, pickle, subprocess, sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from stargan_nb.model import Generator, Discriminator
from stargan_nb.translate import load_generator, load_discriminator, read_checkpoint
from stargan_nb.evaluate import evaluate_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=None, timeout=300, **kw):
    "Run the `stargan_nb` console script as a user would: (exit code, stdout, stderr)."
    r = subprocess.run([sys.executable, '-c', 'import sys; from stargan_nb.cli import main; sys.exit(main())', *map(str, args)],
                       capture_output=True, text=True, cwd=cwd, timeout=timeout, **kw)
    return r.returncode, r.stdout, r.stderr


class Payload:
    "Unpickling this creates `marker`: the file-system trace of code a checkpoint ran."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (Path.touch, (Path(self.marker),))


@pytest.fixture
def hostile(tmp_path):
    "Two hostile checkpoints, a bare pickle `100000-G.ckpt` and a torch zip `100-stargan.pt`, plus one image to translate."
    marker = tmp_path / 'payload-ran'
    with open(tmp_path / '100000-G.ckpt', 'wb') as f: pickle.dump({'main.0.weight': Payload(marker)}, f)
    torch.save({'G': Generator(conv_dim=8, c_dim=5, repeat_num=1).state_dict(), 'D': Payload(marker),
                'config': Payload(marker), 'iteration': 100}, tmp_path / '100-stargan.pt')
    (tmp_path / 'imgs').mkdir()
    Image.new('RGB', (40, 40), (200, 120, 90)).save(tmp_path / 'imgs' / 'face.png')
    return tmp_path, marker


# 1. A checkpoint can run code
@pytest.mark.parametrize('name', ['100000-G.ckpt', '100-stargan.pt'])
def test_cli_never_unpickles_a_checkpoint(hostile, name):
    tmp, marker = hostile
    for args in (['test', '--checkpoint', tmp / name, '--images', tmp / 'imgs', '--out_dir', tmp / 'out'],
                 ['evaluate', '--checkpoint', tmp / name, '--n', '4', '--out_dir', tmp / 'ev']):
        rc, out, err = cli(*args)
        assert not marker.exists(), f"the payload ran during {args[0]}"
        assert rc == 2, (rc, out, err)
        assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err
        assert name in err and '--trust_checkpoint' in err, err
    assert not (tmp / 'out').exists()


@pytest.mark.parametrize('name', ['100000-G.ckpt', '100-stargan.pt'])
def test_api_never_unpickles_by_default(hostile, name):
    tmp, marker = hostile
    for load in (load_generator, load_discriminator, read_checkpoint, lambda p: evaluate_checkpoint(p, n=4)):
        with pytest.raises(ValueError, match='trusted=True'): load(tmp / name)
    assert not marker.exists()


def test_trust_is_an_explicit_opt_in(hostile):
    tmp, marker = hostile
    read_checkpoint(tmp / '100-stargan.pt', trusted=True)
    assert marker.exists()   # what --trust_checkpoint risks, shown once
    rc, out, err = cli('test', '--help')
    assert '--trust_checkpoint' in out and 'run any code' in ' '.join(out.split())


def test_resume_never_unpickles(hostile):
    from stargan_nb.faces import synthetic_dls
    from stargan_nb.learner import stargan_learner
    tmp, marker = hostile
    learn = stargan_learner(synthetic_dls(n_train=8, n_valid=4, size=32, bs=4), g_conv_dim=8, d_conv_dim=8, g_repeat_num=1,
                            d_repeat_num=3, device='cpu')
    with pytest.raises(Exception): learn.resume(tmp, 100)
    assert not marker.exists()


def test_project_and_official_checkpoints_load_safely(tmp_path):
    "What the project and the official code write is tensors and plain values: the safe reader takes both."
    G, D = Generator(conv_dim=8, c_dim=5, repeat_num=1), Discriminator(image_size=32, conv_dim=8, c_dim=5, repeat_num=3)
    torch.save(G.state_dict(), tmp_path / '200000-G.ckpt')
    torch.save({'G': G.state_dict(), 'D': D.state_dict(), 'config': {'image_size': 32, 'label_names': list('abcde')}},
               tmp_path / '7-stargan.pt')
    assert load_generator(tmp_path / '200000-G.ckpt').c_dim == 5
    assert load_generator(tmp_path / '7-stargan.pt').config['label_names'] == list('abcde')
    assert load_discriminator(tmp_path / '7-stargan.pt').image_size == 32


TINY = ['--num_iters', '2', '--batch_size', '2', '--image_size', '16', '--g_conv_dim', '8', '--d_conv_dim', '8',
        '--g_repeat_num', '1', '--d_repeat_num', '2', '--n_critic', '1', '--log_step', '1', '--sample_step', '2',
        '--model_save_step', '2', '--use_tensorboard', 'false', '--num_workers', '0', '--device', 'cpu']


def tiny_run(tmp, *args):
    "A two-iteration `stargan_nb train` writing under `tmp`, with `args` last (argparse keeps an option's last value)."
    return cli('train', *TINY, '--model_save_dir', tmp / 'models', '--sample_dir', tmp / 'samples', '--log_dir', tmp / 'logs', *args)


def assert_user_error(rc, out, err, *fix):
    "Exit status 2, one line on stderr naming the fix, no traceback."
    assert rc == 2, (rc, out, err)
    assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err
    for f in fix: assert f in err, (f, err)


# 5. Labels go wrong silently
def test_labels_are_checked_not_guessed(tmp_path):
    img = tmp_path / 'imgs'; img.mkdir()
    for i in range(8): Image.new('RGB', (16, 16), (30 * i, 90, 0)).save(img / f'{i}.png')
    def labels(*rows, name='labels.csv'):
        (tmp_path / name).write_text('\n'.join(rows) + '\n'); return tmp_path / name
    rows = ['file,smiling,young'] + [f'{i}.png,{i % 2},{int(i < 4)}' for i in range(8)]
    rows[4] = '3.png,2,1'  # line 5: a typo, which used to turn 'smiling' into the classes '0', '1', '2'
    csv = labels(*rows)
    rc, out, err = tiny_run(tmp_path, '--dataset', 'csv', '--image_dir', img, '--csv_path', csv)
    assert_user_error(rc, out, err, f"{csv}, line 5, column 'smiling': '2' is not a 0/1 label", '--categorical_col smiling')

    from stargan_nb.data import csv_dls, csv_items
    ok = [f'{i}.png,{i % 2},{int(i < 4)}' for i in range(8)]
    with pytest.raises(ValueError, match=r"unknown split value 'dev' \(lines 2, 3\); accepted \(any case\): train, training, valid"):
        csv_dls(img, labels('file,smiling,young,split', *[o + ',dev' for o in ok[:2]], *[o + ',train' for o in ok[2:]]))
    with pytest.raises(ValueError, match="no row of the training split") as e:  # not "use a smaller batch size"
        csv_dls(img, labels('file,smiling,young,split', *[o + ',valid' for o in ok]), bs=2)
    assert 'batch' not in str(e.value)
    with pytest.raises(ValueError, match=r"1.png is listed on line 3 and line 10 with different labels \(smiling\)"):
        csv_items(img, labels('file,smiling,young', *ok, '1.png,0,1'))
    with pytest.warns(UserWarning) as w:
        files, y, names, *_ = csv_items(img, labels('file,smiling,young', *ok, '1.png,1,1', name='dup.csv'), label_cols=['smiling'])
    msgs = [str(o.message) for o in w]
    assert len(files) == 8 and names == ['smiling']
    assert any(f"{tmp_path / 'dup.csv'}: 1 image(s) listed more than once" in m and 'lines 3, 10' in m for m in msgs), msgs
    with pytest.warns(UserWarning, match=r"column 'young' is on \(1\) in all 4 rows"):
        csv_items(img, labels('file,smiling,young', *ok[:4]))


# 7. Phone photos train sideways
def test_training_and_test_read_a_phone_photo_alike(tmp_path):
    from PIL import ImageOps
    from torchvision.transforms.functional import pil_to_tensor
    import numpy as np
    from stargan_nb import data
    from stargan_nb.translate import prepare_image
    upright = Image.new('RGB', (32, 32), (255, 0, 0)); upright.paste((0, 0, 255), (0, 16, 32, 32))  # red top, blue bottom
    exif = Image.Exif(); exif[0x0112] = 6  # "turn 90° clockwise to view", as a phone held upright writes
    upright.rotate(90).save(tmp_path / 'phone.jpg', exif=exif, quality=95)  # stored sideways: red left, blue right
    ds = data.ImageDataset([tmp_path / 'phone.jpg'], [[1.]], ['a'], image_size=32)
    x, _ = ds[0]
    assert torch.allclose(x[:, 3, 4], torch.tensor([1., -1, -1]), atol=0.05), x[:, 3, 4]    # red on top
    assert torch.allclose(x[:, 28, 27], torch.tensor([-1., -1, 1]), atol=0.05), x[:, 28, 27]  # blue below
    assert torch.equal(x, prepare_image(tmp_path / 'phone.jpg', 32))  # `test` sees what training saw
    assert data._decode_jpeg(np.fromfile(tmp_path / 'phone.jpg', np.uint8)) is not None  # still libjpeg-turbo's fast path
    for o in range(1, 9):
        exif[0x0112] = o
        upright.save(tmp_path / f'o{o}.jpg', exif=exif, quality=95)
        want = pil_to_tensor(ImageOps.exif_transpose(Image.open(tmp_path / f'o{o}.jpg')).convert('RGB'))
        assert torch.equal(data.load_image(tmp_path / f'o{o}.jpg'), want), o


# 9. User errors as tracebacks
@pytest.mark.parametrize('args,fix', [
    (['--batch_size', '0'], "argument --batch_size: expected a whole number of at least 1, got '0'"),
    (['--batch_size', '-4'], "argument --batch_size: expected a whole number of at least 1, got '-4'"),
    (['--n_critic', '0'], "argument --n_critic: expected a whole number of at least 1"),
    (['--model_save_step', '0'], "argument --model_save_step: expected a whole number of at least 1"),
    (['--num_iters', '0'], "argument --num_iters: expected a whole number of at least 1"),
    (['--device', 'gpu'], "argument --device: unknown device 'gpu'; this machine has: auto, cpu"),
    pytest.param(['--device', 'cuda'], "device 'cuda' is not available (no CUDA GPU is visible",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a GPU')),
    (['--batchsize', '8'], 'unknown option --batchsize; did you mean --batch_size?'),
])
def test_bad_options_are_one_line_at_parse_time(tmp_path, args, fix):
    rc, out, err = tiny_run(tmp_path, '--dataset', 'synthetic', '--n_train', '8', '--n_valid', '4', *args)
    assert_user_error(rc, out, err, 'stargan_nb train: error: ', fix)
    assert not (tmp_path / 'models').exists()  # refused before any work


def test_tiny_training_images_are_refused_like_test_does(tmp_path):
    for c in 'ab':
        (tmp_path / 'imgs' / c).mkdir(parents=True)
        for i in range(4): Image.new('RGB', (1, 1), (60 * i, 0, 0)).save(tmp_path / 'imgs' / c / f'{i}.png')
    run = lambda *a: tiny_run(tmp_path, '--dataset', 'folder', '--image_dir', tmp_path / 'imgs', '--num_workers', '1', *a)
    assert_user_error(*run(), 'is only 1x1 pixels; at least 8 on the shorter side is needed')
    assert not (tmp_path / 'models').exists()
    rc, out, err = run('--debug')
    assert rc != 0 and 'Traceback' in err and 'UserError' in err  # --debug: the traceback, for a bug report
