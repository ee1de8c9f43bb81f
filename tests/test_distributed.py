"Data-parallel training on 2 gloo processes (127.0.0.1): one process's result, exact resume, and a dead or hung rank ends the run."
import json, os, signal, socket, subprocess, sys, time
from pathlib import Path
from unittest import mock

import pytest
import torch
from fastai.callback.core import Callback

import stargan_nb.step as step_module
from stargan_nb.faces import synthetic_dls
from stargan_nb.learner import stargan_learner
from stargan_nb.checkpoint import checkpoint_iterations
from stargan_nb.callbacks import read_log
from stargan_nb.step import LOSS_NAMES

pytestmark = pytest.mark.slow  # several training processes each: python -m pytest -q -m slow tests

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=3)
B, ITERS = 4, 4  # per-rank batch; iterations (n_critic=2: 4 D and 2 G updates)


def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def launch(argv, tmp, n=2, timeout=30, name='rank'):
    "Start `python argv` as ranks 0..n-1 of one run, with the environment torchrun gives its workers."
    port, procs = free_port(), []
    for r in range(n):
        env = {**os.environ, 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port), 'RANK': str(r), 'LOCAL_RANK': str(r),
               'WORLD_SIZE': str(n), 'OMP_NUM_THREADS': '1', 'STARGAN_NB_DIST_TIMEOUT': str(timeout),
               'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
        err = open(tmp/f'{name}{r}.err', 'w')
        procs.append(subprocess.Popen([sys.executable, *argv], env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp))
    return procs


def wait_all(procs, timeout=300):
    t = time.time()
    return [p.wait(timeout=max(1, timeout - (time.time() - t))) for p in procs]


def stderr(tmp, r, name='rank'): return (tmp/f'{name}{r}.err').read_text()


# Each rank trains a tiny StarGAN and records its images, targets, penalty weights and (averaged) gradients.
REPLICA = """
import json, os, sys, torch
torch.set_num_threads(1)
from unittest import mock
from fastai.callback.core import Callback
import stargan_nb.step as step_module
from stargan_nb.faces import synthetic_dls
from stargan_nb.learner import stargan_learner
cfg = json.loads(sys.argv[1])
torch.manual_seed(0)
learn = stargan_learner(synthetic_dls(n_train=64, n_valid=8, size=32, bs=cfg['bs'], seed=0), **cfg['tiny'], n_critic=2,
                        d_lr=1e-3, g_lr=1e-3, device='cpu', precision='fp32', channels_last=False)
if cfg['fp64']: learn.model.double()
assert learn.world_size == 2 and learn.rank == int(os.environ['RANK'])
log = {'x': [], 'targets': [], 'alphas': [], 'grads': []}
sync = learn.stargan.grad_sync if cfg['average'] else None
def keep(net):
    if sync: sync(net)
    log['grads'].append(torch.cat([p.grad.flatten() for p in net.parameters()]))
learn.stargan.grad_sync = keep
permute, lerp = step_module.permute_labels, step_module.interpolate
def permute_labels(c): log['targets'].append(permute(c)); return log['targets'][-1]
def interpolate(real, fake): log['alphas'].append(torch.rand(len(real), 1, 1, 1, dtype=real.dtype)); return lerp(real, fake, log['alphas'][-1])
class Seen(Callback):
    order = -30
    def before_batch(self):
        if cfg['fp64']: self.learn.xb, self.learn.yb = [tuple(t.double() for t in b) for b in (self.xb, self.yb)]
        log['x'].append(self.learn.xb[0].clone())
with mock.patch.multiple(step_module, permute_labels=permute_labels, interpolate=interpolate), learn.no_bar(), learn.no_logging():
    learn.fit_iters(cfg['iters'], cbs=Seen())
torch.save({'weights': learn.model.state_dict(), 'opt': learn.opt.state_dict(), 'history': learn.loss_history, **log},
           f"replica{os.environ['RANK']}.pt")
"""


