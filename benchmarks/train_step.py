#!/usr/bin/env python
"""Time StarGAN's training iteration: stargan_nb's fastai loop against a plain PyTorch fp32 loop of the official algorithm.

One iteration is one D update, with a G update every n_critic (5) iterations; times are per iteration, averaged over
whole cycles of 5 D + 1 G updates. Both loops train the same networks on the same batches on the same machine, in
one invocation. Three numbers:

  plain    the official algorithm written plainly in PyTorch, fp32: three D passes (real, fake, x_hat), the fake
           recomputed for the G update, D's gradients computed (and discarded) in the G update;
  learner  stargan_nb's `Learner.fit_iters` (callbacks, loss log, NaN guard; no progress bar, no files);
  step     the same `StarGANStep.step` called in a bare Python loop: `learner / step - 1` is fastai's overhead.

Per phase, for `plain` and `step`: an iteration with a D update only, and one with a G update too (their difference is the
G update). FLOP efficiency: the FLOPs of one cycle of 5 iterations, counted with `torch.utils.flop_counter.FlopCounterMode`,
over the seconds the cycle took, against the CPU's fp32 peak where its clock can be read (threads x clock x 32 FLOPs per
cycle on AVX2 kernels, 64 on AVX-512: two FMA units; an upper bound).

The last line is `speedup: <plain / learner>`.

    python benchmarks/train_step.py                                 # 128x128, batch 16, the paper's model, CPU
    python benchmarks/train_step.py --image-size 32 --batch-size 32 --conv-dim 32 --repeat-num 3 --d-repeat-num 4  # the demo
    python benchmarks/train_step.py --device cuda --iters 200      # a GPU (add --compile to compile G)
"""
import argparse, math, statistics, time
import torch

from stargan_nb.faces import synthetic_dls
from stargan_nb.model import Generator, Discriminator, count_params
from stargan_nb.learner import stargan_learner, plain_iteration  # the official loop, written plainly: the baseline


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def timed(f, n, device):
    "Seconds per iteration of `f(n)` (which runs n iterations)."
    sync(device); t = time.perf_counter()
    f(n)
    sync(device)
    return (time.perf_counter() - t) / n


class GlobalOnly:
    "A stand-in for FlopCounterMode's module tracker that attributes every FLOP to the total."
    parents = {'Global'}
    def __enter__(self): return self
    def __exit__(self, *a): pass


