"""Train the digits demo models: small U-Net score models on scikit-learn's 8x8 digits.

    .venv/bin/python drivers/train_digits.py [--steps 3000] [--out hpc_picard/models/data/digits_unet.pt]
    .venv/bin/python drivers/train_digits.py --conditional      # digits-cond, digits_cond_unet.pt

CPU only, fixed seed, a few minutes on two cores. The network predicts the noise eps of
X_t = e^{-t} X_0 + sqrt(1 - e^{-2t}) eps on the project's continuous clock (forward time
t, unit-rate OU); training times are drawn log-uniformly in [t_min, t_max] so every
noise level a sampler visits (delta = 1e-3 to T = 10 by default) is covered. The
weights written are an exponential moving average of the iterates, stored in float32
with the network width, so hpc_picard.models.digits.load_network can rebuild it.

``--conditional`` trains the class-conditional model (``--model digits-cond``): the
network also sees the digit's label, and a fraction ``--label-dropout`` of the labels
is replaced by the null class, so the same network gives the unconditional score that
classifier-free guidance needs (Ho and Salimans, 2022).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hpc_picard.models.digits import (COND_WEIGHTS, NUM_CLASSES, WEIGHTS, DigitsQuality,  # noqa: E402
                                      build_network, load_real_digits)


def train(steps: int, width: int, batch: int, lr: float, seed: int, t_min: float, t_max: float,
          threads: int, num_classes: int = 0, label_dropout: float = 0.0, log_every: int = 500):
    import torch
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    images, classes = load_real_digits()
    data = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8)
    targets = torch.as_tensor(classes, dtype=torch.long)
    net = build_network(width, num_classes)
    ema = build_network(width, num_classes)
    ema.load_state_dict(net.state_dict())
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    decay = 0.999
    start = time.perf_counter()
    running = 0.0
    for step in range(1, steps + 1):
        idx = torch.as_tensor(rng.integers(0, len(data), batch))
        x0 = data[idx]
        # random horizontal shifts by one pixel would blur digits; flips change them:
        # no augmentation, the set is small but the model is smaller
        t = torch.exp(torch.empty(batch).uniform_(math.log(t_min), math.log(t_max)))
        eps = torch.randn_like(x0)
        xt = torch.exp(-t)[:, None, None, None] * x0 + \
            torch.sqrt(-torch.expm1(-2 * t))[:, None, None, None] * eps
        if num_classes:
            labels = targets[idx].clone()
            labels[torch.rand(batch) < label_dropout] = -1      # the null class
            loss = ((net(xt, t, labels) - eps) ** 2).mean()
        else:
            loss = ((net(xt, t) - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.mul_(decay).add_(p, alpha=1 - decay)
        running += loss.item()
        if step % log_every == 0:
            print(f"step {step:6d}  loss {running / log_every:.4f}  {time.perf_counter() - start:.0f} s",
                  flush=True)
            running = 0.0
    return ema.eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--t-min", type=float, default=1e-3)
    parser.add_argument("--t-max", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--conditional", action="store_true",
                        help="train digits-cond: class labels with label dropout")
    parser.add_argument("--label-dropout", type=float, default=0.15)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    num_classes = NUM_CLASSES if args.conditional else 0
    out = args.out or (COND_WEIGHTS if args.conditional else WEIGHTS)

    import torch
    net = train(args.steps, args.width, args.batch, args.lr, args.seed, args.t_min, args.t_max,
                args.threads, num_classes, args.label_dropout)
    state = {k: v.detach().float().contiguous() for k, v in net.state_dict().items()}
    state["width"] = torch.tensor(args.width)
    if num_classes:
        state["num_classes"] = torch.tensor(num_classes)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save(state, out)
    params = sum(p.numel() for p in net.parameters())
    print(f"wrote {out}: {params} parameters, {os.path.getsize(out) / 1024:.0f} KiB")
    if num_classes:
        return          # its quality is measured with guidance: drivers/cond_quality.py
    # A quick look at quality through the library's own sampler path.
    from hpc_picard.models.digits import DigitsModel
    from hpc_picard.parallel import Communicator
    from hpc_picard.config import RunConfig
    from hpc_picard.runner import run
    config = RunConfig(model="digits", dim=64, num_samples=200, sampler="sequential-sde",
                       blocks=8, steps_per_block=16, output=os.devnull)
    result = run(config, Communicator.self_comm(), model=DigitsModel(weights=out))
    quality = DigitsQuality.shared().evaluate(result.samples)
    print({k: v for k, v in quality.items() if isinstance(v, float)})


if __name__ == "__main__":
    main()
