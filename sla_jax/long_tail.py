"""Long-tailed classification: imbalanced subsets, LDAM margins, deferred re-weighting, group metrics.

The recipe of Cao et al. 2019 ("Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss", LDAM-DRW), extended to SLA's joint
labels:

* :func:`long_tailed_counts` / :func:`long_tailed_indices`: the exponential
  profile ``n_i = floor(n_max * ratio ** (-i / (N - 1)))`` (class 0 keeps
  ``n_max`` images, class ``N - 1`` keeps ``n_max / ratio``); the test set stays
  balanced.
* :func:`ldam_margins` and :func:`margin_cross_entropy`: the true-class logit
  lowered by ``margin_y = max_margin * n_y^(-1/4) / max_c n_c^(-1/4)`` before
  the softmax. Cao et al. apply it to ``s * cos`` logits of a normalised head
  (``s = 30``, ``max_margin = 0.5`` in cosine units); with a cosine head of
  scale ``s`` (``CifarResNet(cosine_scale=s)``) the margin in logit units is
  ``s * 0.5``, which is what the configs pass.
* :func:`effective_number_weights` and :func:`reweighted_mean`: class weights
  ``(1 - beta) / (1 - beta ** n_c)`` normalised to sum to ``N`` (Cui et al.
  2019), switched on late in training ("deferred"), each image's loss weighted
  by its class's weight and divided by the batch's weight sum, as PyTorch's
  ``F.cross_entropy(weight=...)`` does.
* :func:`class_groups` / :func:`group_accuracies`: many- (> 100 training
  images), medium- (20-100) and few-shot (< 20) classes, as Liu et al. 2019.

**Joint labels.** Every image is seen under all M transformations, so the
joint class ``(i, j)`` has exactly ``n_i`` training examples: it gets class
``i``'s margin and weight. :func:`margin_cross_entropy` reads the class of a
joint label as ``label // M`` (``M`` = columns / ``N``), so one margin vector of
length ``N`` serves the N-way heads and the ``N * M`` joint head alike, and the
per-image weight of SLA's loss (mean over the M views) is the class weight.
The distillation term of SLA+SD has no label, so no margin; its image weight is
the image's class weight like the rest of that image's loss.

Everything except the host-side index selection is a pure ``jax.numpy``
function, safe under ``jit``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["long_tailed_counts", "long_tailed_indices", "ldam_margins",
           "margin_cross_entropy", "effective_number_weights",
           "reweighted_mean", "class_groups", "group_accuracies", "GROUPS"]

# Liu et al. 2019's groups by training images per class: name -> [low, high).
GROUPS = {"many": (101, np.inf), "medium": (20, 101), "few": (0, 20)}


def long_tailed_counts(n_max: int, num_classes: int, ratio: float) -> np.ndarray:
  """Images per class of the exponential profile, ``[N]`` int (ratio >= 1)."""
  if ratio < 1:
    raise ValueError(f"imbalance ratio must be >= 1 (n_max / n_min); got "
                     f"{ratio}.")
  exponent = np.arange(num_classes) / max(num_classes - 1, 1)
  counts = np.floor(n_max * ratio ** -exponent + 1e-9).astype(np.int64)
  if counts.min() < 1:
    raise ValueError(f"imbalance ratio {ratio} leaves the rarest class of "
                     f"n_max={n_max} images with {counts.min()}: use a ratio "
                     f"<= {n_max} (n_max / n_min with n_min >= 1).")
  return counts


def long_tailed_indices(labels: np.ndarray, num_classes: int,
                        ratio: float) -> np.ndarray:
  """Indices into ``labels`` of a long-tailed subset (sorted).

  Class ``i`` keeps its first ``long_tailed_counts(n_max, N, ratio)[i]``
  images in the given order, ``n_max`` being the smallest class's size (so
  every class can fill its quota). Shuffle the order first for a random
  subset; the same order gives the same subset.
  """
  labels = np.asarray(labels)
  available = np.bincount(labels, minlength=num_classes)
  if available.min() < 1:
    raise ValueError(f"class {int(available.argmin())} has no images to keep "
                     f"a long-tailed share of.")
  counts = long_tailed_counts(int(available.min()), num_classes, ratio)
  keep = np.concatenate([np.flatnonzero(labels == c)[:counts[c]]
                         for c in range(num_classes)])
  return np.sort(keep)


def ldam_margins(class_counts: Sequence[int], max_margin: float) -> np.ndarray:
  """``[N]`` margins ``proportional to n_c^(-1/4)``, the rarest class's equal to ``max_margin``."""
  counts = np.asarray(class_counts, np.float64)
  if counts.min() <= 0:
    raise ValueError(f"every class needs >= 1 training image for LDAM "
                     f"margins; got counts {counts.astype(int).tolist()}.")
  m = counts ** -0.25
  return (m * (max_margin / m.max())).astype(np.float32)


