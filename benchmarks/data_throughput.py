"""Loading throughput of the CelebA-layout pipeline of `stargan_nb.data` against plain PIL + torchvision.transforms.

Both pipelines do the same work per image, in the same process: read the JPEG, decode it to RGB, crop the
central 178x178, resize to --image-size, flip with p=0.5, scale to [-1,1], and batch it with its label vector.
  * baseline: `PIL.Image.open(...).convert('RGB')` and the official transforms
    (RandomHorizontalFlip, CenterCrop(178), Resize, ToTensor, Normalize) in a torch `DataLoader`;
  * stargan_nb: `celeba_dls` (libjpeg-turbo decoding into a uint8 tensor, crop and resize on uint8,
    one float conversion and flip per batch), decoding every pass, and with `cache=True` (decoded once).
Without --root a temporary CelebA folder (img_align_celeba/ + list_attr_celeba.txt) of --n synthetic
178x218 JPEGs is written first. The pipelines run --passes passes each over the training split, interleaved;
the best pass of each counts.

    python benchmarks/data_throughput.py [--root DIR] [--n 256] [--image-size 128] [--bs 16] [--passes 3]

The last line is `speedup: <x>`: stargan_nb decoding every pass over the baseline.
"""
import argparse, tempfile, time
from pathlib import Path

import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from stargan_nb.data import celeba_dls
from stargan_nb.faces import save_celeba_layout


class PILCelebA(Dataset):
    "The plain pipeline: PIL decoding and torchvision transforms, one image at a time"
    def __init__(self, files, labels, image_size, crop_size=178):
        self.files, self.labels = files, labels
        self.tfm = T.Compose([T.RandomHorizontalFlip(), T.CenterCrop(crop_size), T.Resize(image_size), T.ToTensor(),
                              T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    def __len__(self): return len(self.files)
    def __getitem__(self, i): return self.tfm(Image.open(self.files[i]).convert('RGB')), self.labels[i]


def rate(loader):
    "Images/s of one full pass over `loader`"
    n, t0 = 0, time.perf_counter()
    for x, c in loader:
        assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1 and c.shape == (len(x), 5)
        n += len(x)
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--root', help='a CelebA folder; default: write a temporary one')
    ap.add_argument('--n', type=int, default=256, help='images in the temporary folder')
    ap.add_argument('--image-size', type=int, default=128)
    ap.add_argument('--bs', type=int, default=16)
    ap.add_argument('--passes', type=int, default=3)
    ap.add_argument('--threads', type=int, default=1, help='torch threads, for both pipelines')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else save_celeba_layout(Path(tmp) / 'celeba', n=args.n, seed=0)
        test_size = 2000 if args.root else 16
        dls = celeba_dls(root, image_size=args.image_size, bs=args.bs, test_size=test_size)
        train = dls.train_ds
        print(f"{len(train)} training images of {root}, {args.image_size}x{args.image_size}, batches of {args.bs}, "
              f"{torch.get_num_threads()} thread(s)")

        base = DataLoader(PILCelebA(train.files, train.labels, args.image_size), batch_size=args.bs, shuffle=True,
                          drop_last=True, num_workers=0)
        cached = celeba_dls(root, image_size=args.image_size, bs=args.bs, test_size=test_size, cache=True)
        r_cold = rate(cached.train)  # decodes and fills the cache
        r_base, r_ours, r_warm = [], [], []
        for _ in range(args.passes):  # interleaved, so that both see the same machine load
            r_base.append(rate(base)); r_ours.append(rate(dls.train)); r_warm.append(rate(cached.train))
        r_base, r_ours, r_warm = max(r_base), max(r_ours), max(r_warm)
        print(f"PIL + torchvision.transforms:         {r_base:8.0f} images/s")
        print(f"stargan_nb, decoding every pass:      {r_ours:8.0f} images/s  ({r_ours / r_base:.2f}x)")
        print(f"stargan_nb, cache=True, first pass:   {r_cold:8.0f} images/s  ({r_cold / r_base:.2f}x)")
        print(f"stargan_nb, cache=True, later passes: {r_warm:8.0f} images/s  ({r_warm / r_base:.2f}x)")
        print(f"speedup: {r_ours / r_base:.2f}")


if __name__ == '__main__': main()
