"""Fast checks of the objectives (losses, gradient penalty, mask vector) outside the notebooks."""
import math

import pytest
import torch
import torch.nn.functional as F

import stargan_nb.losses as L
from stargan_nb.mask import LabelSpace
from stargan_nb.wgan_gp import gp_from_output, gradient_penalty, interpolate

HAIR = ['Black_Hair', 'Blond_Hair', 'Brown_Hair']
ATTRS = HAIR + ['Male', 'Young']
EXPR = ['neutral', 'angry', 'contemptuous', 'disgusted', 'fearful', 'happy', 'sad', 'surprised']


def test_binary_cls_loss_is_bce_summed_over_labels():
    z, c = torch.randn(6, 5), torch.randint(0, 2, (6, 5)).float()
    p = torch.sigmoid(z.double())
    nll = -(c*p.log() + (1 - c)*(1 - p).log()).sum(1).mean()
    assert torch.allclose(L.cls_loss(z, c).double(), nll, atol=1e-5)


def test_categorical_cls_loss_one_hot_equals_index():
    z, i = torch.randn(6, 8), torch.randint(0, 8, (6,))
    assert torch.allclose(L.cls_loss(z, F.one_hot(i, 8).float(), True), L.cls_loss(z, i, True))
    assert math.isclose(L.cls_loss(z, i, True).item(), -F.log_softmax(z, 1)[range(6), i].mean().item(), rel_tol=1e-5)


@pytest.mark.parametrize('args,msg', [
    ((torch.zeros(2, 5), torch.zeros(2, 4)), 'label width 4'),
    ((torch.zeros(2, 8), torch.tensor([0, 8]), True), 'out of range'),
    ((torch.zeros(2, 8), torch.ones(2, 8), True), 'one-hot'),
])
def test_cls_loss_errors(args, msg):
    with pytest.raises(ValueError, match=msg): L.cls_loss(*args)


def test_targets_per_domain_groups_declared_by_caller():
    c = torch.tensor([[1., 0, 0, 1, 0]])
    ts = L.targets_per_domain(c, ATTRS, [HAIR])
    assert [t[0, :3].argmax().item() for t in ts[:3]] == [0, 1, 2]
    assert ts[3][0].tolist() == [1, 0, 0, 0, 0] and ts[4][0].tolist() == [1, 0, 0, 1, 1]
    assert L.targets_per_domain(c, ATTRS)[1][0].tolist() == [1, 1, 0, 1, 0]  # no groups: plain flip


def test_gradient_penalty_linear_critic_and_double_backward():
    w = torch.randn(3, 8, 8, dtype=torch.float64, requires_grad=True)
    real, fake = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randn(4, 3, 8, 8, dtype=torch.float64)
    gp = gradient_penalty(lambda x: (x*w).flatten(1).sum(1), real, fake)
    assert torch.allclose(gp, (w.norm() - 1)**2)
    gp.backward()
    assert torch.allclose(w.grad, 2*(w.norm() - 1)*w/w.norm())


def test_gradient_penalty_batched_forward_bf16_channels_last():
    from stargan_nb.model import Discriminator
    torch.manual_seed(0)
    D = Discriminator(image_size=32, conv_dim=8, c_dim=5, repeat_num=3)
    real, fake, alpha = torch.rand(4, 3, 32, 32)*2 - 1, torch.rand(4, 3, 32, 32)*2 - 1, torch.rand(4, 1, 1, 1)
    gp32 = gradient_penalty(D, real, fake, alpha)
    x_hat = interpolate(real, fake, alpha)
    assert torch.allclose(gp_from_output(D(torch.cat([real, fake, x_hat]))[0][8:], x_hat), gp32, atol=1e-5)
    cl = torch.channels_last
    D.to(memory_format=cl)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        gp16 = gradient_penalty(D, real.to(memory_format=cl), fake.to(memory_format=cl), alpha)
    assert gp16.dtype == torch.float32 and abs(gp16.item() - gp32.item()) < 2e-2*gp32.item()


def test_label_space_mask_and_zero_gradient_on_unknown_outputs():
    space = LabelSpace([('celeba', ATTRS, False, [HAIR]), ('rafd', EXPR, True)])
    assert (space.g_dim, space.d_dim) == (15, 13)
    c = F.one_hot(torch.randint(0, 8, (4,)), 8).float()
    ct = space.unify(c, 'rafd')
    assert ct[:, :5].abs().sum() == 0 and ct[:, 13:].tolist() == [[0., 1.]]*4
    z = torch.randn(4, 13, requires_grad=True)
    space.masked_cls_loss(z, c, 'rafd').backward()
    assert torch.equal(z.grad[:, :5], torch.zeros(4, 5)) and (z.grad[:, 5:] != 0).all()
    with pytest.raises(KeyError, match="unknown dataset 'fer'"): space.unify(c, 'fer')
    assert len(space.targets(c, 'rafd')) == 13
