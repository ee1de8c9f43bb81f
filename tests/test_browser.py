"""The editor as a user meets it: in JupyterLab, in a browser (Debian's chromium, driven through playwright).

JupyterLab starts on 127.0.0.1 (a free port, a token) with a notebook that builds an `Editor` on a small generator.
The test drags a slider with the mouse, moves another with the arrow keys, presses reset, uploads a file through the
upload button, and after each step reads the PNG the page shows and compares it with `Editor.draw` computed here.
Skipped, with the reason, where chromium or playwright is missing (`.ci/run` installs both). Every wait is bounded.
With UPDATE_SCREENSHOT=1 it also refreshes nbs/images/editor_browser.png, the picture 07_edit shows.
"""
import base64, io, json, os, shutil, socket, subprocess, sys, time, secrets, urllib.request
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = '/usr/bin/chromium'
SCREENSHOT = ROOT / 'nbs' / 'images' / 'editor_browser.png'


def _missing() -> str | None:
    "Why the browser test cannot run here, or None."
    if not Path(CHROMIUM).exists(): return f'{CHROMIUM} not found: chromium could not be installed (apt-get install -y chromium)'
    try: import playwright.sync_api  # noqa: F401
    except ImportError: return 'the playwright package is missing (pip install playwright, a dev requirement)'
    try: import jupyterlab  # noqa: F401
    except ImportError: return 'jupyterlab is missing (a dev requirement)'
    return None

pytestmark = [pytest.mark.slow,  # JupyterLab in a real browser: python -m pytest -q -m slow tests
              pytest.mark.skipif(_missing() is not None, reason=_missing() or '')]

from stargan_nb.model import Generator
from stargan_nb.faces import SyntheticFaces
from stargan_nb.edit import Editor, decode_png

