#!/usr/bin/env python
"""Throughput of data-parallel StarGAN on this machine's CPU: 2 gloo processes x 1 thread against 1 process x 1 thread.

Each process trains with the same per-process batch (so two processes train a global batch twice as large) on the
synthetic faces, through `Learner.fit_iters` as `stargan_nb train` does (no files written). Throughput is images
per second over whole cycles of n_critic D updates and one G update, after a warm-up; for two processes, the images
of both over the slower one's time; for two, also the time spent in the gradient all-reduce (which includes waiting for
the slower process). Ideal scaling is 2.0 on two free cores; other processes sharing the CPU lower it.
The last line is `scaling: <two-process throughput / one-process throughput>`.

    python benchmarks/distributed_step.py                          # the demo's model, 32x32, batch 16 per process
    python benchmarks/distributed_step.py --image-size 64 --iters 10
"""
import argparse, json, os, socket, subprocess, sys, time


def worker(a):
    "Train and time one process (of a torchrun-like launch when RANK is set); print its numbers as JSON."
    import torch
    torch.set_num_threads(1)
    import torch.distributed as dist
    from stargan_nb.faces import synthetic_dls
    from stargan_nb.learner import stargan_learner
    torch.manual_seed(0)
    dls = synthetic_dls(n_train=max(4 * a.batch_size, 256), n_valid=8, size=a.image_size, bs=a.batch_size, seed=0)
    learn = stargan_learner(dls, g_conv_dim=a.conv_dim, d_conv_dim=a.conv_dim, g_repeat_num=a.repeat_num,
                            d_repeat_num=a.d_repeat_num, device='cpu', precision='fp32', channels_last=False)
    def barrier():
        if dist.is_initialized(): dist.barrier()
    sync, reducing = learn.stargan.grad_sync, [0.]
    def timed_sync(net):
        t = time.perf_counter(); sync(net); reducing[0] += time.perf_counter() - t
    if sync: learn.stargan.grad_sync = timed_sync
    with learn.no_bar(), learn.no_logging():
        learn.fit_iters(a.warmup)
        barrier(); t = time.perf_counter(); reducing[0] = 0.
        learn.fit_iters(a.iters)
        barrier(); seconds = time.perf_counter() - t
    n = dist.get_world_size() if dist.is_initialized() else 1
    print(json.dumps({'rank': int(os.environ.get('RANK', 0)), 'seconds': seconds, 'images': a.iters * a.batch_size * n,
                      'reducing': reducing[0]}))


def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def run(a, n):
    "Seconds and images of a run of `n` processes (n = 1: a plain process, no process group)."
    argv = [sys.executable, __file__, '--worker'] + [f'--{k.replace("_", "-")}={v}' for k, v in vars(a).items() if k != 'worker']
    port, procs = free_port(), []
    for r in range(n):
        env = {**os.environ, 'OMP_NUM_THREADS': '1'}
        if n > 1: env.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(n))
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True))
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs): sys.exit(f"a benchmark process failed: {[p.returncode for p in procs]}")
    return max(o['seconds'] for o in outs), outs[0]['images'], max(o['reducing'] for o in outs)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--image-size', type=int, default=32)
    p.add_argument('--batch-size', type=int, default=16, help='per process')
    p.add_argument('--conv-dim', type=int, default=32)
    p.add_argument('--repeat-num', type=int, default=3)
    p.add_argument('--d-repeat-num', type=int, default=4)
    p.add_argument('--iters', type=int, default=20, help='timed iterations (a multiple of n_critic = 5)')
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker: return worker(a)
    print(f"StarGAN {a.image_size}x{a.image_size}, conv_dim {a.conv_dim}, batch {a.batch_size} per process, {a.iters} iterations "
          f"after {a.warmup} of warm-up, CPU, 1 thread per process ({os.cpu_count()} cores; load average before: "
          f"{os.getloadavg()[0]:.1f})")
    tput = {}
    for n in (1, 2):
        seconds, images, reducing = run(a, n)
        tput[n] = images / seconds
        print(f"{'1 process' if n == 1 else f'{n} processes (gloo)':<20}{images:5d} images in {seconds:6.2f} s: {tput[n]:7.1f} images/s"
              + (f" ({reducing:.2f} s of it averaging gradients, including waits for the other process)" if n > 1 else ''))
    print(f"scaling: {tput[2] / tput[1]:.2f}")


if __name__ == '__main__':
    main()
