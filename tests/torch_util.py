"""torchvision for the tests that compare against it; they skip cleanly without it.

The ``[bench]`` extra installs torch and torchvision together, but an
environment can hold torch alone (``pip install torch`` for the original
code's side by side): the torch-only tests run there, the torchvision ones skip.
"""

import pytest


def import_torchvision_or_none():
  """torchvision as benchmarks/torch_sla.py imports it, or None where it does not import."""
  from benchmarks import torch_sla  # pylint: disable=g-import-not-at-top
  try:
    return torch_sla.import_torchvision()
  except Exception:  # pylint: disable=broad-except
    return None  # absent, or its compiled ops refuse this torch


def import_torchvision_or_skip():
  torchvision = import_torchvision_or_none()
  if torchvision is None:
    pytest.skip("needs torchvision (pip install -e .[bench])",
                allow_module_level=True)
  return torchvision
