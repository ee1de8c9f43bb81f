"""The notebooks are committed executed: every cell that draws keeps its figure, and no output holds an error or a path of the machine that ran it."""
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