def one_process(records, tmp, fp64=False):
    "Train one process with batch 2B on the ranks' images, handed their targets and penalty weights side by side."
    targets = iter([torch.cat(p) for p in zip(*(r['targets'] for r in records))])
    alphas = iter([torch.cat(p) for p in zip(*(r['alphas'] for r in records))])
    seen, grads = [], []
    class Seen(Callback):
        order = -30
        def before_batch(self):
            if fp64: self.learn.xb, self.learn.yb = [tuple(t.double() for t in b) for b in (self.xb, self.yb)]
            seen.append(self.learn.xb[0].clone())
    torch.manual_seed(0)
    learn = stargan_learner(synthetic_dls(n_train=64, n_valid=8, size=32, bs=2 * B, seed=0), **TINY, n_critic=2, d_lr=1e-3,
                            g_lr=1e-3, device='cpu', precision='fp32', channels_last=False)
    if fp64: learn.model.double()
    init = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.stargan.grad_sync = lambda net: grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    lerp = step_module.interpolate
    with mock.patch.multiple(step_module, permute_labels=lambda c: next(targets), interpolate=lambda r, f: lerp(r, f, next(alphas))), \
         learn.no_bar(), learn.no_logging():
        learn.fit_iters(ITERS, cbs=Seen())
    return {'weights': learn.model.state_dict(), 'opt': learn.opt.state_dict(), 'history': learn.loss_history, 'x': seen,
            'grads': grads, 'init': init}


def run_replicas(tmp, average=True, fp64=False):
    cfg = {'bs': B, 'tiny': TINY, 'iters': ITERS, 'average': average, 'fp64': fp64}
    procs = launch(['-c', REPLICA, json.dumps(cfg)], tmp)
    assert wait_all(procs) == [0, 0], stderr(tmp, 0) + stderr(tmp, 1)
    return [torch.load(tmp/f'replica{r}.pt', weights_only=False) for r in range(2)]


def gaps(run, one):
    "(largest relative gradient difference over the updates, {net: weight distance relative to how far training moved it})."
    grad = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(run['grads'], one['grads']))
    weights = {}
    for net in 'GD':
        keys = [k for k, v in one['weights'].items() if k.startswith(net + '.') and v.is_floating_point()]
        d = lambda a, b: torch.cat([(a[k] - b[k]).flatten() for k in keys]).norm()
        weights[net] = (d(run['weights'], one['weights']) / d(one['weights'], one['init'])).item()
    return grad, weights


def check_replicas(r0, r1, one):
    assert len(one['grads']) == len(r0['grads']) == 6  # 4 D and 2 G updates
    assert all(torch.equal(x, torch.cat(p)) for x, p in zip(one['x'], zip(r0['x'], r1['x'])))  # the same 2B images
    assert not torch.equal(r0['x'][0], r1['x'][0])
    for k in r0['weights']: assert torch.equal(r0['weights'][k], r1['weights'][k]), k  # replicas: bitwise equal...
    for s0, s1 in zip(r0['opt']['G']['state'].values(), r1['opt']['G']['state'].values()):
        assert all(torch.equal(s0[k], s1[k]) for k in s0)  # ...Adam moments too


def test_two_processes_train_like_one_with_the_global_batch(tmp_path):
    "In float64, where summing in another order costs nothing visible, 2 processes x B images give one process's weights for 2B."
    r0, r1 = run_replicas(tmp_path, fp64=True)
    one = one_process([r0, r1], tmp_path, fp64=True)
    check_replicas(r0, r1, one)
    assert r0['weights']['G.main.0.weight'].dtype == torch.float64
    grad, weights = gaps(r0, one)
    assert grad < 1e-12, grad
    assert weights['D'] < 1e-7 and weights['G'] < 1e-7, weights  # fp32's own rounding, 6e-8, is the tolerance asked for
    # tensor by tensor, each relative to its own scale: kernels of other CPUs sum in another order, and an element whose
    # exact gradient is 0 (cancelled by InstanceNorm) keeps a residual of the order of fp64's eps times its terms
    for k, v in one['weights'].items():
        if not v.is_floating_point(): continue
        moved = (v - one['init'][k]).abs().max()
        assert (r0['weights'][k] - v).abs().max() <= 1e-7 * moved + 1e-12 * v.abs().max(), k
    for net in 'GD':
        for s0, s1 in zip(r0['opt'][net]['state'].values(), one['opt'][net]['state'].values()):
            for k in s0:  # Adam's moments are linear (exp_avg) and quadratic (exp_avg_sq) in gradients within 1e-12 of each other
                assert (s0[k] - s1[k]).abs().max() <= 1e-10 * s1[k].abs().max(), (net, k)


