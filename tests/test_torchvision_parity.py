"""torchvision resnet18 / resnet50 weights in our ResNet give torchvision's eval-mode logits.

Needs torch and torchvision (``[bench]`` extra plus ``torchvision``); skipped
cleanly without them. torchvision's compiled ops do not load beside the CPU-only
torch wheel, so its operator meta-registrations (detection ops, unused by the
ResNets) are stubbed before the import.
"""

import jax
import numpy as np
import pytest

from sla_jax import models
from tests import torch_util

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def torchvision_models():
  return torch_util.import_torchvision_or_skip().models


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_weights_give_the_same_logits(torchvision_models, name):
  torch.manual_seed(0)
  reference = getattr(torchvision_models, name)(num_classes=20)
  with torch.no_grad():  # non-trivial BatchNorm statistics and scales
    for module in reference.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.uniform_(-0.2, 0.2)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
  reference.eval()
  images = np.random.RandomState(1).uniform(-1, 1, (2, 64, 64, 3)).astype(
      np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  variables = models.from_torchvision_resnet(reference.state_dict(), "class")
  model = models.get(name, heads={"class": 20})
  abstract = jax.eval_shape(lambda: model.init(
      jax.random.key(0), images[:1], train=False))
  assert (jax.tree.structure(abstract) ==
          jax.tree.structure(jax.tree.map(np.asarray, variables)))
  got = model.apply(variables, images, train=False)["class"]
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_unknown_torchvision_names_are_refused():
  with pytest.raises(ValueError, match="layer"):
    models.from_torchvision_resnet({"features.0.weight": np.zeros(1)})
