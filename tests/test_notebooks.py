"""The notebooks are committed executed, small and listed: every cell that draws keeps its figure, no output holds an error or a path of the machine that ran it, no notebook outgrows its size limit, and the sidebar lists them in reading order."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('run_notebooks', ROOT / 'tools' / 'run_notebooks.py')
run_notebooks = importlib.util.module_from_spec(spec); spec.loader.exec_module(run_notebooks)
NOTEBOOKS = sorted((ROOT / 'nbs').glob('*.ipynb'))


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_keeps_its_results(nb):
    assert run_notebooks.problems(nb) == [], f"{nb.name}: run `python tools/run_notebooks.py {nb.relative_to(ROOT)}` and commit it"


def test_the_check_finds_a_drawing_cell_without_its_figure(tmp_path):
    cell = lambda src, outs: dict(cell_type='code', source=[src], outputs=outs, metadata={}, execution_count=None)
    png = dict(output_type='display_data', data={'image/png': 'iVBOR', 'text/plain': ['<Figure>']}, metadata={})
    nb = dict(cells=[cell('plt.plot([1, 2])', []), cell('show_grid(g)', [png]), cell('print(p)', [dict(output_type='stream', name='stdout', text=['/tmp/x/y.png\n'])])],
              metadata={}, nbformat=4, nbformat_minor=5)
    (tmp_path / 'a.ipynb').write_text(__import__('json').dumps(nb))
    assert run_notebooks.problems(tmp_path / 'a.ipynb') == ['cell 0: draws but stored no figure', 'cell 2: an absolute path of this machine in its output']


NB_LIMIT, ALL_LIMIT = 400_000, 3_000_000   # bytes: a chapter reads at reading size; the whole book stays a light clone


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_stays_small(nb):
    size = nb.stat().st_size
    assert size <= NB_LIMIT, f"{nb.name} is {size:,} bytes, over {NB_LIMIT:,}: draw its figures smaller (dpi 80-90, fewer or smaller images)"


def test_notebooks_together_stay_small():
    sizes = {p.name: p.stat().st_size for p in NOTEBOOKS}
    assert sum(sizes.values()) <= ALL_LIMIT, sorted(sizes.items(), key=lambda kv: -kv[1])[:5]


def sidebar_entries(node):
    "The notebook names a Quarto sidebar lists, in order, sections flattened."
    if isinstance(node, str): return [node]
    if isinstance(node, list): return [e for n in node for e in sidebar_entries(n)]
    return sidebar_entries(node.get('contents', []))


def test_sidebar_lists_every_notebook_in_reading_order():
    yaml = pytest.importorskip('yaml')
    side = yaml.safe_load((ROOT / 'nbs' / 'sidebar.yml').read_text())['website']['sidebar']['contents']
    listed = sidebar_entries(side)
    chapters = sorted(p.name for p in NOTEBOOKS if p.name != 'index.ipynb')   # the numbers are the reading order
    assert listed == ['index.ipynb'] + chapters


def test_the_docs_build_from_nbs():
    "nbdev renders the notebooks of `nbs_path` with the Quarto project there; its sidebar is the one checked above."
    yaml = pytest.importorskip('yaml')
    from configparser import ConfigParser
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    assert cfg['DEFAULT']['nbs_path'] == 'nbs' and cfg['DEFAULT']['custom_sidebar'] == 'True'
    quarto = yaml.safe_load((ROOT / 'nbs' / '_quarto.yml').read_text())
    assert quarto['project']['type'] == 'website'
    assert 'sidebar.yml' in quarto['metadata-files'] and (ROOT / 'nbs' / 'nbdev.yml').exists()
    for wf in ('test.yaml', 'deploy.yaml'): assert (ROOT / '.github' / 'workflows' / wf).exists(), wf
    assert 'fastai/workflows/quarto-ghp' in (ROOT / '.github' / 'workflows' / 'deploy.yaml').read_text()


def test_the_sidebar_check_finds_a_missing_notebook():
    side = [{'section': 'A', 'contents': ['00_data.ipynb', '01_model.ipynb']}, '02_losses.ipynb']
    assert sidebar_entries(side) == ['00_data.ipynb', '01_model.ipynb', '02_losses.ipynb']
