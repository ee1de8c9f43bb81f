"""The CUDA path: training steps in every precision, checkpoints that move between GPU and CPU. Skipped without a GPU."""
import math

import pytest
import torch

from stargan_nb.faces import synthetic_dls
from stargan_nb.learner import stargan_learner
from stargan_nb.step import LOSS_NAMES
from stargan_nb.translate import load_generator

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def _learner(precision, channels_last=True, size=32):
    torch.manual_seed(0)
    dls = synthetic_dls(n_train=64, n_valid=16, size=size, bs=16, seed=0, device='cuda')
    return stargan_learner(dls, g_conv_dim=16, d_conv_dim=16, g_repeat_num=2, d_repeat_num=3,
                           precision=precision, channels_last=channels_last, device='cuda')


@pytest.mark.parametrize('precision', ['fp32', 'bf16', 'fp16'])
def test_training_on_cuda_gives_finite_losses(precision):
    learn = _learner(precision)
    before = [p.detach().clone() for p in learn.model.G.parameters()]
    with learn.no_bar(), learn.no_logging(): learn.fit_iters(10)
    assert learn.iteration == 10
    assert all(p.device.type == 'cuda' for p in learn.model.parameters())
    rows = learn.loss_history
    assert len(rows) == 10
    for r in rows:
        for k in LOSS_NAMES:
            if k.startswith('G/') and r['iteration'] % 5: continue  # G terms exist only on G iterations
            assert math.isfinite(r[k]), (precision, r['iteration'], k, r[k])
    assert any((a - b.detach()).abs().max() > 0 for a, b in zip(before, learn.model.G.parameters())), 'G never moved'


def test_bf16_step_matches_fp32_at_the_same_weights():
    a, b = _learner('fp32', channels_last=False), _learner('bf16', channels_last=True)
    b.model.load_state_dict(a.model.state_dict())
    x, c = next(iter(a.dls.train))
    torch.manual_seed(1); ta = a.stargan.step(x, c, g_update=True)
    torch.manual_seed(1); tb = b.stargan.step(x, c, g_update=True)
    for k in ('D/loss_real', 'D/loss_fake', 'D/loss_cls', 'G/loss_rec'):
        assert abs(ta[k].item() - tb[k].item()) <= 0.05 * abs(ta[k].item()) + 0.05, (k, ta[k].item(), tb[k].item())


def test_cuda_checkpoint_loads_on_cpu_with_same_outputs(tmp_path):
    learn = _learner('bf16')
    with learn.no_bar(), learn.no_logging(): learn.fit_iters(5)
    path = learn.save_checkpoint(tmp_path)
    G_cpu = load_generator(path)
    x, c = next(iter(learn.dls.valid))
    G_gpu = learn.model.G.float().eval()
    torch.backends.cudnn.allow_tf32 = False  # compare fp32 with fp32: TF32 convolutions differ by ~1e-3
    try:
        with torch.no_grad():
            y_gpu = G_gpu(x.float().contiguous(), c.float()).cpu()
            y_cpu = G_cpu(x.float().cpu(), c.float().cpu())
    finally: torch.backends.cudnn.allow_tf32 = True
    assert (y_gpu - y_cpu).abs().max() < 1e-4


def test_batch_stream_copies_to_cuda_without_changing_batches():
    from stargan_nb.step import BatchStream
    dls = synthetic_dls(n_train=64, n_valid=16, size=32, bs=16, seed=0, device='cuda')
    pinned, plain = BatchStream([dls.train], seed=3, device='cuda'), BatchStream([dls.train], seed=3)
    for _ in range(6):  # more than one pass over the 4 batches
        (xa, ca), (xb, cb) = next(pinned), next(plain)
        assert xa.device.type == 'cuda' and ca.device.type == 'cuda'
        torch.testing.assert_close(xa, xb.to('cuda'))
        torch.testing.assert_close(ca, cb.to('cuda'))
