"""Latency of the live attribute editor (notebook 07_edit) while a slider is dragged and after it is released.

The full paper generator (conv_dim=64, 6 residual blocks, 8.4M parameters) at 128x128 on one image, on the CPU.
Part 1 times single frames, interleaved call by call so that load from other processes hits them alike: the fp32 G
(the baseline), the editor's full frame and its preview (G, upscaling to 256 pixels, PNG), and int8 convolutions
(torch.ao, x86 backend), each checked against fp32 in 8-bit levels. Variants that this CPU would only emulate are
skipped and named: bf16 without AVX512-BF16/AMX.
Part 2 drags a slider of an `Editor` as a browser does, a value every 16 ms for a second, then lets go, `--drags` times.
The last two lines are `drag_ms: <x>`, the median time of one redraw while dragging (a preview, or a full frame where
the full frame fits the editor's budget), and `release_ms: <y>`, the median time from the last value of a drag to its
full frame on screen.

    python benchmarks/edit_latency.py [--n 8] [--drags 5] [--threads 2] [--isa avx2] [--compile]

`--isa avx2` measures an AVX2-only CPU on a newer one: the script reruns itself with ATEN_CPU_CAPABILITY=avx2 and
ONEDNN_MAX_CPU_ISA=AVX2 (PyTorch's own kernels and oneDNN's then stop at AVX2, and the editor's `fast_dtype` picks fp32).
"""
import argparse, copy, os, statistics, subprocess, sys, time, warnings
import numpy as np
import torch
import torch.nn as nn

ISA_ENV = {'avx2': dict(ATEN_CPU_CAPABILITY='avx2', ONEDNN_MAX_CPU_ISA='AVX2')}


def interleaved_ms(fns: dict, n: int, warmup: int = 2) -> dict:
    "Median ms of each function, timing them in turn on every round."
    for f in fns.values():
        for _ in range(warmup): f()
    times = {k: [] for k in fns}
    for _ in range(n):
        for k, f in fns.items():
            t = time.perf_counter(); f(); times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def levels(a: torch.Tensor, b: torch.Tensor) -> str:
    "How far two pictures in [-1, 1] are apart in 8-bit levels."
    from stargan_nb.data import picture_array
    d = np.abs(picture_array((a + 1) / 2).astype(int) - picture_array((b + 1) / 2).astype(int))
    return f"max {d.max()}, mean {d.mean():.2f} levels of 255"


def int8_main(G, calib):
    "G's layer stack with its convolutions in int8 (x86 backend); ConvTranspose2d stays fp32 (see `convt_error`)."
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx, convert_fx
    qmap = get_default_qconfig_mapping('x86').set_object_type(nn.ConvTranspose2d, None)
    p = prepare_fx(copy.deepcopy(G.main).eval(), qmap, (calib[0],))
    with torch.no_grad():
        for h in calib: p(h)
    return convert_fx(p)


def convt_error(G, h) -> float:
    "Relative error of the x86 backend's quantized version of G's first ConvTranspose2d (fbgemm's is about 0.04)."
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx, convert_fx
    i = next(i for i, m in enumerate(G.main) if isinstance(m, nn.ConvTranspose2d))
    with torch.no_grad(): h = G.main[:i](h); ref = G.main[i](h)
    p = prepare_fx(nn.Sequential(copy.deepcopy(G.main[i])).eval(), get_default_qconfig_mapping('x86'), (h,))
    with torch.no_grad(): p(h); y = convert_fx(p)(h)
    return ((y - ref).abs().mean() / ref.abs().mean()).item()


