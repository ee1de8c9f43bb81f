"""Execute the notebooks in place and keep their outputs, figures included: the book as readers see it on GitHub and in the docs.

    python tools/run_notebooks.py                 # every notebook, `#| slow` cells included
    python tools/run_notebooks.py nbs/04_mask_vector.ipynb --no-slow

It runs each notebook with nbdev's own executor (execnb's `CaptureShell`, as `nbdev_test` does), from the notebook's
folder, with progress bars off and figures as plain PNG. Slow cells train the demo model once into `stargan_runs/demo`
and reuse it after that. Then it checks what it stored (`problems`): no error output, no absolute path of this machine,
and an image for every cell that draws. Finally `nbdev_clean` puts the files in their committed form.
"""
import json, os, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRAWS = re.compile(r'\b(plt\.|show_grid|show_strip|imshow|plot_losses|plot_)')
LOCAL_PATHS = re.compile(r'(/tmp/|/work/|/home/|/root/|/private/var/|[A-Z]:\\\\Users)')
SETUP = """
import fastprogress.fastprogress as _fp
_fp.NO_BAR = True            # a stored notebook shows results, not progress-bar redraws
_fp.print = lambda *a, **k: None   # not even the one character a console bar prints when it is made
from fastai.learner import Recorder as _R
_init = _R.__init__
_R.__init__ = lambda self, add_time=False, **kw: _init(self, add_time=add_time, **kw)   # no time column: it is this machine's
import matplotlib
matplotlib.rcParams['figure.dpi'] = 80
"""


def _skip(cell, flags):
    "Cells nbdev_test would not run either: markdown, `#| eval: false`, and slow/cuda cells unless asked for."
    if cell.cell_type != 'code': return True
    direc = getattr(cell, 'directives_', {}) or {}
    if direc.get('eval:', [''])[0].lower() == 'false': return True
    return bool(set(direc) & ({'cuda', 'slow'} - set(flags)))


def problems(path) -> list:
    "What is wrong with the outputs stored in notebook `path`: errors, machine paths, drawing cells without a figure."
    out = []
    for i, c in enumerate(json.loads(Path(path).read_text())['cells']):
        if c['cell_type'] != 'code': continue
        src, outs = ''.join(c['source']), c.get('outputs', [])
        if re.search(r'#\|\s*(eval:\s*false|cuda)', src): continue
        if any(o.get('output_type') == 'error' for o in outs): out.append(f'cell {i}: stored an error')
        text = json.dumps([o for o in outs if 'image/png' not in o.get('data', {})])
        if LOCAL_PATHS.search(text): out.append(f'cell {i}: an absolute path of this machine in its output')
        code = '\n'.join(l for l in src.splitlines() if not re.match(r'\s*(import|from)\s', l))
        shows = DRAWS.search(code) and 'plt.close(' not in code and not src.lstrip().startswith('#| export')  # a closed figure is a test, not a picture
        if shows and not any('image/png' in o.get('data', {}) for o in outs): out.append(f'cell {i}: draws but stored no figure')
    return out


def run(path, flags=('slow',)) -> float:
    "Execute notebook `path` in place with `flags` cells included; returns the seconds it took."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor
    path, t0 = Path(path).resolve(), time.time()
    nb = NBProcessor(path, process=True).nb        # parses the `#|` directives, as nbdev_test does
    shell = CaptureShell(path, mpl_format='png')
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        shell.run(SETUP)
        for cell in nb.cells:
            if _skip(cell, flags): continue
            cell.outputs = []   # execnb keeps a cell's old outputs when it prints nothing now
            shell.cell(cell)
            if shell.exc: raise RuntimeError(f"{path.name}: a cell failed\n{shell.prettytb(fname=path)}")
    finally: os.chdir(cwd)
    raw = read_nb(path)   # write back the original sources (NBProcessor may have changed them) with the new outputs
    for cell, done in zip(raw.cells, nb.cells):
        if cell.cell_type == 'code': cell.outputs, cell.execution_count = done.get('outputs', []), None
    write_nb(raw, path)
    return time.time() - t0


if __name__ == '__main__':
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    flags = () if '--no-slow' in sys.argv else ('slow',)
    nbs = [Path(a) for a in args] or sorted((ROOT/'nbs').glob('*.ipynb'))
    os.environ.setdefault('MPLBACKEND', 'Agg')
    bad = {}
    for p in nbs:
        secs = run(p, flags)
        subprocess.run(['nbdev_clean', '--fname', str(p)], check=True, cwd=ROOT)
        bad[p.name] = problems(p)
        print(f"{p.name}: {secs:.0f} s" + (f"; {len(bad[p.name])} problem(s)" if bad[p.name] else ''), flush=True)
    for name, ps in bad.items():
        for q in ps: print(f"{name}: {q}")
    sys.exit(1 if any(bad.values()) else 0)
