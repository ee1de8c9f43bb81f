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
@pytest.mark.slow
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


def last_wins(*argv):
    "`argv` with each option only once, at its last value: what argparse makes of it, without its warning about the repeat."
    out, opts = [], {}
    for a in map(str, argv):
        if a.startswith('--'): opts.pop(a, None); opts[a] = []; cur = opts[a]
        elif opts: cur.append(a)
        else: out.append(a)
    return out + [t for k, v in opts.items() for t in (k, *v)]


def tiny_run(tmp, *args):
    "A two-iteration `stargan_nb train` writing under `tmp`, with `args` in place of the same options before them."
    return cli(*last_wins('train', *TINY, '--model_save_dir', tmp / 'models', '--sample_dir', tmp / 'samples', '--log_dir', tmp / 'logs', *args))


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


@pytest.mark.slow
def test_tiny_training_images_are_refused_like_test_does(tmp_path):
    for c in 'ab':
        (tmp_path / 'imgs' / c).mkdir(parents=True)
        for i in range(4): Image.new('RGB', (1, 1), (60 * i, 0, 0)).save(tmp_path / 'imgs' / c / f'{i}.png')
    run = lambda *a: tiny_run(tmp_path, '--dataset', 'folder', '--image_dir', tmp_path / 'imgs', '--num_workers', '1', *a)
    assert_user_error(*run(), 'is only 1x1 pixels; at least 8 on the shorter side is needed')
    assert not list((tmp_path / 'models').iterdir())  # the folder was tried before the data was read (item 3), nothing saved
    rc, out, err = run('--debug')
    assert rc != 0 and 'Traceback' in err and 'UserError' in err  # --debug: the traceback, for a bug report


# Items 2, 3, 4, 5 (the resume part), 6 and 8: interrupts, output folders, resuming, flips, damaged checkpoints.
import errno, json, math, re, shlex, signal, time
import numpy as np
from stargan_nb.callbacks import read_log
from stargan_nb.checkpoint import checkpoint_iterations
from stargan_nb.step import LOSS_NAMES

TINY_RUN = ['--dataset', 'synthetic', '--image_size', '32', '--n_train', '64', '--n_valid', '8', '--batch_size', '8',
            '--num_workers', '0', '--g_conv_dim', '8', '--d_conv_dim', '8', '--g_repeat_num', '1', '--d_repeat_num', '3',
            '--num_iters_decay', '10', '--lr_update_step', '2', '--log_step', '5', '--sample_step', '1000',
            '--use_tensorboard', 'false', '--device', 'cpu', '--precision', 'fp32']


def run_dirs(d):
    return ['--model_save_dir', d / 'models', '--sample_dir', d / 'samples', '--log_dir', d / 'logs']


def logged_losses(d):
    return json.dumps([{k: r[k] for k in ['iteration'] + LOSS_NAMES} for r in read_log(d / 'logs' / 'log.csv')])


def one_image(d):
    d.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', (40, 40), (200, 120, 90)).save(d / 'face.png')
    return d


# `stargan_nb train` as a user runs it, on a slower machine: each iteration takes 0.2 s more, so a signal lands mid-run
SLOW_CLI = """
import sys, time
from stargan_nb.callbacks import CSVLog
write = CSVLog.after_batch
def slowly(self): write(self); time.sleep(0.2)
CSVLog.after_batch = slowly
from stargan_nb.cli import main
sys.exit(main())
"""


