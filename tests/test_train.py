"Training loop: resume after a SIGKILL reproduces the losses, NaN stops training, a step of one network leaves the other alone."
import copy, json, math, signal, subprocess, sys, time, warnings

import pytest
import torch
from fastai.callback.core import Callback

from stargan_nb.faces import synthetic_dls
from stargan_nb.learner import stargan_learner
from stargan_nb.checkpoint import checkpoint_iterations
from stargan_nb.callbacks import read_log
from stargan_nb.step import LOSS_NAMES

TINY = dict(g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=3)
RUN = dict(dataset='synthetic', image_size=32, n_train=64, n_valid=8, batch_size=8, num_workers=0, num_iters=30,
           num_iters_decay=10, lr_update_step=2, log_step=5, sample_step=1000, use_tensorboard=False, device='cpu', **TINY)

# A real training process: `train` with a config from argv, slowed down so that a kill lands mid-run.
CHILD = """
import json, sys, time, torch
torch.set_num_threads(1)
from fastai.callback.core import Callback
from stargan_nb.train import train
class Slow(Callback):
    order = 50
    def after_batch(self): time.sleep(float(sys.argv[2]))
learn = train(json.loads(sys.argv[1]), cbs=Slow())
with learn.no_bar(): pass
"""


def child(cfg, delay=0.):
    return subprocess.Popen([sys.executable, '-c', CHILD, json.dumps(cfg), str(delay)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def run_dirs(d):
    return dict(log_dir=str(d/'logs'), sample_dir=str(d/'samples'), model_save_dir=str(d/'models'))


def losses(d):
    return json.dumps([{k: r[k] for k in ['iteration'] + LOSS_NAMES} for r in read_log(d/'logs'/'log.csv')])


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_losses(tmp_path):
    ref, crash = tmp_path/'ref', tmp_path/'crash'
    p = child({**RUN, **run_dirs(ref), 'model_save_step': 1000})
    assert p.wait(timeout=600) == 0, p.stderr.read()

    p = child({**RUN, **run_dirs(crash), 'model_save_step': 5}, delay=0.1)
    t = time.time()
    while not (crash/'models'/'10-stargan.pt').exists():
        assert p.poll() is None, f"training ended before its checkpoint at 10: {p.stderr.read()}"
        assert time.time() - t < 600
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    assert p.wait(timeout=60) == -signal.SIGKILL
    its = checkpoint_iterations(crash/'models')
    assert 10 in its and 30 not in its, its  # killed mid-run
    n_logged = len(read_log(crash/'logs'/'log.csv'))
    assert its[-1] <= n_logged < 30

    p = child({**RUN, **run_dirs(crash), 'model_save_step': 5, 'resume_iters': 'latest'})
    assert p.wait(timeout=600) == 0, p.stderr.read()
    assert losses(crash) == losses(ref)  # every iteration, before and after the crash, to the last bit
    assert len(read_log(crash/'logs'/'log.csv')) == 30
    a, b = (torch.load(d/'models'/'30-stargan.pt', weights_only=True) for d in (ref, crash))
    for k in a['G']: assert torch.equal(a['G'][k], b['G'][k]), k
    for k in a['D']: assert torch.equal(a['D'][k], b['D'][k]), k


@pytest.fixture(scope='module')
def dls(): return synthetic_dls(n_train=64, n_valid=8, size=32, bs=8, seed=0)


def test_inf_is_caught_too(dls):
    class Inf(Callback):
        order = 1  # after the step: corrupt a recorded term
        def after_batch(self):
            if self.learn.iteration == 3: self.learn.loss_terms['D/loss_gp'] = torch.tensor(float('inf'))
    learn = stargan_learner(dls, **TINY, device='cpu', cbs=Inf())
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings(), pytest.raises(FloatingPointError, match='iteration 3: D/loss_gp = inf'):
        warnings.simplefilter('ignore')
        learn.fit_iters(10)


def _state(module, opt):
    return [p.detach().clone() for p in module.parameters()], copy.deepcopy(opt.state_dict()['state'])


def _same(a, b):
    if len(a[0]) != len(b[0]) or any(not torch.equal(u, v) for u, v in zip(a[0], b[0])): return False
    if a[1].keys() != b[1].keys(): return False
    return all(torch.equal(a[1][i][k], b[1][i][k]) for i in a[1] for k in a[1][i])


def test_d_only_iterations_leave_g_alone(dls):
    torch.manual_seed(0)
    learn = stargan_learner(dls, **TINY, device='cpu', n_critic=5)
    with learn.no_bar(), learn.no_logging(): learn.fit_iters(5)
    g0 = _state(learn.model.G, learn.stargan.opt_G)
    with learn.no_bar(), learn.no_logging(): learn.fit_iters(4)  # iterations 6..9: no G update
    assert _same(_state(learn.model.G, learn.stargan.opt_G), g0)
    with learn.no_bar(), learn.no_logging(): learn.fit_iters(1)  # iteration 10: G update
    assert not _same(_state(learn.model.G, learn.stargan.opt_G), g0)


def test_identity_warmup_runs_once_and_is_recorded(tmp_path):
    "g_warmup_iters warms G up before a fresh run only: the checkpoint records the option, a resumed run does not warm up again."
    from stargan_nb.train import train
    cfg = {**RUN, **run_dirs(tmp_path), 'num_iters': 4, 'model_save_step': 4, 'g_warmup_iters': 15}
    learn = train(cfg)
    assert math.isfinite(learn.warmup_loss) and learn.iteration == 4
    ckpt = torch.load(tmp_path/'models'/'4-stargan.pt', weights_only=True)
    assert ckpt['config']['train_config']['g_warmup_iters'] == 15
    resumed = train({**cfg, 'num_iters': 6, 'resume_iters': 'latest'})
    assert resumed.iteration == 6 and not hasattr(resumed, 'warmup_loss')
    # without the option (the paper), nothing is warmed up
    plain = train({**RUN, **run_dirs(tmp_path/'plain'), 'num_iters': 2, 'model_save_step': 2})
    assert not hasattr(plain, 'warmup_loss')


def test_tensorboard_gets_every_logged_term(tmp_path):
    "With use_tensorboard (tensorboard is a dev requirement), the event file holds the same numbers as the CSV log."
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from stargan_nb.train import train
    train({**RUN, **run_dirs(tmp_path), 'num_iters': 10, 'model_save_step': 10, 'use_tensorboard': True})
    rows = read_log(tmp_path/'logs'/'log.csv')
    acc = EventAccumulator(str(tmp_path/'logs')); acc.Reload()
    assert set(LOSS_NAMES + ['G/lr', 'D/lr']) <= set(acc.Tags()['scalars'])
    for k in LOSS_NAMES:
        logged = {e.step: e.value for e in acc.Scalars(k)}
        expect = {r['iteration']: r[k] for r in rows if math.isfinite(r[k])}
        assert sorted(logged) == sorted(expect), k
        assert all(abs(logged[i] - expect[i]) <= 1e-5 * max(1, abs(expect[i])) for i in expect), k


def test_use_tensorboard_without_the_package_warns_and_logs_csv(tmp_path, monkeypatch):
    import stargan_nb.learner
    from stargan_nb.train import train
    monkeypatch.setattr(stargan_nb.learner, 'tensorboard_available', lambda: False)
    with pytest.warns(UserWarning, match='tensorboard package is not installed'):
        train({**RUN, **run_dirs(tmp_path), 'num_iters': 2, 'model_save_step': 2, 'use_tensorboard': True})
    assert len(read_log(tmp_path/'logs'/'log.csv')) == 2 and not list((tmp_path/'logs').glob('events.*'))