def cpu_peak_gflops(device):
    "The CPU's fp32 peak in GFLOP/s for this process's threads (clock from /proc/cpuinfo or sysfs, 2 FMA units), or None."
    if device.type != 'cpu': return None
    mhz = None
    for f in ('/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq',):
        try: mhz = int(open(f).read()) / 1000
        except (OSError, ValueError): pass
    if mhz is None:
        try: mhz = max(float(l.split(':')[1]) for l in open('/proc/cpuinfo') if l.startswith('cpu MHz'))
        except (OSError, ValueError): return None
    lanes = 16 if torch.backends.cpu.get_cpu_capability() == 'AVX512' else 8
    return torch.get_num_threads() * mhz / 1000 * lanes * 2 * 2


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--image-size', type=int, default=128)
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--conv-dim', type=int, default=64, help='first-layer filters of G and D')
    p.add_argument('--repeat-num', type=int, default=6, help="G's residual blocks")
    p.add_argument('--d-repeat-num', type=int, default=None, help="D's strided convs (default: a 2x2 patch map, 6 at 128)")
    p.add_argument('--iters', type=int, default=None, help='timed iterations per loop and round, a multiple of 5 (default 5 on CPU, 100 on GPU)')
    p.add_argument('--warmup', type=int, default=None, help='untimed iterations first (default 5 on CPU, 20 on GPU)')
    p.add_argument('--rounds', type=int, default=1, help='alternate the loops this many times; the median round counts')
    p.add_argument('--device', default='cpu')
    p.add_argument('--precision', default='auto', choices=['auto', 'fp32', 'bf16', 'fp16'])
    p.add_argument('--channels-last', default='auto', choices=['auto', 'true', 'false'])
    p.add_argument('--compile', action='store_true', help="torch.compile stargan_nb's G (D's gradient penalty needs double backward, which compiled graphs lack)")
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    a = p.parse_args(argv)

    device = torch.device(a.device)
    if a.threads: torch.set_num_threads(a.threads)
    gpu = device.type == 'cuda'
    iters = a.iters or (100 if gpu else 5)
    iters = max(5, iters - iters % 5)
    warmup = a.warmup if a.warmup is not None else (20 if gpu else 5)
    d_rep = a.d_repeat_num or int(math.log2(a.image_size)) - 1
    torch.set_flush_denormal(True)  # both loops: x86 CPUs are ~100x slower on denormal floats, which GAN training produces
    if gpu: torch.backends.cudnn.benchmark = True

    torch.manual_seed(0)
    dls = synthetic_dls(n_train=max(4 * a.batch_size, 64), n_valid=8, size=a.image_size, bs=a.batch_size, seed=0, device=device)
    batches = [tuple(t.to(device) for t in b) for b in dls.train]
    c_dim = len(dls.label_names)

    G0, D0 = Generator(a.conv_dim, c_dim, a.repeat_num).to(device), Discriminator(a.image_size, a.conv_dim, c_dim, d_rep).to(device)
    opt_G, opt_D = (torch.optim.Adam(m.parameters(), 1e-4, betas=(0.5, 0.999)) for m in (G0, D0))
    def run_plain(n, state={'i': 0}):
        for _ in range(n):
            x, c = batches[state['i'] % len(batches)]
            plain_iteration(G0, D0, opt_G, opt_D, x, c, state['i']); state['i'] += 1

    cl = {'auto': 'auto', 'true': True, 'false': False}[a.channels_last]
    learn = stargan_learner(dls, g_conv_dim=a.conv_dim, d_conv_dim=a.conv_dim, g_repeat_num=a.repeat_num, d_repeat_num=d_rep,
                            precision=a.precision, channels_last=cl, device=device)
    if a.compile: learn.model.G = torch.compile(learn.model.G)
    step = learn.stargan
    def run_learner(n):
        with learn.no_bar(), learn.no_logging(): learn.fit_iters(n)
    def run_step(n, state={'i': 0}):
        for _ in range(n):
            x, c = batches[state['i'] % len(batches)]
            state['i'] += 1
            step.step(x, c, g_update=state['i'] % 5 == 0)

    print(f"device: {device}{'' if gpu else f' ({torch.get_num_threads()} threads)'}"
          f"{' ' + torch.cuda.get_device_name(device) if gpu else ''}, torch {torch.__version__}")
    print(f"model: {a.image_size}x{a.image_size}, batch {a.batch_size}, conv_dim {a.conv_dim}, G blocks {a.repeat_num}, "
          f"D layers {d_rep}; G {count_params(G0):,} + D {count_params(D0):,} parameters")
    print(f"stargan_nb: precision {step.precision}, channels_last {step.channels_last}, compile {a.compile}; "
          f"{iters} timed iterations per loop after {warmup} warm-up, {a.rounds} round(s)", flush=True)

    loops = {'plain': run_plain, 'learner': run_learner, 'step': run_step}
    for f in loops.values(): f(warmup)
    times = {k: [] for k in loops}
    for r in range(a.rounds):
        for k, f in loops.items():
            times[k].append(timed(f, iters, device))
            print(f"  round {r + 1}: {k:8s} {1000 * times[k][-1]:9.1f} ms/iteration", flush=True)
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}

    # per phase: iterations 1-4 of a cycle update D only, iteration 5 updates D and then G (both loops count from 0)
    phase = {'plain': {'D': [], 'D+G': []}, 'step': {'D': [], 'D+G': []}}
    def one_plain(i):
        x, c = batches[i % len(batches)]
        plain_iteration(G0, D0, opt_G, opt_D, x, c, i)
    def one_step(i):
        x, c = batches[i % len(batches)]
        step.step(x, c, g_update=(i + 1) % 5 == 0)
    for _ in range(a.rounds):
        for k, f in (('plain', one_plain), ('step', one_step)):
            for i in range(5):
                t = timed(lambda n: f(i), 1, device)
                phase[k]['D+G' if (i + 1) % 5 == 0 else 'D'].append(t)
    for k, p in phase.items():
        d, dg = 1000 * statistics.median(p['D']), 1000 * statistics.median(p['D+G'])
        print(f"{k:>6} phases: D update {d:7.1f} ms, G update {dg - d:7.1f} ms (an iteration with both {dg:.1f} ms)")

    from torch.utils.flop_counter import FlopCounterMode
    peak = cpu_peak_gflops(device)
    for k, f in (('plain', one_plain), ('step', one_step)):
        fc = FlopCounterMode(display=False)
        fc.mod_tracker = GlobalOnly()  # its module hooks break autograd.grad on a leaf (the penalty): count the total only
        with fc:
            for i in range(5): f(i)
        gflop = fc.get_total_flops() / 5 / 1e9
        ms_k = ms['plain' if k == 'plain' else 'step']
        achieved = gflop / (ms_k / 1000)
        print(f"{k:>6} FLOPs: {gflop:.3f} GFLOP per iteration, {achieved:.1f} GFLOP/s achieved"
              + (f", {100 * achieved / peak:.0f}% of the {peak:.0f} GFLOP/s fp32 peak" if peak else ", fp32 peak unknown"))
    print(f"plain PyTorch fp32 (official algorithm): {ms['plain']:9.1f} ms/iteration")
    print(f"stargan_nb Learner.fit_iters:            {ms['learner']:9.1f} ms/iteration")
    print(f"stargan_nb step without fastai:          {ms['step']:9.1f} ms/iteration")
    print(f"fastai overhead: {100 * (ms['learner'] / ms['step'] - 1):.1f}%")
    if gpu: print(f"200,000 iterations: {ms['learner'] * 200_000 / 3.6e6:.2f} h")
    print(f"speedup: {ms['plain'] / ms['learner']:.2f}")


if __name__ == '__main__': main()
