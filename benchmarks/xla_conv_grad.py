"""Where the CPU time of a ResNet-32 SLA step goes: one 3x3 conv's forward, input
gradient and weight gradient under XLA, and alternative formulations of the
weight gradient (shifted einsums, explicit patches + one matmul).

    python -m benchmarks.xla_conv_grad --views 512

Prints median seconds per call for each layer shape of the CIFAR ResNet at
``--views`` images, and the relative difference of each alternative to XLA's
own weight gradient.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

_DN = ("NHWC", "HWIO", "NHWC")


def conv(x, w, stride=1):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), ((1, 1), (1, 1)),
                                      dimension_numbers=_DN)


def _shifted(x, kh, kw, out, stride):
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  end = stride * (out - 1) + 1
  return xp[:, kh:kh + end:stride, kw:kw + end:stride, :]


def weight_grad_einsum(x, dy, stride=1):
  """dW[kh, kw] = sum_{n,h,w} x_shift(kh, kw)^T dy, one einsum per tap."""
  out = dy.shape[1]
  return jnp.stack([jnp.stack([
      jnp.einsum("nhwc,nhwd->cd", _shifted(x, kh, kw, out, stride), dy)
      for kw in range(3)]) for kh in range(3)])


def weight_grad_patches(x, dy, stride=1):
  """Materialised 3x3 patches [NHW, 9C] times dy [NHW, D]: one matmul."""
  out, c = dy.shape[1], x.shape[-1]
  patches = jnp.concatenate([_shifted(x, kh, kw, out, stride)
                             for kh in range(3) for kw in range(3)], -1)
  grad = patches.reshape(-1, 9 * c).T @ dy.reshape(-1, dy.shape[-1])
  return grad.reshape(3, 3, c, -1)


def _median_time(fn, *args, repeats=5):
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--views", type=int, default=512)
  args = parser.parse_args()
  n = args.views
  print(f"{'layer (HxW, Cin->Cout, stride)':<32}{'fwd':>7}{'dx':>7}{'dW xla':>8}"
        f"{'einsum':>8}{'patches':>8}  max rel diff")
  for h, cin, cout, stride in [(32, 16, 16, 1), (32, 16, 32, 2), (16, 32, 32, 1),
                               (8, 64, 64, 1)]:
    x = jax.random.normal(jax.random.key(0), (n, h, h, cin))
    w = jax.random.normal(jax.random.key(1), (3, 3, cin, cout)) * 0.1
    dy = jax.random.normal(jax.random.key(2), conv(x, w, stride).shape)
    xla_dw = lambda x, w, dy: jax.vjp(lambda w: conv(x, w, stride), w)[1](dy)[0]
    xla_dx = lambda x, w, dy: jax.vjp(lambda x: conv(x, w, stride), x)[1](dy)[0]
    ref = xla_dw(x, w, dy)
    diff = max(float(jnp.abs(f(x, dy, stride) - ref).max() / jnp.abs(ref).max())
               for f in (weight_grad_einsum, weight_grad_patches))
    print(f"{f'{h}x{h}, {cin}->{cout}, s{stride}':<32}"
          f"{_median_time(lambda x, w: conv(x, w, stride), x, w):>7.3f}"
          f"{_median_time(xla_dx, x, w, dy):>7.3f}"
          f"{_median_time(xla_dw, x, w, dy):>8.3f}"
          f"{_median_time(lambda x, dy: weight_grad_einsum(x, dy, stride), x, dy):>8.3f}"
          f"{_median_time(lambda x, dy: weight_grad_patches(x, dy, stride), x, dy):>8.3f}"
          f"  {diff:.1e}")


if __name__ == "__main__":
  main()
