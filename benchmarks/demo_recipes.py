#!/usr/bin/env python
"""What a demo recipe costs in fp32 against the shipped demo, and what it scores at the iterations a slow CPU would give it.

The slowest real 2-core AVX2 CPU we know trains 800 iterations of the reference demo (`DEMO` with D's real, fake and
interpolated images in one pass, as the step ran before it gave the interpolates their own pass) in the demo's
10-minute budget. A recipe that costs `r` times the reference per iteration (fp32, its warm-up batches included)
gets 800 / r iterations there. Quality at a fixed iteration count does not depend on the machine, so this script can
stand in for the slow machine on any CPU:

  cost     every recipe and the reference trained side by side in this process, fp32, alternated for `--rounds`
           rounds; a recipe's cost is its best round's seconds per iteration (warm-up share included) over the
           reference's best round.
  quality  (with --quality) the demo of each recipe in fp32 at its slow-machine iteration count, scored on the
           demo's 500 held-out faces: the four bars.

    python benchmarks/demo_recipes.py                                   # the shipped recipes: cost only
    python benchmarks/demo_recipes.py --quality                         # and their bars at the slow machine's N
    python benchmarks/demo_recipes.py --recipe '{"image_size": 24, "d_repeat_num": 3}' --quality

The last line is `slowest_cpu_iterations: <recipe>=<N> ...`.
"""
import argparse, json, math, sys, tempfile, time, warnings

import torch

SLOW_CPU_ITERS = 800  # the reference demo's iterations in 10 minutes on the slowest real 2-core AVX2 CPU measured
BARS = ('target_accuracy', 'changed_l1_ratio', 'kept_l1', 'psnr_gain_db')


def reference_d_step(self, x, c_org, c_trg, k=0, keep_fake=False):
    "The reference demo's D update: real, fake and interpolated images in one pass of D (the penalty's double backward sees all three)."
    from stargan_nb import losses
    from stargan_nb.wgan_gp import interpolate, gp_from_output
    G, D, n = self.learn.model.G, self.learn.model.D, len(x)
    with self.autocast():
        with torch.set_grad_enabled(keep_fake): x_fake = G(x, self.g_label(c_trg, k))
        fake = x_fake.detach().to(x.dtype)
        x_hat = interpolate(x, fake)
        out_src, out_cls = D(torch.cat([x, fake, x_hat]))
        src_real, src_fake, src_hat = out_src.split(n)
        loss, terms = losses.d_loss(src_real, out_cls[:n], c_org, src_fake, gp_from_output(src_hat, x_hat),
                                    lambda_cls=self.lambda_cls, lambda_gp=self.lambda_gp, cls=self.cls_loss(k))
    self.opt_D.zero_grad(); loss.backward(); self.opt_D.step()
    return {'D/loss': loss.detach(), **{f'D/loss_{k}': v.detach() for k, v in terms.items()}}, x_fake


def recipes(extra):
    "Name -> DEMO overrides: the reference, the shipped recipes and `extra` (a dict or a list of dicts)."
    import stargan_nb.demo as dm
    out = {'reference': {}, **{k: dict(v) for k, v in getattr(dm, 'DEMO_RECIPES', {'demo': {}}).items()}}
    for i, r in enumerate(extra if isinstance(extra, list) else [extra] if extra else []): out[r.pop('name', f'recipe{i + 1}')] = r
    return out


def learner_for(settings):
    "A demo learner of `DEMO` updated by `settings`, in fp32, writing nothing."
    from stargan_nb.demo import DEMO
    from stargan_nb.faces import synthetic_dls
    from stargan_nb.learner import stargan_learner
    from stargan_nb.train import train_config, learner_options
    cfg = train_config(**{**DEMO, **settings, 'dataset': 'synthetic', 'precision': 'fp32', 'num_workers': 0})
    dls = synthetic_dls(n_train=4 * cfg.batch_size, n_valid=8, size=cfg.image_size, bs=cfg.batch_size, seed=0)
    quiet = dict(log_dir=None, sample_dir=None, model_save_dir=None, use_tensorboard=False)
    return stargan_learner(dls, **{**learner_options(cfg), **quiet}), cfg


def costs(named, rounds, iters):
    "Seconds per iteration (warm-up share included) of each recipe, best of `rounds` alternated rounds."
    from stargan_nb.step import StarGANStep
    learners = {}
    for name, s in named.items():
        learn, cfg = learner_for(s)
        if name == 'reference': learn.stargan.d_step = reference_d_step.__get__(learn.stargan, StarGANStep)
        share = cfg.g_warmup_iters / cfg.num_iters
        learners[name] = (learn, share)
    def one(learn, share, n):
        with learn.no_bar(), learn.no_logging():
            t = time.perf_counter()
            learn.fit_iters(n)
            if share: learn.warmup_identity(max(1, round(share * n)), progress=False)
            return (time.perf_counter() - t) / n
    for learn, share in learners.values(): one(learn, share, 4)  # first calls of the kernels
    best = {k: math.inf for k in learners}
    for _ in range(rounds):
        for k, (learn, share) in learners.items(): best[k] = min(best[k], one(learn, share, iters))
    return best


def quality(settings, n, n_eval, out):
    "The four bars of the demo of `settings`, trained `n` iterations in fp32."
    import stargan_nb.demo as dm
    from stargan_nb.cli import demo
    saved = dict(dm.DEMO)
    dm.DEMO.update(settings)
    try: r = demo(out, num_iters=n, threads=torch.get_num_threads(), progress=False, n_eval=n_eval, precision='fp32')
    finally: dm.DEMO.clear(); dm.DEMO.update(saved)
    return {k: r['evaluation'][k] for k in BARS}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--recipe', default=None, help='JSON dict (or list of dicts, each may have a "name") of DEMO settings to add')
    ap.add_argument('--quality', action='store_true', help="also train each recipe's demo at its slow-CPU iteration count and score it")
    ap.add_argument('--only', default=None, help='comma-separated recipe names to train with --quality (default: all)')
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--iters', type=int, default=10, help='timed iterations per recipe and round')
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: as torch chooses)')
    ap.add_argument('--n_eval', type=int, default=500)
    a = ap.parse_args(argv)
    warnings.filterwarnings('ignore')
    if a.threads: torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    named = recipes(json.loads(a.recipe) if a.recipe else None)
    print(f"fp32 on {torch.backends.cpu.get_cpu_capability()} kernels, {torch.get_num_threads()} thread(s); "
          f"{a.rounds} rounds of {a.iters} iterations per recipe", flush=True)
    sec = costs(named, a.rounds, a.iters)
    slow = {}
    for k, s in named.items():
        r = sec[k] / sec['reference']
        slow[k] = max(100, int(SLOW_CPU_ITERS / r) // 100 * 100)
        print(f"{k:>12}: {1000 * sec[k]:7.1f} ms/iteration, cost {r:.3f}x the reference, {slow[k]:,} iterations on the slowest CPU  {s}", flush=True)
    if a.quality:
        only = a.only.split(',') if a.only else list(named)
        with tempfile.TemporaryDirectory() as tmp:
            for k in only:
                t = time.perf_counter()
                q = quality(named[k], slow[k], a.n_eval, f'{tmp}/{k}')
                print(f"{k:>12} at {slow[k]:,} iterations: " + ', '.join(f'{b} {q[b]:.4f}' for b in BARS)
                      + f"  ({(time.perf_counter() - t) / 60:.1f} min)", flush=True)
    print('slowest_cpu_iterations: ' + ' '.join(f'{k}={v}' for k, v in slow.items()))


if __name__ == '__main__': main()