def drag(ed, name: str, drags: int, interval: float = 0.016, seconds: float = 1.0):
    "Drag slider `name` back and forth `drags` times; (redraw ms while dragging, value-to-screen ms, release ms)."
    slider, redraw, latency, release = ed.sliders[name], [], [], []
    kind = 'preview' if ed.preview else 'full'
    for d in range(drags):
        assert ed.wait(60), 'the editor did not finish the previous frame in 60 s'
        seq0, set_at = ed._seq, {}
        values = np.linspace(-1, 2, int(seconds / interval))
        for v in (values if d % 2 == 0 else values[::-1]):
            t = time.perf_counter()
            slider.value = float(v)
            set_at[ed._seq] = time.perf_counter()
            time.sleep(max(0., t + interval - time.perf_counter()))
        t_release = set_at[ed._seq]
        assert ed.wait(60), 'the editor did not draw the released value in 60 s'
        frames = [f for f in ed.frames if f.seq > seq0]
        moving = [f for f in frames if f.kind == kind and f.t <= t_release]
        redraw += [f.ms for f in moving]
        latency += [(f.t - set_at[f.seq]) * 1e3 for f in moving if f.seq in set_at]
        last = frames[-1]
        assert last.kind == 'full' and last.seq == ed._seq, last
        release.append((last.t - t_release) * 1e3)
    return redraw, latency, release


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=8, help='timed rounds of single frames')
    ap.add_argument('--drags', type=int, default=5, help='simulated drags of one second each')
    ap.add_argument('--threads', type=int, default=None, help='torch threads (default: torch decides)')
    ap.add_argument('--size', type=int, default=128)
    ap.add_argument('--preview', type=int, default=None, help="the editor's preview side (default: it decides)")
    ap.add_argument('--isa', choices=list(ISA_ENV), default=None, help='emulate a CPU with only this instruction set')
    ap.add_argument('--compile', action='store_true', help='also time torch.compile of the fast path (about a minute)')
    a = ap.parse_args()
    if a.isa and os.environ.get('ONEDNN_MAX_CPU_ISA') != ISA_ENV[a.isa]['ONEDNN_MAX_CPU_ISA']:
        sys.exit(subprocess.run([sys.executable, *sys.argv], env={**os.environ, **ISA_ENV[a.isa]}).returncode)

    from stargan_nb.model import Generator, tile_label
    from stargan_nb.faces import SyntheticFaces
    from stargan_nb.edit import Editor, fast_generator, fast_dtype, downscale
    from stargan_nb.step import native_bf16_cpu
    if a.threads: torch.set_num_threads(a.threads)
    warnings.filterwarnings('ignore', message='torch.ao.quantization is deprecated')   # torchao replaces it
    warnings.filterwarnings('ignore', category=UserWarning, module='torch.ao')       # its notices about quantized tensors
    torch.manual_seed(0)
    G = Generator().eval()
    faces = SyntheticFaces(4, size=a.size, seed=0)
    x, c = faces[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '-')}; "
          f"G {sum(p.numel() for p in G.parameters()):,} parameters, one {a.size}x{a.size} image; "
          f"load average {os.getloadavg()[0]:.2f}")

    t = time.perf_counter()
    ed = Editor(G, [(x, c)], **({} if a.preview is None else dict(preview=a.preview)))
    p = ed.preview
    print(f"editor: {ed.G.dtype}{', channels_last' if ed.G.channels_last else ''}, preview "
          f"{f'{p}x{p}' if p else 'none'}; built in {time.perf_counter() - t:.1f} s")
    assert ed.wait(60)
    xs = downscale(x, p) if p else x
    calib = [tile_label(f[0][None], f[1][None]) for f in faces]
    q = int8_main(G, calib)

    def run(g, xx):
        def f():
            with torch.inference_mode(): return g(xx[None], c[None])
        return f
    def run_q(xx):
        def f():
            with torch.inference_mode(): return q(tile_label(xx[None], c[None]))
        return f
    base = 'fp32 G (baseline)'
    variants = {base: run(G, x), f'editor full frame ({ed.G.dtype}; + PNG)': lambda: ed.draw(c[None], x),
                'int8 convolutions, full size': run_q(x)}
    if p: variants.update({f'editor preview {p}x{p} ({ed.G.dtype}; + PNG)': lambda: ed.draw(c[None], x, preview=True),
                           f'int8 convolutions, {p}x{p}': run_q(xs)})
    skipped = []
    if native_bf16_cpu() and fast_dtype() == torch.bfloat16:
        f32 = fast_generator(G, torch.float32, channels_last=ed.G.channels_last)
        variants['fast path in fp32 (G only)'] = run(f32, x)
    else: skipped.append('bf16 (emulated on this CPU)')
    if a.compile:
        t = time.perf_counter()
        main_c = torch.compile(copy.deepcopy(ed.G.G.main))
        h = tile_label(x[None], c[None]).to(ed.G.dtype).contiguous(memory_format=torch.channels_last)
        with torch.no_grad(): main_c(h)
        print(f"torch.compile of the fast path: {time.perf_counter() - t:.0f} s to compile")
        def compiled():
            with torch.no_grad(): return main_c(h)
        variants['fast path, torch.compile (G only)'] = compiled
    res = interleaved_ms(variants, a.n)
    for k, v in res.items(): print(f"  {k:46} {v:8.1f} ms  {v / res[base]:5.2f} x baseline")
    if skipped: print(f"  skipped: {', '.join(skipped)}")

    with torch.inference_mode(): y32 = G(x[None], c[None])[0]
    print(f"  editor full frame vs fp32 G: {levels(ed.G(x[None], c[None])[0], y32)}")
    print(f"  int8 convolutions vs fp32 G: {levels(run_q(x)()[0], y32)}; with ConvTranspose2d quantized too, "
          f"the x86 backend's version of it is off by {convt_error(G, calib[0]):.2f} of its output (relative)")

    redraw, latency, release = drag(ed, 'Blond_Hair', a.drags)
    med = lambda v: statistics.median(v) if v else float('nan')
    print(f"drag (a value every 16 ms for 1 s, {a.drags} times): {len(redraw)} redraws while moving, median "
          f"{med(redraw):.1f} ms each ({med(redraw) / res[base]:.2f} x baseline), value to screen {med(latency):.1f} ms; "
          f"{ed.dropped} full frames dropped for newer values; release to full frame "
          f"{', '.join(f'{r:.0f}' for r in release)} ms ({med(release) / res[base]:.2f} x baseline)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (other processes share the cores)")
    ed.close()
    print(f"drag_ms: {med(redraw):.1f}")
    print(f"release_ms: {med(release):.1f}")


if __name__ == '__main__': main()
