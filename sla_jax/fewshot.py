"""Few-shot classification heads, episodes and SLA for few-shot, as pure functions.

An episode has ``W`` ways (classes), ``K`` shots (support images per class)
and ``Q`` queries per class. A head maps the support features ``[S, D]``, their
episode labels ``[S]`` in ``[0, W)`` and the query features ``[Q', D]`` to
logits ``[Q', W]``, with the signature of :func:`protonet_logits`::

    head(support_features, support_labels, query_features, num_ways) -> logits

* :func:`protonet_logits`: minus the squared distance to the class means
  (Snell et al. 2017).
* :func:`ridge_logits`: the closed-form ridge-regression head of R2D2
  (Bertinetto et al. 2019).
* :func:`svm_logits`: the multi-class (Crammer-Singer) SVM head of MetaOptNet
  (Lee et al. 2019), a QP solved by OSQP (jaxopt) and differentiated
  implicitly.

The heads compute in float32, need ``num_ways`` static (under ``jax.jit`` pass
it as a static argument or close over it), and work under ``jax.vmap`` over a
batch of episodes; gradients flow to all features (meta-training).

SLA for few-shot (Lee et al. 2020): every (class, transformation) pair is a
class of its own. With ``M`` views of each image laid out as
:meth:`sla_jax.transforms.TransformGroup.apply` lays them out (row
``b * M + j`` is view ``j`` of image ``b``, view 0 the identity), the support
views get the ``W * M``-way labels ``y * M + j`` (:func:`joint_episode_labels`)
and :func:`sla_logits` gives the joint logits for meta-training and the SI and
AG logits for testing.

:func:`sample_episode` draws episodes on the host (numpy), a pure function of
``(seed, index)``, so a run's test episodes are the same for every model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sla_jax import losses

__all__ = ["Episode", "Head", "prototypes", "protonet_logits", "ridge_logits",
           "svm_logits", "sample_episode", "load_class_split",
           "joint_episode_labels", "sla_logits", "mean_confidence_interval"]

Head = Callable[[jax.Array, jax.Array, jax.Array, int], jax.Array]


def _check_episode(support_features: jax.Array, support_labels: jax.Array,
                   query_features: jax.Array | None = None) -> None:
  if support_features.ndim != 2:
    raise ValueError(f"support_features must be [S, D]; got shape "
                     f"{tuple(support_features.shape)}.")
  if support_labels.shape != support_features.shape[:1]:
    raise ValueError(f"support_labels must be [S] = [{support_features.shape[0]}]"
                     f" (one per support row); got shape "
                     f"{tuple(support_labels.shape)}.")
  if query_features is not None and (
      query_features.ndim != 2 or
      query_features.shape[1] != support_features.shape[1]):
    raise ValueError(f"query_features must be [Q, D] with the support's "
                     f"D = {support_features.shape[1]}; got shape "
                     f"{tuple(query_features.shape)}.")


def _one_hot(labels: jax.Array, num_ways: int) -> jax.Array:
  if isinstance(num_ways, bool) or not isinstance(num_ways, (int, np.integer)) \
      or num_ways < 1:
    raise ValueError(f"num_ways (W) must be an integer >= 1; got {num_ways!r}.")
  losses.check_labels(labels, num_ways, "support_labels")
  return jax.nn.one_hot(jnp.asarray(labels), num_ways, dtype=jnp.float32)


def prototypes(support_features: jax.Array, support_labels: jax.Array,
               num_ways: int) -> jax.Array:
  """Class means ``p_c = mean{f_s : y_s = c}`` of the support, ``[W, D]`` float32.

  One one-hot matmul (static shapes, jit-safe). A class with no support row
  gets a zero prototype.
  """
  support_features = jnp.asarray(support_features)
  support_labels = jnp.asarray(support_labels)
  _check_episode(support_features, support_labels)
  one_hot = _one_hot(support_labels, num_ways)                 # [S, W]
  sums = one_hot.T @ support_features.astype(jnp.float32)      # [W, D]
  counts = one_hot.sum(axis=0)[:, None]
  return sums / jnp.maximum(counts, 1.0)


def protonet_logits(support_features: jax.Array, support_labels: jax.Array,
                    query_features: jax.Array, num_ways: int) -> jax.Array:
  """Prototypical-network logits ``-||q - p_c||^2``, ``[Q, W]`` float32."""
  query_features = jnp.asarray(query_features)
  _check_episode(jnp.asarray(support_features), jnp.asarray(support_labels),
                 query_features)
  protos = prototypes(support_features, support_labels, num_ways)
  diff = query_features.astype(jnp.float32)[:, None, :] - protos[None]
  return -jnp.sum(diff * diff, axis=-1)


def ridge_logits(support_features: jax.Array, support_labels: jax.Array,
                 query_features: jax.Array, num_ways: int,
                 l2: float | jax.Array = 50.0,
                 scale: float | jax.Array = 1.0) -> jax.Array:
  """R2D2 ridge-regression logits ``scale * q W``, ``[Q, W]`` float32.

  ``W = argmin ||X W - Y||^2 + l2 ||W||^2 = X^T (X X^T + l2 I)^-1 Y`` with
  ``X`` the ``[S, D]`` support features and ``Y`` their one-hot labels: the
  Woodbury form needs one ``S x S`` solve (``S << D`` in few-shot), and is
  differentiable in the features, ``l2`` and ``scale`` (both may be learned
  arrays). Defaults as MetaOptNet's R2D2 head (``l2 = 50``).
  """
  query_features = jnp.asarray(query_features)
  support_features = jnp.asarray(support_features)
  _check_episode(support_features, jnp.asarray(support_labels), query_features)
  x = support_features.astype(jnp.float32)
  y = _one_hot(support_labels, num_ways)
  gram = x @ x.T + jnp.asarray(l2, jnp.float32) * jnp.eye(x.shape[0])
  dual = jax.scipy.linalg.solve(gram, y, assume_a="pos")      # [S, W]
  compat = query_features.astype(jnp.float32) @ x.T            # [Q, S]
  return jnp.asarray(scale, jnp.float32) * (compat @ dual)


def _svm_dual(gram: jax.Array, y: jax.Array, c: float, tol: float,
              maxiter: int) -> jax.Array:
  """``alpha [S, W]`` of the Crammer-Singer dual (see :func:`svm_logits`)."""
  try:  # not a core dependency: only this head needs it
    import jaxopt  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError("svm_logits needs jaxopt: pip install jaxopt.") from None
  shots, ways = y.shape
  n = shots * ways
  quad = jnp.kron(gram, jnp.eye(ways))          # variable s * W + c
  linear = -y.reshape(-1)
  bound = c * y.reshape(-1)                     # alpha_{s,c} <= C [c == y_s]
  row_sums = jnp.kron(jnp.eye(shots), jnp.ones((1, ways)))   # [S, n]
  solver = jaxopt.BoxOSQP(tol=tol, maxiter=maxiter)
  sol = solver.run(
      params_obj=(jax.lax.stop_gradient(quad), linear),
      params_eq=jnp.concatenate([jnp.eye(n), row_sums]),
      params_ineq=(jnp.concatenate([jnp.full((n,), -jnp.inf), jnp.zeros(shots)]),
                   jnp.concatenate([bound, jnp.zeros(shots)]))).params
  alpha = sol.primal[0]
  # Active bounds: the multiplier exceeds the slack (complementarity).
  active = (sol.dual_eq[:n] > bound - alpha).astype(jnp.float32)
  # The QP with its active bounds as equalities is one linear KKT system,
  # differentiable in the kernel: [[Q, A, E^T], [A, 1 - A, 0], [E, 0, 0]].
  zeros_ns = jnp.zeros((n, shots))
  kkt = jnp.block([
      [quad, jnp.diag(active), row_sums.T],
      [jnp.diag(active), jnp.diag(1.0 - active), zeros_ns],
      [row_sums, zeros_ns.T, jnp.zeros((shots, shots))]])
  rhs = jnp.concatenate([-linear, active * bound, jnp.zeros(shots)])
  exact = jnp.linalg.solve(kkt, rhs)[:n]
  # The solver's value, the active-set system's gradient.
  alpha = alpha + exact - jax.lax.stop_gradient(exact)
  return alpha.reshape(shots, ways)


def svm_logits(support_features: jax.Array, support_labels: jax.Array,
               query_features: jax.Array, num_ways: int, c: float = 0.1,
               kernel_ridge: float = 1.0, tol: float = 1e-5,
               maxiter: int = 4000) -> jax.Array:
  """MetaOptNet's multi-class SVM logits ``q . w_c``, ``[Q, W]`` float32.

  The Crammer-Singer SVM dual over ``alpha [S, W]``::

      min  1/2 sum_{s,t} (K_st + r d_st) <alpha_s, alpha_t> - sum_s alpha_{s, y_s}
      s.t. alpha_{s,c} <= C [c == y_s],   sum_c alpha_{s,c} = 0   for all s

  with ``K = X X^T``, ``C = c`` (MetaOptNet's ``C_reg = 0.1``) and
  ``r = kernel_ridge`` (MetaOptNet adds ``1 * I`` to keep the QP strictly
  convex); then ``w_c = sum_s alpha_{s,c} x_s``. The QP is solved by jaxopt's
  ``BoxOSQP`` to ``tol``. Gradients: implicit differentiation of the QP with
  its active bounds held fixed (exact wherever the active set is locally
  constant, i.e. almost everywhere), as one dense ``(2 S W + S)``-square solve;
  jaxopt's own KKT differentiation is singular for this QP (equality rows
  and bounds at infinity) and gave wrong gradients. Memory grows as
  ``(S W)^2``. Needs jaxopt.
  """
  query_features = jnp.asarray(query_features)
  support_features = jnp.asarray(support_features)
  _check_episode(support_features, jnp.asarray(support_labels), query_features)
  x = support_features.astype(jnp.float32)
  y = _one_hot(support_labels, num_ways)
  gram = x @ x.T + kernel_ridge * jnp.eye(x.shape[0])
  alpha = _svm_dual(gram, y, c, tol, maxiter)
  return query_features.astype(jnp.float32) @ (x.T @ alpha)


class Episode(NamedTuple):
  """Dataset indices and episode labels of one ``W``-way ``K``-shot episode.

  Rows are class-major: support row ``w * K + k`` and query row ``w * Q + q``
  have label ``w``, the ``w``-th class drawn (``classes[w]``).
  """
  support_indices: np.ndarray  # [W * K] int64, into the dataset
  support_labels: np.ndarray   # [W * K] int32 in [0, W)
  query_indices: np.ndarray    # [W * Q] int64
  query_labels: np.ndarray     # [W * Q] int32 in [0, W)
  classes: np.ndarray          # [W] dataset class ids, episode label order


def sample_episode(labels: np.ndarray, classes: Sequence[int], num_ways: int,
                   num_shots: int, num_queries: int, seed: int,
                   index: int) -> Episode:
  """The episode ``index`` of the stream ``seed``: a pure function of both.

  Draws ``num_ways`` distinct classes from the pool ``classes`` (the split's
  class ids; their order does not matter) and, without replacement,
  ``num_shots + num_queries`` distinct images of each from ``labels`` (the
  ``[n]`` class id of every dataset image). Host numpy, so it can run ahead of
  the device in an input pipeline.
  """
  labels = np.asarray(labels)
  pool = np.unique(np.asarray(classes))
  if labels.ndim != 1:
    raise ValueError(f"labels must be [n], one class id per image; got shape "
                     f"{labels.shape}.")
  if num_ways < 1 or num_shots < 1 or num_queries < 0:
    raise ValueError(f"num_ways and num_shots must be >= 1 and num_queries "
                     f">= 0; got {num_ways}, {num_shots}, {num_queries}.")
  if num_ways > pool.size:
    raise ValueError(f"{num_ways}-way episodes need {num_ways} classes; the "
                     f"pool has {pool.size}. Lower num_ways or use a larger "
                     f"split.")
  rng = np.random.default_rng([int(seed), int(index)])
  chosen = rng.choice(pool, num_ways, replace=False)
  per_class = num_shots + num_queries
  picks = []
  for c in chosen:
    members = np.flatnonzero(labels == c)
    if members.size < per_class:
      raise ValueError(f"Class {c} has {members.size} images; an episode needs "
                       f"{per_class} ({num_shots} shots + {num_queries} "
                       f"queries). Lower num_shots/num_queries or drop the "
                       f"class from the pool.")
    picks.append(rng.choice(members, per_class, replace=False))
  picks = np.stack(picks).astype(np.int64)                     # [W, K + Q]
  ways = np.arange(num_ways, dtype=np.int32)
  return Episode(
      support_indices=picks[:, :num_shots].reshape(-1),
      support_labels=np.repeat(ways, num_shots),
      query_indices=picks[:, num_shots:].reshape(-1),
      query_labels=np.repeat(ways, num_queries),
      classes=chosen)


def load_class_split(path: str | os.PathLike,
                     classes_file: str | os.PathLike | None = None
                     ) -> dict[str, tuple[int, ...]]:
  """A few-shot class split as ``{split: sorted label indices}``.

  ``path`` is a JSON object mapping split names (``train``/``val``/``test``)
  to lists of class ids: integers are kept, WordNet ids (strings) are mapped
  to label indices by their line in ``classes_file`` (default:
  ``classes.txt`` next to the JSON; ``wnid<TAB>name`` per line, as
  ``tinyimagenet100-32``). Entries that are not lists (``"method"``) are
  skipped.
  """
  with open(path) as f:
    raw = json.load(f)
  if not isinstance(raw, dict):
    raise ValueError(f"{path} must be a JSON object of split name -> class "
                     f"list, e.g. {{\"train\": [...], \"val\": [...], "
                     f"\"test\": [...]}}; got a {type(raw).__name__}.")
  lists = {k: v for k, v in raw.items() if isinstance(v, list)}
  index = None
  if any(isinstance(c, str) for v in lists.values() for c in v):
    classes_file = classes_file or os.path.join(os.path.dirname(path),
                                                "classes.txt")
    if not os.path.exists(classes_file):
      raise ValueError(f"{path} lists class names; pass classes_file (one "
                       f"class per line, in label order): {classes_file} does "
                       f"not exist.")
    with open(classes_file) as f:
      names = [line.split("\t")[0].strip() for line in f if line.strip()]
    index = {name: i for i, name in enumerate(names)}
  split = {}
  for name, members in lists.items():
    if any(isinstance(c, float) and not c.is_integer() for c in members):
      raise ValueError(f"Split {name!r} of {path} has a class id that is not "
                       f"a whole number.")
    try:
      ids = [index[c] if isinstance(c, str) else int(c) for c in members]
    except (KeyError, TypeError):
      raise ValueError(f"Split {name!r} of {path} has a class not in "
                       f"{classes_file}.") from None
    split[name] = tuple(sorted(ids))
  return split


def joint_episode_labels(labels: jax.Array, num_views: int) -> jax.Array:
  """The ``W * M``-way labels ``y * M + j`` of the views, ``[S * M]`` int32.

  Row ``b * M + j`` (view ``j`` of image ``b``, the layout of
  :meth:`sla_jax.transforms.TransformGroup.apply`) gets ``labels[b] * M + j``.
  """
  return losses.joint_labels(labels, num_views)


def sla_logits(support_view_features: jax.Array, support_labels: jax.Array,
               query_view_features: jax.Array, num_ways: int, num_views: int,
               head: Head = protonet_logits) -> dict[str, jax.Array]:
  """SLA few-shot logits of a ``W * M``-way joint episode.

  Args:
    support_view_features: ``[S * M, D]``, row ``s * M + j`` = view ``j`` of
      support image ``s``.
    support_labels: ``[S]`` episode labels in ``[0, W)`` of the images.
    query_view_features: ``[Q * M, D]``, row ``q * M + j`` = view ``j`` of
      query image ``q``.
    num_ways: ``W``.
    num_views: ``M`` (view 0 the identity).
    head: A few-shot head (:func:`protonet_logits`, :func:`ridge_logits`,
      ``functools.partial`` of one, ...).

  Returns:
    ``"joint"``: ``[Q * M, W * M]`` the head over the ``W * M`` joint classes
    (column ``c * M + j`` = class ``c`` under transformation ``j``); train it
    with cross-entropy against ``joint_episode_labels(query_labels, M)``.
    ``"si"``: ``[Q, W]`` the identity view of each query scored against the
    identity joint classes (``joint[::M, ::M]``; for ProtoNet these are the
    prototypes of the identity views alone).
    ``"ag"``: ``[Q, W]`` ``(1/M) sum_j joint[q * M + j, c * M + j]``, view
    ``j`` scored against class ``c`` under the same transformation.
  """
  m = num_views
  support_view_features = jnp.asarray(support_view_features)
  query_view_features = jnp.asarray(query_view_features)
  support_labels = jnp.asarray(support_labels)
  if (support_view_features.shape[0] != support_labels.shape[0] * m or
      query_view_features.shape[0] % m):
    raise ValueError(
        f"With M = {m} views the support features must have S * M = "
        f"{support_labels.shape[0] * m} rows and the query features a "
        f"multiple of M; got {support_view_features.shape[0]} and "
        f"{query_view_features.shape[0]}. Lay views out as row b * M + j.")
  losses.check_labels(support_labels, num_ways, "support_labels")
  joint = head(support_view_features, joint_episode_labels(support_labels, m),
               query_view_features, num_ways * m)
  return {"joint": joint, "si": losses.single_logits(joint, m),
          "ag": losses.aggregated_logits(joint, m)}


def mean_confidence_interval(accuracies: Sequence[float] | np.ndarray
                             ) -> tuple[float, float]:
  """Mean and 95% half-width ``1.96 * std / sqrt(n)`` of per-episode accuracies.

  ``std`` is the sample standard deviation (``ddof=1``); the usual few-shot
  report is ``mean +- half_width`` over e.g. 1000 test episodes.
  """
  values = np.asarray(accuracies, np.float64).reshape(-1)
  if values.size < 2:
    raise ValueError(f"A confidence interval needs at least 2 episodes; got "
                     f"{values.size}.")
  return (float(values.mean()),
          float(1.96 * values.std(ddof=1) / np.sqrt(values.size)))
