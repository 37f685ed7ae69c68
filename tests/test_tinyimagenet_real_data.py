"""Real 100-class data: ResNet-18 and a CIFAR ResNet on the shared tinyimagenet100-32 beat chance (1 %) clearly.

Skipped when ../shared/data/tinyimagenet100-32.tar.gz is absent.
"""

import pytest

from conftest import REPO, SHARED, extract_shared
from sla_jax import train
from tests.test_configs import _load

pytestmark = pytest.mark.slow
TINYIMAGENET = SHARED / "data" / "tinyimagenet100-32.tar.gz"


@pytest.fixture(scope="module")
def tinyimagenet_folder(tmp_path_factory):
  return extract_shared(TINYIMAGENET, tmp_path_factory, "tinyimagenet100-32")


@pytest.mark.parametrize("model,arg", [("resnet18", "model=resnet18"),
                                       ("cifar_resnet8", "depth=8")])
def test_short_run_on_tinyimagenet100_beats_chance(tinyimagenet_folder,
                                                   tmp_path, model, arg):
  config = _load(REPO / "configs" / "tinyimagenet100_32.py").get_config(
      f"data={tinyimagenet_folder},objective=baseline,steps=300,"
      f"batch_size=64,{arg}")
  config.val_size = 1000
  config.eval_every = config.checkpoint_every = 300
  config.log_every = 100
  config.eval_batch_size = 1000
  config.num_devices = 1
  results = train.train_and_evaluate(config, tmp_path)
  # 100 classes: chance is 1 % (std 0.14 points on the 5 000 test images); the
  # bar is 2.5x chance. ResNet-18 reached 4.08 % here and 3.52 % through the
  # sla-train CLI (same config; the tests' 8 simulated devices split XLA's
  # CPU work differently, and float rounding then grows over 300 steps), so a
  # 4x bar would be a coin toss.
  assert results["test"]["acc"] > 0.025, results["test"]