def test_in_fp32_the_averaged_gradients_and_losses_are_the_global_batchs(tmp_path):
    "The run as it trains, in fp32: every averaged gradient is the global batch's to rounding, and so are the logged losses."
    r0, r1 = run_replicas(tmp_path)
    one = one_process([r0, r1], tmp_path)
    check_replicas(r0, r1, one)
    grad, weights = gaps(r0, one)
    assert grad < 1e-4, grad
    # D's weights follow; a few of G's do not: Adam turns the rounding noise of G's zero-gradient weights (the label
    # channels' first-layer weights, cancelled by InstanceNorm) into full steps of either sign, which is why the
    # comparison of the weights is made in float64 above (05f_distributed shows this yardstick)
    assert weights['D'] < 1e-5 and weights['G'] < 0.1, weights
    rows = lambda run: torch.tensor([[r[k] for k in LOSS_NAMES] for r in run['history']]).nan_to_num()
    assert torch.allclose(rows(r0), rows(one), atol=1e-5, rtol=1e-5)  # the logged losses are the global batch's
    assert repr(r0['history']) == repr(r1['history'])


def test_without_averaging_the_gradients_the_comparison_fails(tmp_path):
    r0, r1 = run_replicas(tmp_path, average=False, fp64=True)
    one = one_process([r0, r1], tmp_path, fp64=True)
    grad, weights = gaps(r0, one)
    assert grad > 0.1 and weights['D'] > 0.1 and weights['G'] > 0.5, (grad, weights)
    assert not torch.equal(r0['weights']['D.conv1.weight'], r1['weights']['D.conv1.weight'])  # the replicas drift apart


# A NaN in rank 1's D from iteration 3 on.
NAN = """
import os, sys, warnings, torch
torch.set_num_threads(1)
from fastai.callback.core import Callback
from stargan_nb.faces import synthetic_dls
from stargan_nb.learner import stargan_learner
class Poison(Callback):
    order = -1
    def before_batch(self):
        if self.learn.iteration == 2 and self.learn.rank == 1: self.learn.model.D.conv2.weight.data.fill_(float('nan'))
torch.manual_seed(0)
learn = stargan_learner(synthetic_dls(n_train=64, n_valid=8, size=32, bs=4, seed=0), g_conv_dim=8, d_conv_dim=8, g_repeat_num=1,
                        d_repeat_num=3, device='cpu', cbs=Poison())
warnings.simplefilter('ignore')
try:
    with learn.no_bar(), learn.no_logging(): learn.fit_iters(10)
except FloatingPointError as e:
    print(e, file=sys.stderr); sys.exit(3)
"""


def test_nan_on_one_rank_stops_every_rank_naming_it(tmp_path):
    procs = launch(['-c', NAN], tmp_path)
    assert wait_all(procs, timeout=120) == [3, 3]
    for r in range(2):
        assert 'non-finite loss at iteration 3 on rank 1 of 2: D/loss' in stderr(tmp_path, r), stderr(tmp_path, r)


RUN = ['--dataset', 'synthetic', '--image_size', '32', '--n_train', '64', '--n_valid', '8', '--batch_size', '4',
       '--num_workers', '0', '--num_iters', '30', '--num_iters_decay', '10', '--lr_update_step', '2', '--log_step', '5',
       '--sample_step', '1000', '--model_save_step', '5', '--use_tensorboard', 'false', '--device', 'cpu',
       '--g_conv_dim', '8', '--d_conv_dim', '8', '--g_repeat_num', '1', '--d_repeat_num', '3']


def dirs(d): return ['--log_dir', str(d/'logs'), '--sample_dir', str(d/'samples'), '--model_save_dir', str(d/'models')]


def torchrun(args, tmp, name, n=2):
    "`torchrun --nproc_per_node n -m stargan_nb train args` on this machine, as the README says (n=0: `python -m stargan_nb train args`)."
    launcher = ['-m', 'torch.distributed.run', '--nproc_per_node', str(n), '--master_addr', '127.0.0.1', '--master_port', str(free_port())]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    with open(tmp/f'{name}.err', 'w') as err:
        return subprocess.run([sys.executable, *(launcher if n else []), '-m', 'stargan_nb', 'train', *args], cwd=tmp, env=env,
                              stdout=subprocess.DEVNULL, stderr=err, timeout=600)