def slow_train(argv):
    "A `stargan_nb train` process in its own process group, with the default SIGINT handling a terminal's foreground job has."
    return subprocess.Popen([sys.executable, '-c', SLOW_CLI, *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_rows(p, log, n, timeout=300):
    t = time.time()
    while not (log.exists() and len(log.read_text().splitlines()) > n):  # header + n rows
        assert p.poll() is None, p.communicate()
        assert time.time() - t < timeout
        time.sleep(0.05)


# 2. Ctrl-C loses work
@pytest.mark.slow
def test_ctrl_c_saves_the_iteration_and_resumes_exactly(tmp_path):
    ref, run = tmp_path / 'ref', tmp_path / 'run'
    common = [*TINY_RUN, '--num_iters', '30', '--model_save_step', '1000']
    rc, out, err = cli('train', *common, *run_dirs(ref))
    assert rc == 0, err

    argv = ['train', *common, *run_dirs(run)]
    p = slow_train(argv)
    wait_for_rows(p, run / 'logs' / 'log.csv', 8)
    os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in the terminal does: the whole foreground process group
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (p.returncode, err)
    assert 'Traceback' not in err, err
    lines = [l for l in err.splitlines() if 'resume with:' in l]
    assert len(lines) == 1, err
    m = re.fullmatch(r"stargan_nb train: SIGINT: stopped after iteration (\d+), saved (\S+); resume with: (.+)", lines[0])
    assert m, lines[0]
    n, models = int(m[1]), run / 'models'
    assert 8 <= n < 30 and Path(m[2]) == models / f'{n}-stargan.pt'
    assert sorted(f.name for f in models.iterdir()) == [f'{n}-D.ckpt', f'{n}-G.ckpt', f'{n}-stargan.pt']  # only Ctrl-C saved
    assert len(read_log(run / 'logs' / 'log.csv')) == n
    cmd = shlex.split(m[3])
    assert cmd == ['stargan_nb', *map(str, argv), '--resume_iters', str(n)]

    rc, out, err = cli(*cmd[1:])  # the printed command, as the user would paste it
    assert rc == 0, err
    assert f'from iteration {n}' in out.splitlines()[0]
    assert logged_losses(run) == logged_losses(ref)  # every iteration, before and after Ctrl-C, to the last bit
    a, b = (torch.load(d / 'models' / '30-stargan.pt', weights_only=True) for d in (ref, run))
    for k in a['G']: assert torch.equal(a['G'][k], b['G'][k]), k
    for k in a['D']: assert torch.equal(a['D'][k], b['D'][k]), k


def test_sigterm_saves_and_exits_143(tmp_path):
    p = slow_train(['train', *TINY_RUN, '--num_iters', '1000', '--model_save_step', '1000', *run_dirs(tmp_path)])
    wait_for_rows(p, tmp_path / 'logs' / 'log.csv', 3)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, (p.returncode, err)
    m = re.search(r"SIGTERM: stopped after iteration (\d+), saved \S+; resume with: stargan_nb train .* --resume_iters (\d+)$", err.strip())
    assert m and m[1] == m[2] and checkpoint_iterations(tmp_path / 'models') == [int(m[1])], err


# 3. Bad output folders are found 10,000 iterations too late
@pytest.mark.slow
def test_output_folders_are_tried_before_training(tmp_path):
    (tmp_path / 'file').write_text('not a folder')
    ok = tmp_path / 'ok'
    base = ['train', *TINY_RUN, '--num_iters', '2', '--model_save_step', '2', *run_dirs(ok)]
    for option, bad, reason in [('--model_save_dir', tmp_path / 'file' / 'models', 'cannot be written: Not a directory'),
                                ('--sample_dir', tmp_path / 'file', 'is a file, not a folder'),
                                ('--log_dir', tmp_path / 'file' / 'logs', 'cannot be written: Not a directory')]:
        rc, out, err = cli(*last_wins(*base, option, bad))
        assert rc == 2 and err.strip().splitlines() == [f"stargan_nb train: error: {option[2:]} {bad} {reason}"], (rc, err)
        assert 'training' not in out and not (ok / 'logs' / 'log.csv').exists()  # stopped before the data, the model, the log
    rc, out, err = cli(*base)
    assert rc == 0, err
    rc, out, err = cli('test', '--checkpoint', ok / 'models' / '2-stargan.pt', '--images', one_image(tmp_path / 'imgs'),
                       '--out_dir', tmp_path / 'file')
    assert rc == 2 and err.strip().splitlines() == [f"stargan_nb test: error: out_dir {tmp_path / 'file'} is a file, not a folder"], err


@pytest.mark.skipif(os.name != 'posix' or os.geteuid() == 0, reason='root writes into a read-only (chmod 555) folder anyway')
def test_read_only_output_folder_is_refused(tmp_path):
    ro = tmp_path / 'ro'; ro.mkdir(); ro.chmod(0o555)
    try:
        rc, out, err = cli(*last_wins('train', *TINY_RUN, '--num_iters', '2', *run_dirs(tmp_path), '--model_save_dir', ro / 'models'))
    finally: ro.chmod(0o755)
    assert rc == 2 and f"model_save_dir {ro / 'models'} cannot be written: Permission denied" in err, err


def test_full_disk_at_a_checkpoint_keeps_nothing_of_that_iteration(tmp_path, capsys, monkeypatch):
    from stargan_nb.cli import main
    models = tmp_path / 'models'; models.mkdir()
    if Path('/dev/full').exists():  # the disk is full when D of iteration 4 is written: Linux's always-full device stands in for it
        os.symlink('/dev/full', models / f'.4-D.ckpt.{os.getpid()}.tmp')
    else:
        save = torch.save
        def full(obj, f):
            if Path(f.name).name.startswith('.4-D.ckpt'): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return save(obj, f)
        monkeypatch.setattr(torch, 'save', full)
    rc = main(['train', *TINY_RUN, '--num_iters', '6', '--model_save_step', '2', *run_dirs(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert (f"stargan_nb train: error: could not save iteration 4: writing {models / '4-D.ckpt'} failed: No space left on device. "
            f"Nothing of iteration 4 was kept; the last intact checkpoint is {models / '2-stargan.pt'}") in err.splitlines(), err
    assert sorted(f.name for f in models.iterdir()) == ['2-D.ckpt', '2-G.ckpt', '2-stargan.pt']  # no orphan 4-G.ckpt, no temp file


# 4. --resume_iters N older than the latest corrupts the run
@pytest.mark.slow
def test_resume_before_the_latest_is_refused_with_the_way_out(tmp_path):
    base = ['train', *TINY_RUN, '--num_iters', '4', '--model_save_step', '1', *run_dirs(tmp_path)]
    assert cli(*base)[0] == 0
    files = lambda: {str(f.relative_to(tmp_path)): f.stat().st_mtime_ns for f in tmp_path.rglob('*')}
    before = files()
    rc, out, err = cli(*base, '--resume_iters', '2')
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{tmp_path / 'models'} has checkpoints after iteration 2 (iterations 3, 4)" in err, err
    assert files() == before  # nothing written: the checkpoints and the log are as they were
    subprocess.run(err.split('Move them aside first: ')[1].strip(), shell=True, check=True)
    aside = tmp_path / 'models' / 'after-2'
    assert sorted(f.name for f in aside.iterdir()) == ['3-D.ckpt', '3-G.ckpt', '3-stargan.pt', '4-D.ckpt', '4-G.ckpt',
                                                        '4-stargan.pt', 'log.csv']
    assert len(read_log(aside / 'log.csv')) == 4
    rc, out, err = cli(*base, '--resume_iters', '2')
    assert rc == 0, err
    assert checkpoint_iterations(tmp_path / 'models') == [1, 2, 3, 4]


# 5, the resume part: resume compares label names, image size and architecture, and names every difference
@pytest.mark.slow
def test_resume_names_every_difference(tmp_path):
    imgs = tmp_path / 'imgs'; imgs.mkdir()
    rows = []
    for i in range(16):
        Image.new('RGB', (32, 32), (16 * i, 80, 160)).save(imgs / f'{i}.png')
        rows.append(f'{i}.png,{i % 2},{i // 8}')
    (tmp_path / 'labels.csv').write_text('image,Smiling,Glasses\n' + '\n'.join(rows) + '\n')
    base = ['train', *TINY_RUN, '--dataset', 'csv', '--image_dir', imgs, '--csv_path', tmp_path / 'labels.csv',
            '--num_iters', '2', '--model_save_step', '2', *run_dirs(tmp_path)]
    assert cli(*base)[0] == 0
    # the same columns in another order (as after an edit in a spreadsheet), and another image size
    (tmp_path / 'labels.csv').write_text('image,Glasses,Smiling\n' + '\n'.join(f"{r.split(',')[0]},{r.split(',')[2]},{r.split(',')[1]}"
                                                                             for r in rows) + '\n')
    rc, out, err = cli(*last_wins(*base, '--num_iters', '4', '--image_size', '16', '--resume_iters', 'latest'))
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert ("does not fit this run: label_names: checkpoint ['Smiling', 'Glasses'], this run ['Glasses', 'Smiling'] "
            "(the same names in another order); image_size: checkpoint 32, this run 16") in err, err


# 6. Training flips every image of your own data, and you cannot turn it off
@pytest.mark.slow
def test_flip_is_an_option_stored_and_shown(tmp_path, capsys):
    from fastai.callback.core import Callback
    from stargan_nb.train import train
    signs = tmp_path / 'signs'  # pictures that are not symmetric: bright on the left
    for k in ('left', 'also_left'):
        (signs / k).mkdir(parents=True)
        for i in range(8):
            a = np.zeros((32, 32, 3), np.uint8); a[:, :16] = 255
            Image.fromarray(a).save(signs / k / f'{i}.png')

    class Mirrored(Callback):
        "Counts the training images that arrive mirrored (bright on the right)."
        order = -50
        def before_fit(self): self.learn.mirrored = 0
        def before_batch(self):
            x = self.learn.xb[0]
            self.learn.mirrored += int((x[..., :16].mean((1, 2, 3)) < x[..., 16:].mean((1, 2, 3))).sum())

    def run(flip):
        d = tmp_path / f'run-{flip}'
        opts = dict(dataset='folder', image_dir=str(signs), image_size=32, batch_size=8, num_iters=4, n_critic=2, log_step=2,
                    g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=3, num_workers=0, device='cpu', precision='fp32',
                    use_tensorboard=False, sample_step=1000, model_save_step=4, model_save_dir=str(d / 'models'),
                    log_dir=str(d / 'logs'), sample_dir=str(d / 'samples'))
        learn = train(**opts, cbs=Mirrored(), **({} if flip is None else {'flip': flip}))
        first = capsys.readouterr().out.splitlines()[0]
        return learn.mirrored, first, torch.load(d / 'models' / '4-stargan.pt', weights_only=True)['config']['flip']

    torch.manual_seed(0)
    for flip, shown, stored in [(None, 'flip off', False), ('false', 'flip off', False), ('true', 'flip on', True)]:
        mirrored, first, saved = run(flip)
        assert first.startswith('training folder: 32x32 images, labels also_left, left, ') and shown in first, first
        assert saved is stored
        assert (mirrored > 0) == stored, (flip, mirrored)  # 32 images seen; with flips, none mirrored has odds 2**-32
    rc, out, err = cli('train', '--help')
    help_text = ' '.join(out.split())
    assert '--flip {auto,true,false}' in help_text and 'off for the synthetic faces and for your own folder/csv data' in help_text


# 8. Corrupt checkpoints end in raw tracebacks
@pytest.mark.slow
def test_damaged_checkpoints_name_the_file_and_the_last_intact_one(tmp_path):
    base = ['train', *TINY_RUN, '--num_iters', '4', '--model_save_step', '2', *run_dirs(tmp_path)]
    assert cli(*base)[0] == 0
    models, imgs = tmp_path / 'models', one_image(tmp_path / 'imgs')
    good = (models / '4-stargan.pt').read_bytes()
    for bad in (good[:len(good) // 2], b'', b'\x80not a checkpoint at all'):  # cut short, empty, overwritten
        (models / '4-stargan.pt').write_bytes(bad)
        rc, out, err = cli('test', '--checkpoint', models / '4-stargan.pt', '--images', imgs, '--out_dir', tmp_path / 'out')
        assert rc == 2 and len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err
        assert err.startswith(f"stargan_nb test: error: {models / '4-stargan.pt'} is damaged or not a PyTorch checkpoint (") and \
               err.strip().endswith(f"; the last intact checkpoint beside it is {models / '2-stargan.pt'}"), err
    rc, out, err = cli(*last_wins(*base, '--num_iters', '6', '--resume_iters', 'latest'))
    assert rc == 0, err
    assert f"{models / '4-stargan.pt'} is damaged" in err and "'latest' skips it" in err, err
    assert f"from iteration 2 ({models / '2-stargan.pt'})" in out.splitlines()[0]
    assert checkpoint_iterations(models) == [2, 4, 6] and torch.load(models / '4-stargan.pt', weights_only=True)['iteration'] == 4

    (models / '6-stargan.pt').write_bytes(b'')  # a good 6-G.ckpt beside a damaged project file
    rc, out, err = cli('test', '--checkpoint', models / '6-G.ckpt', '--images', imgs, '--out_dir', tmp_path / 'out6')
    assert f"ignoring {models / '6-stargan.pt'} beside 6-G.ckpt: it is damaged or not a checkpoint. 6-G.ckpt is read as an " \
           "official checkpoint (128x128, the official labels): if it was trained at another size, pass --image_size" in err, err
    rc, out, err = cli('test', '--checkpoint', models / '6-G.ckpt', '--images', imgs, '--out_dir', tmp_path / 'out6', '--image_size', '32')
    assert rc == 0, err


# Issue #28: nothing of the user's is ever overwritten or mixed
from stargan_nb.cli import main
from stargan_nb.data import CELEBA_ATTRS

PROJECT_CONFIG = {'image_size': 32, 'label_names': CELEBA_ATTRS}


def project_checkpoint(path, G=None, D=None, **config):
    "A project checkpoint with a small G (and D), as `save_checkpoint` writes its G, D and config."
    G = G or Generator(conv_dim=8, c_dim=5, repeat_num=1).state_dict()
    torch.save({'G': G, **({'D': D} if D is not None else {}), 'config': {**PROJECT_CONFIG, **config}}, path)
    return path


def in_process(capsys, *args):
    "`stargan_nb` run in this process (quicker than a new one): (exit code, stdout, stderr)."
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def snapshot(d):
    return {str(f.relative_to(d)): f.read_bytes() for f in sorted(Path(d).rglob('*')) if f.is_file()}


def test_test_never_writes_over_or_into_its_inputs(tmp_path, capsys):
    ck, imgs = project_checkpoint(tmp_path / '1-stargan.pt'), one_image(tmp_path / 'imgs')
    Image.new('RGB', (40, 40), (10, 200, 30)).save(imgs / 'face-Male.png')  # the user's own file, named as an output would be
    before = snapshot(imgs)
    args = lambda out: ['test', '--checkpoint', ck, '--images', imgs, '--labels', 'Male', '--per_target', '--out_dir', out]
    for out, where in [(imgs, 'is the input folder'), (imgs / 'out', f'is inside the input folder {imgs}')]:
        assert_user_error(*in_process(capsys, *args(out)), f"--out_dir {out} {where}",
                          'choose another --out_dir, or pass --allow_out_dir_in_images')
        assert snapshot(imgs) == before
    rc, out, err = cli(*args(imgs), '--allow_out_dir_in_images')  # a real process, as the user ran it
    assert rc == 0, err
    after = snapshot(imgs)
    assert {k: after[k] for k in before} == before   # no input replaced, face-Male.png included
    new = sorted(set(after) - set(before))
    assert len(new) == 10 and 'face-Male-out.png' in new and out.strip() == f"wrote 10 file(s) to {imgs}", (new, out)


def test_output_names_never_collide(tmp_path, capsys):
    ck, imgs = project_checkpoint(tmp_path / '1-stargan.pt'), tmp_path / 'imgs'
    imgs.mkdir()
    for i, n in enumerate(['x.png', 'x.jpg', 'x y.png', 'x_y.png', 'X.png']):
        Image.new('RGB', (40, 40), (40 * i, 90, 0)).save(imgs / n)
    if len(list(imgs.iterdir())) < 5: (imgs / 'X.png').unlink()  # a case-insensitive file system holds one of x.png, X.png
    n = len(list(imgs.iterdir()))
    rc, out, err = in_process(capsys, 'test', '--checkpoint', ck, '--images', imgs, '--labels', 'Male', '--per_target',
                              '--out_dir', tmp_path / 'out')
    assert rc == 0, err
    written = sorted(p.name for p in (tmp_path / 'out').iterdir())
    assert out.strip() == f"wrote {5 * n} file(s) to {tmp_path / 'out'}" and len(written) == 5 * n, (out, written)
    assert len({w.lower() for w in written}) == len(written) and 'x_jpg-Male.png' in written  # apart on any file system
    rc, out2, err = in_process(capsys, 'test', '--checkpoint', ck, '--images', imgs, '--labels', 'Male', '--per_target',
                               '--out_dir', tmp_path / 'out')
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == written  # the same names on every run


def test_a_run_folder_belongs_to_one_run(tmp_path, capsys):
    models = tmp_path / 'models'
    p = slow_train(['train', *TINY_RUN, '--num_iters', '1000', '--model_save_step', '2', *run_dirs(tmp_path)])
    try:
        wait_for_rows(p, tmp_path / 'logs' / 'log.csv', 3)
        rc, out, err = in_process(capsys, 'train', *TINY_RUN, '--num_iters', '4', *run_dirs(tmp_path))  # a second run, at the same time
        assert_user_error(rc, out, err, f"model_save_dir {models} is in use by another run (process {p.pid} on ",
                          'wait for it to end, or choose another model_save_dir')
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # killed outright: its lock stays behind, stale
        p.communicate(timeout=60)
    assert (models / '.stargan_nb.lock').exists()
    (models / f'.999-stargan.pt.{p.pid}.tmp').write_bytes(b'half a checkpoint')  # a write the kill cut short
    last = checkpoint_iterations(models)[-1]
    rc, out, err = in_process(capsys, 'train', *TINY_RUN, '--num_iters', last + 1, '--resume_iters', 'latest', *run_dirs(tmp_path))
    assert rc == 0, err
    assert not [f.name for f in models.iterdir() if f.name.startswith('.')]  # the stale lock and the temporary file are gone


def test_a_fresh_run_never_mixes_with_an_older_one(tmp_path, capsys):
    base = ['train', *TINY_RUN, '--model_save_step', '2', *run_dirs(tmp_path)]
    assert in_process(capsys, *base, '--num_iters', '4')[0] == 0
    before = {str(f.relative_to(tmp_path)): f.stat().st_mtime_ns for f in tmp_path.rglob('*')}
    rc, out, err = in_process(capsys, *base, '--num_iters', '2')
    assert_user_error(rc, out, err, f"model_save_dir {tmp_path / 'models'} holds a run to iteration 4: resume with --resume_iters "
                      "latest, or choose another model_save_dir, or pass --overwrite to move that run aside")
    assert {str(f.relative_to(tmp_path)): f.stat().st_mtime_ns for f in tmp_path.rglob('*')} == before
    rc, out, err = cli(*base, '--num_iters', '2', '--overwrite', 'true')  # a real process, as the user runs it
    assert rc == 0, err
    aside = tmp_path / 'models' / 'replaced-1'
    assert f"moved the earlier run (to iteration 4) aside into {aside}" in err
    assert sorted(f.name for f in (tmp_path / 'models').iterdir() if f.is_file()) == ['2-D.ckpt', '2-G.ckpt', '2-stargan.pt']
    assert sorted(f.name for f in aside.iterdir() if f.is_file()) == ['2-D.ckpt', '2-G.ckpt', '2-stargan.pt', '4-D.ckpt', '4-G.ckpt', '4-stargan.pt']
    assert len(read_log(aside / 'logs' / 'log.csv')) == 4 and len(read_log(tmp_path / 'logs' / 'log.csv')) == 2

    # a diverged checkpoint is no place to resume from: one line, not "the last good checkpoint" and a traceback
    ck = torch.load(tmp_path / 'models' / '2-stargan.pt', weights_only=True)
    ck['G']['main.0.weight'][0, 0, 0, 0] = float('nan')
    torch.save(ck, tmp_path / 'models' / '2-stargan.pt')
    rc, out, err = in_process(capsys, *base, '--num_iters', '4', '--resume_iters', 'latest')
    assert_user_error(rc, out, err, f"{tmp_path / 'models' / '2-stargan.pt'} holds non-finite weights (NaN or Inf in main.0.weight)")


def test_every_decode_has_a_pixel_limit(tmp_path, monkeypatch):
    from stargan_nb import data
    Image.new('RGB', (16, 16), (90, 30, 200)).save(tmp_path / 'small.jpg', quality=90)
    raw = bytearray((tmp_path / 'small.jpg').read_bytes())
    sof = raw.index(b'\xff\xc0')  # baseline frame header: length (2 bytes), precision (1), height (2), width (2)
    raw[sof + 5:sof + 9] = (30000).to_bytes(2, 'big') * 2
    (tmp_path / 'bomb.jpg').write_bytes(bytes(raw))
    assert len(raw) < 2000
    decode = data.decode_jpeg
    def guarded(d, *a, **k):
        if bytes(d.numpy()) == bytes(raw): pytest.fail('the 30000x30000 JPEG reached the decoder')
        return decode(d, *a, **k)
    monkeypatch.setattr(data, 'decode_jpeg', guarded)
    with pytest.raises(ValueError, match=r"bomb.jpg is too large to open safely"): data.load_image(tmp_path / 'bomb.jpg')
    ds = data.ImageDataset([tmp_path / 'bomb.jpg', tmp_path / 'small.jpg'], [[1.], [0.]], ['a'], image_size=16)
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*bomb.jpg: .*too large to open safely"):
        x, c = ds[0]   # training skips it, as test and the editor refuse it
    assert c.item() == 0.
    monkeypatch.undo()
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 200)  # 16x16 = 256 pixels: over the limit, under twice it: a warning
    Image.new('RGB', (16, 16)).save(tmp_path / 'small.png')
    for f in ('small.jpg', 'small.png'):
        with pytest.warns(Image.DecompressionBombWarning, match=f"{f}: Image size \\(256 pixels\\) exceeds limit"):
            data.load_image(tmp_path / f)
    with pytest.raises(ValueError) as e: data.load_image(b'not an image', name='upload.png')
    assert 'upload.png is not a readable image' in str(e.value) and 'BytesIO' not in str(e.value)


@pytest.mark.parametrize('size,fits', [('4096', '--image_size 2048 fits'), ('100000', 'fits')])
def test_memory_is_estimated_before_it_is_spent(tmp_path, capsys, monkeypatch, size, fits):
    from stargan_nb import train
    monkeypatch.setattr(train, 'available_memory', lambda device: (16 * 2**30, 'this machine'))  # the same on every machine
    rc, out, err = in_process(capsys, *last_wins('train', *TINY_RUN, '--image_size', size, '--batch_size', '2', '--num_iters', '2', *run_dirs(tmp_path)))
    assert_user_error(rc, out, err, f"image_size {size} with batch_size 2 needs about ", "but this machine has 16.0 GiB free; ", fits)
    assert not list((tmp_path / 'models').iterdir())


def test_a_broken_model_is_no_result(tmp_path, capsys):
    imgs = one_image(tmp_path / 'imgs')
    sd = Generator(conv_dim=8, c_dim=5, repeat_num=1).state_dict()
    nan = project_checkpoint(tmp_path / '1-stargan.pt', {**sd, 'main.3.weight': sd['main.3.weight'] * float('inf')})
    ints = project_checkpoint(tmp_path / '2-stargan.pt', {k: v.long() if k == 'main.0.weight' else v for k, v in sd.items()})
    for ck, why in [(nan, 'holds non-finite weights (NaN or Inf in main.3.weight)'), (ints, 'is a broken model: main.0.weight hold integers')]:
        for args in (['test', '--images', imgs, '--labels', 'Male', '--out_dir', tmp_path / 'out'], ['evaluate', '--n', '4', '--out_dir', tmp_path / 'ev']):
            assert_user_error(*in_process(capsys, args[0], '--checkpoint', ck, *args[1:]), f"{ck} {why}")
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'ev').exists()
    from stargan_nb.evaluate import _psnr
    assert _psnr(0.) == 100. and math.isnan(_psnr(float('nan')))  # identical images: a number; NaN is shown as '–'


def test_full_disk_inside_torch_writer_is_one_line(tmp_path, capsys, monkeypatch):
    save = torch.save
    def failing(obj, f, *a, **k):
        if Path(getattr(f, 'name', '')).name.startswith('.4-D.ckpt'):
            raise RuntimeError('[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/3: file write failed')
        return save(obj, f, *a, **k)
    monkeypatch.setattr(torch, 'save', failing)
    rc, out, err = in_process(capsys, 'train', *TINY_RUN, '--num_iters', '6', '--model_save_step', '2', '--n_critic', '2', *run_dirs(tmp_path))
    models = tmp_path / 'models'
    assert rc == 1 and len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err
    assert err.startswith(f"stargan_nb train: error: could not save iteration 4: writing {models / '4-D.ckpt'} failed: ") and \
           err.strip().endswith(f"Nothing of iteration 4 was kept; the last intact checkpoint is {models / '2-stargan.pt'}"), err
    assert sorted(f.name for f in models.iterdir()) == ['2-D.ckpt', '2-G.ckpt', '2-stargan.pt']
    # the log: G's terms on iterations without a G update (n_critic 2: iterations 1 and 3) are empty cells, not 'nan'
    import csv
    rows = list(csv.DictReader(open(tmp_path / 'logs' / 'log.csv', newline='')))
    g = [k for k in rows[0] if k.startswith('G/')]
    assert [r['iteration'] for r in rows] == ['1', '2', '3', '4'] and len(g) >= 3
    assert [r[k] for r in rows[::2] for k in g if k != 'G/lr'] == [''] * 2 * (len(g) - 1)
    assert all(r[k] not in ('', 'nan') for r in rows[1::2] for k in g)
    assert math.isnan(read_log(tmp_path / 'logs' / 'log.csv')[0][g[0]])


def test_csv_semantics(tmp_path, capsys):
    from stargan_nb.data import csv_items, folder_items
    img = tmp_path / 'imgs'; img.mkdir()
    for i in range(4): Image.new('RGB', (16, 16), (60 * i, 0, 0)).save(img / f'{i}.png')
    (tmp_path / 'outside.png').write_bytes((img / '0.png').read_bytes())
    def csv_file(text, name='labels.csv'):
        (tmp_path / name).write_text(text); return tmp_path / name
    run = lambda path: in_process(capsys, *last_wins('train', *TINY_RUN, '--dataset', 'csv', '--image_dir', img, '--csv_path', path, *run_dirs(tmp_path)))
    assert_user_error(*run(csv_file('image,Male,Male,Young\n0.png,1,0,1\n1.png,0,1,0\n')), "line 1: column name 'Male' appear")
    assert_user_error(*run(img), f"{img} is a folder, not a CSV file; point csv_path (--csv_path) at the labels file")
    assert_user_error(*run(img / '0.png'), f"{img / '0.png'} is not a CSV text file", '--csv_path')
    for bad in (tmp_path / 'outside.png', '../outside.png'):
        path = csv_file(f'image,Male\n0.png,1\n{bad},0\n')
        assert_user_error(*run(path), f"{path}, line 3: {bad} is outside image_dir {img}", '--allow_outside_image_dir true')
        assert len(csv_items(img, path, allow_outside=True)[0]) == 2
    for c in ('only',): (tmp_path / 'one' / c).mkdir(parents=True); (tmp_path / 'one' / c / 'a.png').write_bytes((img / '0.png').read_bytes())
    with pytest.warns(UserWarning, match=r"one class folder, 'only'; a domain needs other domains"): folder_items(tmp_path / 'one')


def test_weak_inputs_are_one_line(tmp_path, capsys):
    imgs = one_image(tmp_path / 'imgs')
    long = tmp_path / ('x' * 300)
    for _ in range(2):  # the second run used to end in a traceback
        assert_user_error(*in_process(capsys, *last_wins('train', *TINY_RUN, *run_dirs(tmp_path), '--model_save_dir', long)),
                          f"model_save_dir {long}: the name xxxxxxxxxxxxxxxxxxxxxxxx... has 300 bytes", 'choose a shorter model_save_dir')
    for _ in range(2):
        assert_user_error(*in_process(capsys, 'test', '--checkpoint', tmp_path / 'none.pt', '--images', imgs, '--out_dir', long),
                          f"--out_dir {long}: the name xxxxxxxxxxxxxxxxxxxxxxxx... has 300 bytes")
    assert_user_error(*in_process(capsys, 'train', *TINY_RUN, *run_dirs(tmp_path), '--selected_attrs', 'Smiling'),
                      "dataset 'synthetic' has its own labels and would ignore Smiling: leave --selected_attrs out")
    ck = project_checkpoint(tmp_path / '1-stargan.pt')
    other = Discriminator(image_size=32, conv_dim=8, c_dim=3, repeat_num=3)
    torch.save({'D': other.state_dict(), 'config': {'image_size': 32, 'label_names': ['a', 'b', 'c']}}, tmp_path / 'other.pt')
    test = lambda *a: in_process(capsys, 'test', '--checkpoint', ck, '--images', imgs, '--out_dir', tmp_path / 'out', *a)
    assert_user_error(*test('--discriminator', tmp_path / 'other.pt'), f"--discriminator {tmp_path / 'other.pt'} classifies ['a', 'b', 'c']",
                      'pass the discriminator trained with it, or give --labels')
    small = Discriminator(image_size=16, conv_dim=8, c_dim=5, repeat_num=3)
    torch.save({'D': small.state_dict(), 'config': PROJECT_CONFIG | {'image_size': 16}}, tmp_path / 'd16.pt')
    rc, out, err = test('--discriminator', tmp_path / 'd16.pt')
    assert_user_error(rc, out, err, "judges 16x16 images, but the images are prepared at 32x32: pass --image_size 16")
    assert 'Discriminator(' not in err
    (tmp_path / 'lone').mkdir()
    torch.save(Generator(conv_dim=8, c_dim=5, repeat_num=1).state_dict(), tmp_path / 'lone' / '7-G.ckpt')
    rc, out, err = in_process(capsys, 'test', '--checkpoint', tmp_path / 'lone' / '7-G.ckpt', '--images', imgs, '--labels', 'Male',
                              '--out_dir', tmp_path / 'out7')
    assert rc == 0 and "7-G.ckpt holds no configuration (an official-format G): it is read as 128x128" in err, err


def test_editor_refuses_what_is_not_an_image():
    from stargan_nb.edit import Editor
    ed = Editor(Generator(conv_dim=8, c_dim=5, repeat_num=1), preview=16)
    n = len(ed.images)
    for x, msg in [(torch.zeros(1, 32, 32), r"got shape \(1, 32, 32\): pass x.expand\(3, -1, -1\)"),
                   (torch.zeros(32, 32, 3), r"got shape \(32, 32, 3\): pass x.permute\(2, 0, 1\)"),
                   (torch.full((3, 32, 32), float('nan')), 'NaN or Inf'),
                   (np.zeros((32, 32, 3), np.uint8), r"got a numpy array \(32, 32, 3\) uint8: pass PIL.Image.fromarray")]:
        with pytest.raises(ValueError, match=msg) as e: ed.add_image(x)
        assert len(str(e.value)) < 200  # not the array's values
    assert len(ed.images) == n


def test_an_option_given_twice_is_named(tmp_path, capsys):
    rc, out, err = in_process(capsys, 'train', *TINY_RUN, '--num_iters', '2', '--num_iters', '1000000', '--batch_size', '2', *run_dirs(tmp_path),
                              '--image_size', '100000')  # refused before training: only the warning and the error are of interest
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 4 and lines[-1].startswith('stargan_nb train: error: image_size 100000'), err
    for opt, v in (('--num_iters', '1000000'), ('--batch_size', '2'), ('--image_size', '100000')):
        assert f"stargan_nb train: warning: {opt} is given 2 times; the last counts: {opt} {v}" in lines, err


def test_a_diverged_run_ends_in_one_line_and_saves_nothing(tmp_path, capsys):
    rc, out, err = in_process(capsys, *last_wins('train', *TINY_RUN, '--num_iters', '6', '--model_save_step', '2', '--g_lr', '1e30',
                                                 '--d_lr', '1e30', '--n_critic', '1', *run_dirs(tmp_path)))
    assert rc == 1 and len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err
    assert err.startswith("stargan_nb train: error: non-finite loss at iteration 1: ") and 'the last good checkpoint is none' in err, err
    assert checkpoint_iterations(tmp_path / 'models') == []
