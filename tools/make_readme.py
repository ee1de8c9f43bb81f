"""Write README.md from nbs/index.ipynb (Quarto, which `nbdev_readme` needs, is not installable here).

Markdown cells are copied, code cells become ```python blocks (their stored text outputs follow as plain blocks),
`#| hide` cells are skipped, and links into the notebook folder are made relative to the repository root.
Usage: python tools/make_readme.py [--check]   (--check: exit 1 if README.md is not up to date)
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = '<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->\n'


def _fix_links(md:str)->str:
    "Links and images relative to nbs/ become relative to the repository root (`../x` becomes `x`)."
    return re.sub(r'(\]\()(?!https?://|#|/)(\.\./)?([^)\s]+)', lambda m: m[1] + ('' if m[2] else 'nbs/') + m[3], md)


def render(nb_path=ROOT/'nbs'/'index.ipynb')->str:
    cells, parts = json.loads(Path(nb_path).read_text())['cells'], []
    for c in cells:
        src = ''.join(c['source']).strip('\n')
        if c['cell_type'] == 'markdown': parts.append(_fix_links(src))
        elif c['cell_type'] == 'code' and src and not re.match(r'#\|\s*hide', src):
            parts.append(f"```python\n{src}\n```")
            text = ''.join(''.join(o.get('text', '')) for o in c.get('outputs', []) if o.get('output_type') == 'stream')
            text = '\n'.join(l.split('\r')[-1] for l in text.split('\n'))   # a line redrawn with \r shows its last state
            if text.strip(): parts.append(f"```\n{text.rstrip()}\n```")
    return HEADER + '\n' + '\n\n'.join(parts) + '\n'


if __name__ == '__main__':
    text, readme = render(), ROOT/'README.md'
    if '--check' in sys.argv:
        ok = readme.exists() and readme.read_text() == text
        print('README.md is up to date' if ok else 'README.md differs from nbs/index.ipynb: run python tools/make_readme.py')
        sys.exit(0 if ok else 1)
    readme.write_text(text)
    print(f'wrote {readme.relative_to(ROOT)}')
