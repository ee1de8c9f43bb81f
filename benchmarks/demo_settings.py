"""The demo's four quality bars for other settings of `DEMO`, against the demo as it ships, in runs of equal time.

    python benchmarks/demo_settings.py --set '{"g_warmup_iters": 600, "n_critic": 5}'      # the demo's settings before 2026-12-03
    python benchmarks/demo_settings.py --minutes 8 --set '{"batch_size": 8}' --seed 1

Both runs start together, one thread each, so they share the machine alike. Each is `stargan_nb.cli.demo(minutes=...)`
with `DEMO` updated by its settings before the call: its own probe times its iterations (n_critic, widths and
warm-up included) and its plan sizes the run to the same minutes, so a slower setting gets fewer iterations, as it
would in a user's demo. Eight minutes on one thread buy about what the demo's six buy on two threads of a 2-core CPU
with native bf16. Prints one line per run (iterations, the four bars) and last `kept_l1_ratio: <x>`, the setting's
`kept_l1` over the shipped demo's (below 1: the setting keeps more of the face).
"""
import argparse, json, subprocess, sys, tempfile

BARS = ('target_accuracy', 'changed_l1_ratio', 'kept_l1', 'psnr_gain_db')

def one_run(out, minutes, settings, seed, n_eval):
    "Child process: the demo with `DEMO` updated by `settings`; prints its result as one JSON line."
    import warnings
    warnings.filterwarnings('ignore')
    import torch
    import stargan_nb.demo as dm
    from stargan_nb.cli import demo
    dm.DEMO.update(settings)
    torch.set_num_threads(1)
    r = demo(out, minutes=minutes, threads=1, progress=False, n_eval=n_eval, seed=seed)
    print(json.dumps({'iterations': r['iterations'], **{k: r['evaluation'][k] for k in BARS}}))

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--set', default='{}', help='JSON dict of DEMO settings to try, e.g. \'{"n_critic": 5}\'')
    ap.add_argument('--minutes', type=float, default=8.)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--n_eval', type=int, default=500, help='held-out faces scored (the demo scores 500)')
    ap.add_argument('--child', help=argparse.SUPPRESS)
    a = ap.parse_args()
    settings = json.loads(a.set)
    if a.child: return one_run(a.child, a.minutes, settings, a.seed, a.n_eval)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: subprocess.Popen([sys.executable, __file__, '--child', f'{tmp}/{name}', '--set', json.dumps(s),
                                        '--minutes', str(a.minutes), '--seed', str(a.seed), '--n_eval', str(a.n_eval)],
                                       stdout=subprocess.PIPE, text=True)
                for name, s in (('shipped', {}), ('setting', settings))}
        res = {}
        for name, p in runs.items():
            out, _ = p.communicate()
            if p.returncode: sys.exit(f'the {name} run failed (exit {p.returncode})')
            res[name] = json.loads(out.strip().splitlines()[-1])
    for name, r in res.items():
        print(f"{name:>8}: {r['iterations']} iterations, " + ', '.join(f'{k} {r[k]:.4f}' for k in BARS)
              + (f'  {settings}' if name == 'setting' else ''))
    print(f"kept_l1_ratio: {res['setting']['kept_l1'] / res['shipped']['kept_l1']:.3f}")

if __name__ == '__main__': main()
