"""The reference RISE algorithm (eclique/RISE ``explanations.py``), written by us in PyTorch.

Run under an interpreter with torch + torchvision (not a dependency of saliency-jax). Masks are
generated on the CPU with scikit-image exactly as the reference does (a Python loop of
``skimage.transform.resize`` per mask), the N x 3 x H x W masked stack is built at once, and the
model runs in batches of ``gpu_batch``; the saliency of all classes is ``P^T M / (N p)``.

Prints one JSON line: the seconds of each timed repeat, mask generation included and apart.
"""

import argparse
import json
import time

import numpy as np
import torch
import torchvision
from skimage.transform import resize


def generate_masks(n, s, p1, hw, rng):
    h, w = hw
    cell = np.ceil(np.array(hw) / s)
    up = ((s + 1) * cell).astype(int)
    grid = (rng.random((n, s, s)) < p1).astype("float32")
    masks = np.empty((n, h, w))
    for i in range(n):
        x, y = rng.integers(0, cell[0]), rng.integers(0, cell[1])
        masks[i] = resize(grid[i], up, order=1, mode="reflect", anti_aliasing=False)[
            x:x + h, y:y + w]
    return torch.from_numpy(masks.reshape(-1, 1, h, w)).float()


@torch.no_grad()
def rise_forward(model, x, masks, p1, gpu_batch):
    n, _, h, w = masks.shape
    stack = torch.mul(masks, x)
    p = torch.cat([model(stack[i:i + gpu_batch]) for i in range(0, n, gpu_batch)])
    sal = torch.matmul(p.transpose(0, 1), masks.view(n, h * w))
    return sal.view(-1, h, w) / n / p1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-masks", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torchvision.models.resnet50(), torch.nn.Softmax(dim=1)).eval()
    x = torch.rand(1, 3, args.size, args.size)
    rng = np.random.default_rng(0)
    # Warm-up (allocator, oneDNN primitive caches), as JAX gets its compile call.
    rise_forward(model, x, generate_masks(args.batch_size, 7, 0.5, (args.size,) * 2, rng), 0.5,
                 args.batch_size)
    total, masks_s = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        masks = generate_masks(args.num_masks, 7, 0.5, (args.size,) * 2, rng)
        t1 = time.perf_counter()
        sal = rise_forward(model, x, masks, 0.5, args.batch_size)
        t2 = time.perf_counter()
        assert sal.shape == (1000, args.size, args.size)
        total.append(t2 - t0)
        masks_s.append(t1 - t0)
    print(json.dumps({"total_s": total, "masks_s": masks_s, "torch": torch.__version__,
                      "torchvision": torchvision.__version__,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
