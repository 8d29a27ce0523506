"""Retrain the packaged default classifiers exactly as they were made, and install them.

Each classifier is the result of successive ``saliency-jax train-classifier`` runs on the
synthetic benchmark (seed 0, 112²), each one after the first fine-tuning the previous one's
variables (``--init-from``, a fresh warm-up + cosine schedule):

* ``resnet_small``: 3000 steps at lr 2e-3 with flip/rotation augmentation on 12 000 training
  images, then 2000 at 1e-3 (97.0 % on the 600 test images; without augmentation it fits the
  training set and reaches only 58 %).
* ``vgg_small``: 2000 steps at lr 2e-3 without augmentation (96.2 %), then 1000 at 5e-4 with it
  on 24 000 images (98.0 %).

Every phase is resumable (run the script again after an interruption). The final variables and
``metrics.json`` (test accuracy, object reliance, history) are copied to
``saliency_jax/assets/classifiers/<model>/``.

    python benchmarks/train_default_classifiers.py resnet_small   # ~15 min on 2 idle cores
    python benchmarks/train_default_classifiers.py vgg_small      # ~45 min (~1.1 steps/s)
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

from saliency_jax.app import classifiers  # noqa: E402
from saliency_jax.app.train_classifier import ClassifierTrainConfig, train_classifier  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]

RECIPES = {
    "resnet_small": (dict(num_steps=3000, learning_rate=2e-3, augment=True, num_train=12000),
                     dict(num_steps=2000, learning_rate=1e-3, augment=True, num_train=12000)),
    "vgg_small": (dict(num_steps=2000, learning_rate=2e-3, augment=False, num_train=12000),
                  dict(num_steps=1000, learning_rate=5e-4, augment=True, num_train=24000)),
}


def train(model: str, run_root: pathlib.Path) -> dict:
    previous = None
    for phase, settings in enumerate(RECIPES[model]):
        run = run_root / (f"train-{model}" if phase == 0 else f"train-{model}-ft{phase}")
        init = None if previous is None else str(previous / "variables")
        _, metrics = train_classifier(
            ClassifierTrainConfig(model=model, init_from=init, **settings), run)
        print(f"{model} phase {phase}: test accuracy {metrics['test_accuracy']:.4f}", flush=True)
        previous = run
    dst = classifiers.packaged_classifier_dir(model)
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    shutil.copytree(previous / "variables", dst / "variables")
    shutil.copy(previous / "metrics.json", dst / "metrics.json")
    print(f"{model}: test accuracy {metrics['test_accuracy']:.4f}; installed at {dst}")
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", choices=sorted(RECIPES))
    parser.add_argument("--run-root", type=pathlib.Path, default=REPO / "runs")
    args = parser.parse_args(argv)
    for model in args.models:
        train(model, args.run_root)


if __name__ == "__main__":
    main()
