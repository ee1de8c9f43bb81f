"""The benchmark scripts run, small, and end with the line `benchmarks/README.md` documents; no speed is asserted."""
import math, re, subprocess, sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each script trains for real: the long checks (python -m pytest -q -m slow tests)

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args, timeout=300):
    r = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / script), *args], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip().splitlines()


def last_number(lines, name):
    "The value of the final line `name: <x>`, which must be a finite positive number."
    m = re.fullmatch(rf'{name}: (\S+)', lines[-1])
    assert m, lines[-3:]
    x = float(m.group(1))
    assert math.isfinite(x) and x > 0, lines[-1]
    return x


def timed(lines, label, unit):
    "The number on the line starting with `label`, which must be a finite positive time or rate."
    hits = [l for l in lines if l.startswith(label)]
    assert len(hits) == 1, (label, lines)
    x = float(re.search(rf'([\d.]+) {unit}', hits[0]).group(1))
    assert math.isfinite(x) and x > 0, hits[0]
    return x


def test_data_throughput_times_both_pipelines():
    lines = run('data_throughput.py', '--n', '40', '--passes', '1', '--image-size', '64')
    base, ours = timed(lines, 'PIL + torchvision.transforms:', 'images/s'), timed(lines, 'stargan_nb, decoding every pass:', 'images/s')
    assert abs(last_number(lines, 'speedup') - ours / base) <= 0.006 + 0.01 * ours / base, lines[-4:]


def test_train_step_times_both_loops():
    lines = run('train_step.py', '--image-size', '32', '--batch-size', '4', '--conv-dim', '8', '--repeat-num', '1',
                '--d-repeat-num', '3', '--iters', '5', '--warmup', '1', '--threads', '1')
    plain = timed(lines, 'plain PyTorch fp32', 'ms/iteration')
    learner = timed(lines, 'stargan_nb Learner.fit_iters:', 'ms/iteration')
    timed(lines, 'stargan_nb step without fastai:', 'ms/iteration')
    assert abs(last_number(lines, 'speedup') - plain / learner) <= 0.006 + 0.01 * plain / learner, lines[-6:]
    for loop in ('plain', 'step'):  # the per-phase breakdown and the FLOP efficiency of both loops
        phases = [l for l in lines if l.strip().startswith(f'{loop} phases:')]
        assert len(phases) == 1 and timed([phases[0].strip()], f'{loop} phases:', 'ms'), lines
        flops = [l for l in lines if l.strip().startswith(f'{loop} FLOPs:')]
        assert len(flops) == 1 and float(re.search(r'([\d.]+) GFLOP per iteration', flops[0]).group(1)) > 0, lines
    # the step does no more arithmetic than the plain loop: it shares the fake between the D and G updates
    gflop = {k: float(re.search(r'([\d.]+) GFLOP per', l).group(1)) for l in lines for k in ('plain', 'step') if l.strip().startswith(f'{k} FLOPs:')}
    assert gflop['step'] < gflop['plain'], gflop


def test_demo_recipes_prices_each_recipe_against_the_reference():
    lines = run('demo_recipes.py', '--rounds', '1', '--iters', '2', '--threads', '1',
                '--recipe', '{"name": "narrow", "g_conv_dim": 8, "d_conv_dim": 8}')
    costs = {m[1]: (float(m[2]), int(m[3].replace(',', ''))) for l in lines
             if (m := re.match(r'\s*(\w+): +[\d.]+ ms/iteration, cost ([\d.]+)x the reference, ([\d,]+) iterations', l))}
    assert set(costs) == {'reference', 'standard', 'small', 'narrow'}, lines
    assert costs['reference'] == (1.0, 800)
    assert costs['narrow'][0] < 1 and costs['small'][0] < 1, costs  # fewer FLOPs cost less, whatever the CPU
    hundreds = lambda r: max(100, int(800 / r) // 100 * 100)   # the printed cost is rounded to 3 decimals: N lies between its bounds'
    for name, (r, n) in costs.items(): assert hundreds(r + 0.0005) <= n <= hundreds(r - 0.0005), (name, r, n)
    got = dict(kv.split('=') for kv in re.fullmatch(r'slowest_cpu_iterations: (.*)', lines[-1]).group(1).split())
    assert {k: int(v) for k, v in got.items()} == {k: n for k, (r, n) in costs.items()}


def test_distributed_step_times_one_and_two_processes():
    lines = run('distributed_step.py', '--image-size', '32', '--batch-size', '4', '--conv-dim', '8', '--repeat-num', '1',
                '--d-repeat-num', '3', '--iters', '5', '--warmup', '1')
    one, two = timed(lines, '1 process', 'images/s'), timed(lines, '2 processes (gloo)', 'images/s')
    assert abs(last_number(lines, 'scaling') - two / one) <= 0.006 + 0.01 * two / one, lines[-4:]


def test_gpu_check_runs_what_the_readme_says():
    text = (ROOT / 'benchmarks' / 'gpu_check.sh').read_text()
    assert 'tests/test_cuda.py' in text and 'benchmarks/train_step.py' in text