def assert_same_networks(a, b, it):
    "The G and D that the runs in folders `a` and `b` saved at iteration `it` are bitwise equal."
    ca, cb = (torch.load(d/'models'/f'{it}-stargan.pt', weights_only=True) for d in (a, b))
    for net in ('G', 'D'):
        for k in ca[net]: assert torch.equal(ca[net][k], cb[net][k]), (net, k)


def logged(d): return json.dumps([{k: r[k] for k in ['iteration'] + LOSS_NAMES} for r in read_log(d/'logs'/'log.csv')])


def test_torchrun_with_one_process_trains_exactly_like_a_plain_process(tmp_path):
    "One process under torchrun joins a process group (gloo here, NCCL on a GPU) of one, and its run is the plain run's."
    plain, one = tmp_path/'plain', tmp_path/'one'
    plain.mkdir(); one.mkdir()
    args = RUN[:RUN.index('--num_iters') + 1] + ['10'] + RUN[RUN.index('--num_iters') + 2:]
    assert torchrun(args + dirs(plain), plain, 'plain', n=0).returncode == 0, (plain/'plain.err').read_text()
    assert torchrun(args + dirs(one), one, 'one', n=1).returncode == 0, (one/'one.err').read_text()
    assert logged(plain) == logged(one) and len(read_log(one/'logs'/'log.csv')) == 10
    assert_same_networks(plain, one, 10)


# `stargan_nb train`, slowed down so that a kill lands mid-run.
SLOW = """
import sys, time, torch
from fastai.callback.core import Callback
import stargan_nb.train as train_module
from stargan_nb.cli import train_parser
class Slow(Callback):
    order = 50
    def after_batch(self): time.sleep(0.2)
cfg = train_module.train_config(**vars(train_parser().parse_args(sys.argv[1:])))
train_module.train(cfg, cbs=Slow())
"""


def slow_run_until(d, it, timeout):
    "Start 2 ranks of the slowed `stargan_nb train` in folder `d` (process-group timeout `timeout` s); return once iteration `it` is saved."
    procs = launch(['-c', SLOW, *RUN, *dirs(d)], d, timeout=timeout)
    t = time.time()
    while not (d/'models'/f'{it}-stargan.pt').exists():
        assert all(p.poll() is None for p in procs), stderr(d, 0) + stderr(d, 1)
        assert time.time() - t < 300
        time.sleep(0.05)
    return procs


def test_a_killed_rank_ends_the_run_which_then_resumes_exactly(tmp_path):
    ref, crash = tmp_path/'ref', tmp_path/'crash'
    ref.mkdir(); crash.mkdir()
    assert torchrun(RUN + dirs(ref), ref, 'ref').returncode == 0, (ref/'ref.err').read_text()

    procs = slow_run_until(crash, 10, timeout=20)
    procs[1].send_signal(signal.SIGKILL)
    t = time.time()
    code = procs[0].wait(timeout=120)
    waited = time.time() - t
    assert procs[1].wait(timeout=10) == -signal.SIGKILL
    msg = stderr(crash, 0)
    assert code != 0 and waited < 60, (code, waited, msg)
    assert 'RankFailure' in msg and 'rank 0 of 2: averaging the gradients' in msg and 'Connection closed by peer' in msg, msg
    assert 'continue the run with --resume_iters latest' in msg, msg
    its = checkpoint_iterations(crash/'models')
    assert 10 in its and 30 not in its, its
    assert not list((crash/'models').glob('.*.tmp'))  # rank 0 wrote whole files only

    assert torchrun(RUN + dirs(crash) + ['--resume_iters', 'latest'], crash, 'resume').returncode == 0, (crash/'resume.err').read_text()
    assert logged(crash) == logged(ref)  # every iteration, before and after the crash, to the last bit
    assert_same_networks(ref, crash, 30)
    assert len(read_log(crash/'logs'/'log.csv')) == 30  # one writer: one row per iteration


def test_a_hung_rank_ends_the_run_after_the_timeout(tmp_path):
    procs = slow_run_until(tmp_path, 5, timeout=8)
    procs[1].send_signal(signal.SIGSTOP)
    try:
        t = time.time()
        code = procs[0].wait(timeout=120)
        waited = time.time() - t
    finally:
        procs[1].kill(); procs[1].wait()
    msg = stderr(tmp_path, 0)
    assert code != 0 and 5 < waited < 60, (code, waited, msg)
    assert 'RankFailure' in msg and 'rank 0 of 2:' in msg and 'did not answer within 8 s' in msg, msg