def margin_cross_entropy(logits: jax.Array, labels: jax.Array,
                         margins: jax.Array) -> jax.Array:
  """Per-row cross-entropy with the true logit lowered by its class's margin (LDAM).

  Args:
    logits: ``[R, N * M]`` (``M >= 1``; joint logits when ``M > 1``).
    labels: ``[R]`` labels in ``[0, N * M)``; joint label ``y * M + j`` is of
      class ``y``.
    margins: ``[N]`` per-class margins in logit units.
  Returns:
    ``[R]`` float32 losses.
  """
  margins = jnp.asarray(margins, jnp.float32)
  num_views = logits.shape[-1] // margins.shape[0]
  if num_views * margins.shape[0] != logits.shape[-1]:
    raise ValueError(f"logits have {logits.shape[-1]} columns, not a multiple "
                     f"of the {margins.shape[0]} classes' margins.")
  shift = margins[labels // num_views]
  adjusted = logits.astype(jnp.float32) - shift[:, None] * jax.nn.one_hot(
      labels, logits.shape[-1], dtype=jnp.float32)
  return optax.softmax_cross_entropy_with_integer_labels(adjusted, labels)


def effective_number_weights(class_counts: Sequence[int],
                             beta: float = 0.9999) -> np.ndarray:
  """``[N]`` class-balanced weights ``(1 - beta) / (1 - beta^n_c)``, summing to ``N``."""
  counts = np.asarray(class_counts, np.float64)
  if not 0 <= beta < 1 or counts.min() < 1:
    raise ValueError(f"effective-number weights need 0 <= beta < 1 and >= 1 "
                     f"image per class; got beta={beta}, counts "
                     f"{counts.astype(int).tolist()}.")
  w = (1.0 - beta) / (1.0 - np.power(beta, counts))
  return (w / w.sum() * len(counts)).astype(np.float32)


def reweighted_mean(per_image: jax.Array, weights: jax.Array) -> jax.Array:
  """``sum(w * loss) / sum(w)`` over the batch (PyTorch's weighted CE reduction)."""
  weights = weights.astype(jnp.float32)
  return jnp.sum(weights * per_image) / jnp.sum(weights)


def class_groups(class_counts: Sequence[int],
                 groups: Mapping[str, tuple[float, float]] = GROUPS
                 ) -> dict[str, np.ndarray]:
  """Group name -> ``[N]`` bool mask of the classes whose training count is in ``[low, high)``."""
  counts = np.asarray(class_counts)
  return {name: (counts >= low) & (counts < high)
          for name, (low, high) in groups.items()}


def group_accuracies(correct: np.ndarray, count: np.ndarray,
                     groups: Mapping[str, np.ndarray]) -> dict[str, float]:
  """Accuracy over the test images of each class group (NaN for an empty group).

  ``correct`` / ``count``: ``[N]`` correct predictions and test images per
  class.
  """
  out = {}
  for name, mask in groups.items():
    n = float(np.sum(count[mask]))
    out[name] = float(np.sum(correct[mask])) / n if n else float("nan")
  return out
