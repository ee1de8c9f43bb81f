"""The benchmark scripts run, small, and end with the line `benchmarks/README.md` documents; no speed is asserted."""
import math, re, subprocess, sys
from pathlib import Path

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


def test_distributed_step_times_one_and_two_processes():
    lines = run('distributed_step.py', '--image-size', '32', '--batch-size', '4', '--conv-dim', '8', '--repeat-num', '1',
                '--d-repeat-num', '3', '--iters', '5', '--warmup', '1')
    one, two = timed(lines, '1 process', 'images/s'), timed(lines, '2 processes (gloo)', 'images/s')
    assert abs(last_number(lines, 'scaling') - two / one) <= 0.006 + 0.01 * two / one, lines[-4:]


def test_gpu_check_runs_what_the_readme_says():
    text = (ROOT / 'benchmarks' / 'gpu_check.sh').read_text()
    assert 'tests/test_cuda.py' in text and 'benchmarks/train_step.py' in text
