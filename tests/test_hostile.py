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
