"""Latency of one redraw of the live attribute editor (notebook 07_edit).

The full paper generator (conv_dim=64, 6 residual blocks, 8.4M parameters) at 128x128 on one image, on the CPU.
The fp32 baseline, the fast variants and a slider move through `Editor` (its default path: G plus PNG encoding) are
timed in the same run, interleaved call by call so that load from other processes hits them alike.
The last line is `latency_ms: <median>` of the slider move.

    python benchmarks/edit_latency.py [--n 30] [--threads 2]
"""
import argparse, itertools, os, statistics, time
import numpy as np
import torch
from stargan_nb.model import Generator
from stargan_nb.faces import SyntheticFaces
from stargan_nb.edit import Editor, fast_generator
from stargan_nb.data import picture_array


def interleaved_ms(fns: dict, n: int, warmup: int = 3) -> dict:
    "Median ms of each function, timing them in turn on every round."
    for f in fns.values():
        for _ in range(warmup): f()
    times = {k: [] for k in fns}
    for _ in range(n):
        for k, f in fns.items():
            t = time.perf_counter(); f(); times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=30, help='timed calls per variant')
    ap.add_argument('--threads', type=int, default=None, help='torch threads (default: torch decides)')
    ap.add_argument('--size', type=int, default=128)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    G = Generator().eval()
    faces = SyntheticFaces(1, size=a.size, seed=0)
    x, c = faces[0]
    x, c = x[None], c[None]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; G {sum(p.numel() for p in G.parameters()):,} parameters, "
          f"one {a.size}x{a.size} image")

    G_cl = Generator().eval(); G_cl.load_state_dict(G.state_dict()); G_cl = G_cl.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fast, fast_cl = fast_generator(G), fast_generator(G, channels_last=True)

    def plain(g, xx):
        def f():
            with torch.inference_mode(): return g(xx, c)
        return f

    def autocast_plain():
        with torch.inference_mode(), torch.autocast('cpu', torch.bfloat16): return G(x, c)

    ed = Editor(G, [(x[0], c[0])])
    values = itertools.cycle(np.linspace(-1, 2, 13)[1:].tolist())
    def move(): ed.sliders['Blond_Hair'].value = next(values)

    variants = {'G only, fp32 (baseline)': plain(G, x), 'G only, fp32 channels_last': plain(G_cl, x_cl),
                'G only, bf16 autocast, InstanceNorm as is': autocast_plain,
                f'G only, fast path ({fast.dtype}, group_norm)': lambda: fast(x, c),
                f'G only, fast path ({fast.dtype}, group_norm, channels_last)': lambda: fast_cl(x, c),
                f"editor slider move ({ed.G.dtype}{', channels_last' if ed.G.channels_last else ''}; G + PNG)": move}
    res = interleaved_ms(variants, a.n)
    for k, v in res.items(): print(f"  {k:58} {v:7.1f} ms")

    with torch.inference_mode(): y32 = G(x, c)
    y16 = fast(x, c)
    levels = np.abs(picture_array((y16[0] + 1) / 2).astype(int) - picture_array((y32[0] + 1) / 2).astype(int))
    print(f"  fast path vs fp32: max |diff| {(y16 - y32).abs().max():.4f}, mean {(y16 - y32).abs().mean():.5f} "
          f"(range [-1,1]); 8-bit levels: max {levels.max()}, mean {levels.mean():.3f}")

    print(f"  load average while measuring: {os.getloadavg()[0]:.2f} (other processes share the cores)")
    print(f"latency_ms: {res[list(res)[-1]]:.1f}")


if __name__ == '__main__': main()
