"""The installed library stays small: it imports without the dev tools, a GPU, tensorboard or a display."""
import ast, json, os, pkgutil, re, subprocess, sys, warnings
from configparser import ConfigParser
from pathlib import Path

import pytest
import torch

import stargan_nb
from stargan_nb.model import Generator, Discriminator, count_params

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(m.name for m in pkgutil.iter_modules(stargan_nb.__path__) if not m.name.startswith('_'))
BLOCKED = ['nbdev', 'execnb', 'ghapi', 'jupyterlab', 'pytest', 'tensorboard', 'torch.utils.tensorboard']

BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if any(name == b or name.startswith(b + '.') for b in BLOCKED):
            raise ImportError(f'blocked for this test: {name}')
sys.meta_path.insert(0, Block())
"""


def test_every_module_comes_from_one_notebook():
    "The package's modules are exactly the notebooks' `default_exp` targets, one notebook each."
    exported = {}
    for nb in sorted((ROOT / 'nbs').glob('*.ipynb')):
        for cell in json.loads(nb.read_text())['cells']:
            m = re.match(r'#\|\s*default_exp\s+(\S+)', ''.join(cell['source']))
            if m: exported.setdefault(m.group(1), []).append(nb.name)
    assert sorted(exported) == MODULES
    assert all(len(v) == 1 for v in exported.values()), exported
    assert len(MODULES) > 10   # pkgutil found the package's modules, not an empty folder


def test_modules_import_no_private_name_of_another():
    "A module uses another module's public API only: no `from .x import _name` and no `x._name`."
    bad = []
    for mod in MODULES:
        tree = ast.parse((ROOT / 'stargan_nb' / f'{mod}.py').read_text())
        siblings = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or '').startswith('stargan_nb')):
                bad += [f'{mod}: from {node.module} import {a.name}' for a in node.names if a.name.startswith('_')]
                if node.module in (None, 'stargan_nb'): siblings |= {a.asname or a.name for a in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in siblings \
               and node.attr.startswith('_') and not node.attr.startswith('__'):
                bad.append(f'{mod}: {node.value.id}.{node.attr}')
    assert bad == []


@pytest.mark.parametrize('old, new', [('data.SyntheticFaces', 'faces.SyntheticFaces'), ('data.synthetic_dls', 'faces.synthetic_dls'),
    ('train.StarGANStep', 'step.StarGANStep'), ('train.CSVLog', 'callbacks.CSVLog'), ('train.train_demo', 'demo.train_demo'),
    ('train.StarGAN', 'step.StarGANModule'), ('step.StarGAN', 'step.StarGANModule'), ('losses.full', 'losses.at_least_fp32'),
    ('losses.test_targets', 'losses.targets_per_domain'), ('translate.test_grid', 'translate.domain_grid'),
    ('translate.show_grid', 'data.show_grid'), ('wgan_gp.lambda_gp', 'losses.lambda_gp')])
def test_moved_names_still_import_with_a_warning(old, new):
    (om, on), (nm, nn_) = old.split('.'), new.split('.')
    ns = {}
    old_mod = __import__(f'stargan_nb.{om}', fromlist=['_'])   # imported first: the warning must come from the name alone
    msg = f'stargan_nb.{old} is now stargan_nb.{new}: import it from there; the old name goes in the next release'
    with pytest.warns(DeprecationWarning, match=re.escape(msg)): exec(f'from stargan_nb.{om} import {on} as a', ns)
    assert ns['a'] is getattr(__import__(f'stargan_nb.{nm}', fromlist=['_']), nn_)


def test_unknown_names_still_fail():
    import stargan_nb.data, stargan_nb.train
    with pytest.raises(AttributeError, match="module 'stargan_nb.data' has no attribute 'SyntheticFace'"): stargan_nb.data.SyntheticFace
    with pytest.raises(ImportError): exec('from stargan_nb.train import no_such_name')


def test_imports_without_dev_tools_gpu_or_display():
    "Every module imports with the dev tools, a GPU and a display out of reach: one fresh process imports them in turn and names the first that pulls in a blocked package."
    code = f"BLOCKED = {BLOCKED!r}\nMODULES = {MODULES!r}\n{BLOCKER}\nimport importlib, sys\n" \
           "for mod in MODULES:\n" \
           "    importlib.import_module('stargan_nb.' + mod)\n" \
           "    bad = [m for m in sys.modules if any(m == b or m.startswith(b + '.') for b in BLOCKED)]\n" \
           "    assert not bad, (mod, bad)\n" \
           "print('ok', len(MODULES))"
    env = {k: v for k, v in os.environ.items() if k not in ('DISPLAY', 'MPLBACKEND')}
    env['CUDA_VISIBLE_DEVICES'] = ''
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip().endswith(f'ok {len(MODULES)}'), r.stderr[-2000:]


def test_runtime_requirements_exclude_dev_tools():
    cfg = ConfigParser(delimiters=['='])
    cfg.read(ROOT / 'settings.ini')
    req = cfg['DEFAULT']['requirements'].lower()
    for dev in ('nbdev', 'execnb', 'jupyterlab', 'pytest'):
        assert dev not in req, f'{dev} must be a dev requirement, not a runtime one'
    assert 'nbdev' in cfg['DEFAULT']['dev_requirements']


def test_console_script_declared():
    cfg = ConfigParser(delimiters=['='])
    cfg.read(ROOT / 'settings.ini')
    assert cfg['DEFAULT']['console_scripts'].split() == ['stargan_nb=stargan_nb.cli:main']


OFFICIAL = json.loads((ROOT / 'nbs' / 'fixtures' / 'official_state_dicts.json').read_text())['configs']


def test_official_reference_covers_the_four_configurations():
    assert sorted(OFFICIAL) == ['both_128_5attrs_8expr', 'celeba_128_5attrs', 'celeba_256_5attrs', 'rafd_128_8expr']
    for cfg in OFFICIAL.values():   # buffers are in it: InstanceNorm's running stats, as the official checkpoints hold them
        assert 'main.1.running_mean' in cfg['G_state_dict'] and 'main.1.num_batches_tracked' in cfg['G_state_dict']


def official_nets(cfg):
    return (Generator(cfg['conv_dim'], cfg['g_c_dim'], cfg['g_repeat_num']),
            Discriminator(cfg['image_size'], cfg['conv_dim'], cfg['d_c_dim'], cfg['d_repeat_num']))


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_official_state_dict_layout(name):
    "Every key of the official state dicts, in order, with its shape, buffers included; and the parameter counts."
    cfg = OFFICIAL[name]
    for net, key in zip(official_nets(cfg), 'GD'):
        ours = [(k, list(v.shape)) for k, v in net.state_dict().items()]
        assert ours == [(k, v) for k, v in cfg[f'{key}_state_dict'].items()]
        assert count_params(net) == cfg[f'{key}_num_params']


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_official_layout_loads_strictly_and_computes_the_same(name):
    "A state dict with the official names and shapes loads strictly; the copy then computes what the original does."
    cfg = OFFICIAL[name]
    torch.manual_seed(0)
    G, D = official_nets(cfg)
    official = {k: torch.randn(v) if v else torch.tensor(0) for k, v in cfg['G_state_dict'].items()}
    G.load_state_dict(official, strict=True)
    G2, D2 = official_nets(cfg)
    G2.load_state_dict(G.state_dict(), strict=True); D2.load_state_dict(D.state_dict(), strict=True)
    s, n_c = cfg['image_size'], cfg['g_c_dim']
    x, c = torch.rand(1, 3, s, s) * 2 - 1, torch.eye(n_c)[:1]
    with torch.no_grad():
        y = G(x, c)
        assert y.shape == x.shape and y.abs().max() <= 1 and torch.equal(y, G2(x, c))
        src, cls = D(x)
        assert src.shape == (1, 1, s // 2**cfg['d_repeat_num'], s // 2**cfg['d_repeat_num']) and cls.shape == (1, cfg['d_c_dim'])
        src2, cls2 = D2(x)
        assert torch.equal(src, src2) and torch.equal(cls, cls2)


def test_readme_is_rendered_from_index():
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'make_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