SETUP = """\
import torch
from stargan_nb.model import Generator
from stargan_nb.faces import SyntheticFaces
from stargan_nb.edit import Editor
G = Generator(conv_dim=16, c_dim=5, repeat_num=2)
G.load_state_dict(torch.load('G.pt'))
editor = Editor(G, SyntheticFaces(4, size=32, seed=4), preview=16)
editor"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait_for(check, timeout: float, what: str, interval: float = 0.2):
    "Poll `check()` until it returns something truthy; fail naming `what` after `timeout` seconds."
    end, last = time.monotonic() + timeout, None
    while time.monotonic() < end:
        try:
            last = check()
            if last: return last
        except Exception as e: last = e
        time.sleep(interval)
    pytest.fail(f'{what}: not within {timeout:.0f} s (last: {last!r})')


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 serving a folder with the editor notebook; yields (url, folder)."
    d = tmp_path_factory.mktemp('lab')
    torch.manual_seed(0)
    torch.save(Generator(conv_dim=16, c_dim=5, repeat_num=2).state_dict(), d / 'G.pt')
    nb = dict(nbformat=4, nbformat_minor=5, metadata=dict(kernelspec=dict(name='python3', display_name='Python 3', language='python')),
              cells=[dict(cell_type='code', id='editor', metadata={}, execution_count=None, outputs=[], source=SETUP)])
    (d / 'editor.ipynb').write_text(json.dumps(nb))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep),
           'JUPYTER_CONFIG_DIR': str(d / 'config'), 'JUPYTER_RUNTIME_DIR': str(d / 'runtime'), 'MPLBACKEND': 'Agg'}
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
           '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={d}',
           f'--LabApp.workspaces_dir={d / "workspaces"}', '--LabApp.expose_app_in_browser=True', '--allow-root']
    log = open(d / 'jupyter.log', 'w')
    proc = subprocess.Popen(cmd, cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f'http://127.0.0.1:{port}'
    try:
        def up():
            if proc.poll() is not None: pytest.fail(f'jupyter lab exited: {(d / "jupyter.log").read_text()[-2000:]}')
            return urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2).status == 200
        _wait_for(up, 60, 'JupyterLab answering')
        yield f'{url}/lab/tree/editor.ipynb?token={token}', d
    finally:
        os.killpg(proc.pid, 15)
        try: proc.wait(10)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, 9)
        log.close()


@pytest.fixture(scope='module')
def page(lab):
    "A chromium page showing the notebook with its cell run."
    from playwright.sync_api import sync_playwright
    url, d = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=['--no-sandbox'] if os.geteuid() == 0 else [])
        pg = browser.new_page(viewport=dict(width=1100, height=900))
        pg.set_default_timeout(30_000)
        try:
            pg.goto(url)
            pg.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                                 "&& window.jupyterapp.shell.currentWidget.sessionContext "
                                 "&& window.jupyterapp.shell.currentWidget.sessionContext.session "
                                 "&& window.jupyterapp.shell.currentWidget.sessionContext.session.kernel", timeout=60_000)
            pg.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            pg.wait_for_selector('img.stargan-output', timeout=60_000)
            yield pg
        finally:
            browser.close()


def shown(pg) -> np.ndarray:
    "The picture the page shows as G(x, c): the PNG behind the <img>, decoded."
    url = pg.evaluate("""async () => {
        const img = document.querySelector('img.stargan-output');
        const blob = await (await fetch(img.src)).blob();
        return await new Promise(done => { const r = new FileReader(); r.onload = () => done(r.result); r.readAsDataURL(blob); });
    }""")
    return decode_png(base64.b64decode(url.split(',', 1)[1]))


def same(a: np.ndarray, b: np.ndarray) -> bool: return a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 2


def slider(pg, name: str):
    return pg.locator('.widget-hslider', has=pg.locator('.widget-label', has_text=name))


def value(pg, name: str) -> float: return float(slider(pg, name).locator('.widget-readout').inner_text())


@pytest.fixture(scope='module')
def here():
    "The same editor in this process: what the page should show."
    torch.manual_seed(0)
    ed = Editor(Generator(conv_dim=16, c_dim=5, repeat_num=2), SyntheticFaces(4, size=32, seed=4), preview=16)
    yield ed
    ed.close()


def expect(pg, ed, c, x=None, what='the page shows G(x, c)'):
    want = decode_png(ed.draw(torch.as_tensor(c, dtype=torch.float32)[None], x))
    _wait_for(lambda: same(shown(pg), want), 30, what)
    return want


def test_editor_in_jupyterlab(page, here, lab, tmp_path):
    pg, ed = page, here
    c0 = SyntheticFaces(4, size=32, seed=4).labels[0]
    first = expect(pg, ed, c0, what='the first full frame')
    assert shown(pg).shape == (256, 256, 3)

    # a mouse drag: press the Male handle, move right in steps, let go
    handle = slider(pg, 'Male').locator('.noUi-handle')
    box = handle.bounding_box()
    track = slider(pg, 'Male').locator('.noUi-target').bounding_box()
    pg.mouse.move(box['x'] + box['width'] / 2, box['y'] + box['height'] / 2)
    pg.mouse.down()
    pg.mouse.move(box['x'] + box['width'] / 2 + 0.25 * track['width'], box['y'] + box['height'] / 2, steps=20)
    pg.mouse.up()
    male = value(pg, 'Male')
    assert c0[3].item() + 0.3 < male < 2, male
    c = c0.clone(); c[3] = male
    dragged = expect(pg, ed, c, what=f'the full frame for Male={male} after the drag')
    assert not same(dragged, first)
    assert pg.locator('.stargan-vector').inner_text().startswith('c = (' + ', '.join(f'{v:.2f}' for v in c.tolist()))

    # the keyboard: focus the Young handle, three presses of the right arrow move it three steps
    young = value(pg, 'Young')
    slider(pg, 'Young').locator('.noUi-handle').focus()
    for _ in range(3): pg.keyboard.press('ArrowRight')
    _wait_for(lambda: abs(value(pg, 'Young') - (young + 0.15)) < 1e-6, 10, 'Young moved by three steps')
    c[4] = young + 0.15
    expect(pg, ed, c, what='the full frame after the arrow keys')
    pg.locator('.jp-OutputArea-output:has(.jupyter-widgets)').first.screenshot(path=tmp_path / 'editor_browser.png')
    if os.environ.get('UPDATE_SCREENSHOT'): shutil.copy(tmp_path / 'editor_browser.png', SCREENSHOT)

    # reset: back to the image's own labels
    pg.locator('button.jupyter-button', has_text='reset').click()
    _wait_for(lambda: value(pg, 'Male') == c0[3].item() and value(pg, 'Young') == c0[4].item(), 10, 'the sliders reset')
    expect(pg, ed, c0, what='the first frame again after reset')

    # an upload through the upload button
    src = tmp_path / 'me.png'
    Image.fromarray(np.uint8(np.linspace(0, 255, 48 * 64 * 3).reshape(48, 64, 3))).save(src)
    with pg.expect_file_chooser(timeout=10_000) as chooser: pg.locator('button.widget-upload').click()
    chooser.value.set_files(src)
    x = ed.images[ed.add_image(src.read_bytes(), 'me.png')][0]
    expect(pg, ed, c0, x, what='the uploaded image translated')
    assert pg.locator('button.jupyter-button', has_text='reset').is_disabled()

    # no error, warning or stray text in the cell's output; the status says what was drawn
    cell = pg.locator('.jp-Cell').first
    assert cell.locator('[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0, cell.inner_text()
    assert cell.locator('.jp-OutputArea-output:not(:has(.jupyter-widgets))').count() == 0, cell.inner_text()
    assert pg.locator('.stargan-status').inner_text().startswith('full: '), pg.locator('.stargan-status').inner_text()
