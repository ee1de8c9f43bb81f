"""The installed library stays small: it imports without the dev tools, a GPU, tensorboard or a display."""
import json, os, subprocess, sys
from configparser import ConfigParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p.stem for p in (ROOT / 'stargan_nb').glob('*.py') if not p.stem.startswith('_'))
BLOCKED = ['nbdev', 'execnb', 'ghapi', 'jupyterlab', 'pytest', 'tensorboard', 'torch.utils.tensorboard']

BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if any(name == b or name.startswith(b + '.') for b in BLOCKED):
            raise ImportError(f'blocked for this test: {name}')
sys.meta_path.insert(0, Block())
"""


def test_every_notebook_module_is_tested():
    assert MODULES == sorted(['data', 'faces', 'model', 'losses', 'wgan_gp', 'mask', 'step', 'callbacks', 'learner', 'checkpoint', 'distributed', 'train', 'demo', 'translate', 'edit', 'evaluate', 'cli'])


@pytest.mark.parametrize('mod', MODULES)
def test_imports_without_dev_tools_gpu_or_display(mod):
    code = f"BLOCKED = {BLOCKED!r}\n{BLOCKER}\nimport stargan_nb.{mod}\nimport sys\n" \
           "bad = [m for m in sys.modules if any(m == b or m.startswith(b + '.') for b in BLOCKED)]\n" \
           "assert not bad, bad\nprint('ok')"
    env = {k: v for k, v in os.environ.items() if k not in ('DISPLAY', 'MPLBACKEND')}
    env['CUDA_VISIBLE_DEVICES'] = ''
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), r.stderr[-2000:]


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


def test_official_reference_copied_verbatim():
    ours = json.loads((ROOT / 'nbs' / 'fixtures' / 'official_state_dicts.json').read_text())
    assert set(ours['configs']) == {'celeba_128_5attrs', 'celeba_256_5attrs', 'rafd_128_8expr', 'both_128_5attrs_8expr'}


def test_readme_is_rendered_from_index():
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'make_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
