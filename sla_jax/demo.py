"""A one-minute tour of the public API on a random batch: views -> logits -> losses.

    python -m sla_jax.demo
"""

import jax
import jax.numpy as jnp

from sla_jax import losses, models, objectives, transforms


def main() -> None:
  num_classes, group = 10, transforms.get("rotation")
  m = group.num_views
  objective = objectives.make("sla_sd", num_classes, group.name)
  images = jax.random.uniform(jax.random.key(0), (8, 32, 32, 3), minval=-1, maxval=1)
  labels = jax.random.randint(jax.random.key(1), (8,), 0, num_classes)
  model = models.get("cifar_resnet20", heads=objective.heads)
  views = group.apply(images)                           # [8 * 4, 32, 32, 3]
  variables = model.init(jax.random.key(2), views, train=False)
  out, _ = model.apply(variables, views, train=True, mutable=["batch_stats"])
  joint, single = out["joint"], out["single"][::m]
  print(f"transform {group.name!r}: {images.shape} -> views {views.shape}")
  print(f"joint logits {joint.shape}, joint labels "
        f"{losses.joint_labels(labels, m)[:8].tolist()}...")
  print(f"SLA loss {losses.sla_loss(joint, labels, m):.4f} "
        f"(chance: ln {num_classes * m} = {jnp.log(num_classes * m):.4f})")
  print(f"SLA+SD loss (T=4) "
        f"{losses.self_distillation_loss(joint, single, labels, m, 4.0):.4f}")
  print(f"SI logits {losses.single_logits(joint, m).shape}, "
        f"AG logits {losses.aggregated_logits(joint, m).shape}")


if __name__ == "__main__":
  main()
