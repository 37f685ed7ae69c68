"""JPEG decoders on one core: Pillow (full and draft), simplejpeg, OpenCV, for the any-size host path.

    pip install simplejpeg opencv-python-headless   # optional contenders
    python -m benchmarks.decoders --rounds 5 --json

Decodes the same synthetic photos (smooth random images of ``--size``
height x width, JPEG quality 90, 4:2:0 as cameras and ImageNet store them) with
each decoder in turn, round-robin for ``--rounds`` rounds on one thread, and
reports the median images/s per decoder for a full decode and for the whole
training crop (decode + 224 px random resized crop; Pillow through
:func:`sla_jax.image_ops.train_crop`, the others decode fully and crop-resize
with their own resizer). Records the load before the run and refuses a busy
machine with ``--require_quiet``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from PIL import Image

from sla_jax import bench, image_ops


def _crop_then_resize(image: np.ndarray, rng, size: int, resize) -> np.ndarray:
  top, left, h, w = image_ops.random_resized_crop_box(rng, *image.shape[:2])
  return resize(image[top:top + h, left:left + w], size)


def contenders() -> dict[str, dict]:
  """Decoder name -> {"decode": bytes -> array, "crop": (bytes, rng) -> 224 crop}."""
  out = {"pillow": {
      "decode": image_ops.decode,
      "crop": lambda data, rng: image_ops.train_crop(data, rng, 224,
                                                     flip=False)}}
  try:
    import simplejpeg  # pylint: disable=g-import-not-at-top
    pil_resize = lambda a, s: np.asarray(Image.fromarray(a).resize(
        (s, s), Image.BILINEAR))
    out["simplejpeg"] = {
        "decode": lambda data: simplejpeg.decode_jpeg(data, colorspace="RGB"),
        "crop": lambda data, rng: _crop_then_resize(
            simplejpeg.decode_jpeg(data, colorspace="RGB"), rng, 224,
            pil_resize)}
  except ImportError:
    pass
  try:
    import cv2  # pylint: disable=g-import-not-at-top
    cv2.setNumThreads(1)
    decode = lambda data: cv2.cvtColor(cv2.imdecode(
        np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    out["opencv"] = {
        "decode": decode,
        "crop": lambda data, rng: _crop_then_resize(
            decode(data), rng, 224,
            lambda a, s: cv2.resize(a, (s, s), interpolation=cv2.INTER_AREA))}
  except ImportError:
    pass
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="375,500", help="height,width")
  parser.add_argument("--images", type=int, default=32)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--require_quiet", action="store_true")
  args = parser.parse_args()
  load = bench.machine_load()
  if args.require_quiet and load["busy"]:
    parser.exit(2, f"decoders: error: the machine is busy ({load}).\n")
  height, width = (int(v) for v in args.size.split(","))
  data = bench.synthetic_photos(args.images, height, width)
  calls = contenders()
  times = {(name, what): [] for name in calls for what in ("decode", "crop")}
  for _ in range(args.rounds):
    for name, fns in calls.items():
      rng = np.random.default_rng(0)
      start = time.perf_counter()
      for d in data:
        fns["decode"](d)
      times[name, "decode"].append(time.perf_counter() - start)
      start = time.perf_counter()
      for d in data:
        fns["crop"](d, rng)
      times[name, "crop"].append(time.perf_counter() - start)
  rows = [{"decoder": name, "what": what, "size": [height, width],
           "images_per_s": args.images / float(np.median(t)),
           "rounds": args.rounds, "machine_load_before": load}
          for (name, what), t in times.items()]
  if args.json:
    for row in rows:
      print(json.dumps(row))
  else:
    for row in rows:
      print(f"{row['decoder']:<12}{row['what']:<8}{row['images_per_s']:>9.1f} "
            f"images/s (one core, {width}x{height} JPEG)")
    print(f"load before: {load['load_1m']:.2f}"
          + (" BUSY: not a result" if load["busy"] else ""))


if __name__ == "__main__":
  main()
