"""The training recipe's command line: every option with its range checked where it is parsed
(an argparse ``error:`` line, never a traceback after the data is loaded), the combinations
checked after, and the same rules for a Namespace built in Python (:func:`check_args`).

:class:`Bounded` is the recipe's own number type (integers and floats, open or closed ends);
``alexnet_zoo.cli.options.bounded_int`` is the command line's, a layer above, which train must
not import. ``RECIPE_SOURCES`` says where each default comes from (written into run_config.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alexnet_zoo.data.transforms import BVLC_PREPROCESSING, TORCHVISION_PREPROCESSING
from alexnet_zoo.models.config import ARCHS
from alexnet_zoo.train.augment import PAPER_PREPROCESSING
from alexnet_zoo.train.placement import AMP_DTYPES, check_device

__all__ = ["COUNT", "FRACTION", "NON_NEGATIVE", "POSITIVE", "POSITIVE_INT", "PREPROCESSINGS", "RECIPE_SOURCES", "SEED",
           "Bounded", "check_args", "get_args_parser", "model_overrides", "parse_args"]

PREPROCESSINGS = {"paper": PAPER_PREPROCESSING, "bvlc": BVLC_PREPROCESSING, "torchvision": TORCHVISION_PREPROCESSING}

# Where each default comes from; written into run_config.json beside the values used.
RECIPE_SOURCES = {
    "batch_size": "paper sec. 5: batches of 128 examples (Caffe's train_val.prototxt: 256)",
    "lr": "paper sec. 5: 0.01, the same for all layers (Caffe solver.prototxt: base_lr 0.01)",
    "momentum": "paper sec. 5: 0.9 (Caffe: 0.9)",
    "weight_decay": "paper sec. 5: 0.0005 (Caffe: 0.0005)",
    "optimizer": "paper sec. 5: v <- 0.9 v - 0.0005 eps w - eps dL/dw, w <- w + v (paper-sgd; 'sgd' = torch's form)",
    "param_groups": "paper: one rate and decay for every weight; caffe: biases lr_mult 2, decay_mult 0",
    "lr_schedule": "paper sec. 5: divided by 10 when the validation error stopped improving, three times "
                   "(plateau); Caffe solver.prototxt: step, gamma 0.1, stepsize 100,000 x 256 images = 20 epochs",
    "epochs": "paper sec. 5: roughly 90 cycles through the 1.2 M training images (Caffe: 450,000 x 256)",
    "init": "paper sec. 5: weights N(0, 0.01), biases 1 in conv2/4/5 and fc6/7, else 0 (caffe: fc6/7 std "
            "0.005, biases 0.1)",
    "dropout": "paper sec. 4.2: 0.5 on the outputs of fc6 and fc7",
    "preprocessing": "paper sec. 2: short side 256, central 256x256, mean pixel subtracted from raw RGB "
                     "(bvlc: squashed to 256x256, BGR)",
    "crop_size": "paper sec. 4.1: random 224x224 patches of the 256x256 images; 227 is what conv1's "
                 "arithmetic needs and Caffe's crop_size",
    "flip": "paper sec. 4.1: horizontal reflections of the patches",
    "pca_std": "paper sec. 4.1: alpha ~ N(0, 0.1) per image per use, PCA of ImageNet's RGB covariance "
               "(eigenvalues/vectors of fb.resnet.torch)",
    "val_protocol": "paper sec. 4.1: test error from the softmax averaged over ten 224 patches (corners, centre, "
                    "mirrors) = 'ten'; default 'center' (one crop, 10x cheaper) to follow training",
}


def _number_text(x: float | None) -> str:
    return "" if x is None else str(int(x)) if float(x).is_integer() else f"{x:g}"


class Bounded:
    """An argparse type for a number with a range: the parser's ``error:`` line names the option,
    the range and the value (``-b 0`` was a ZeroDivisionError, far from its cause). :meth:`check`
    holds the same rule for a Namespace built in Python."""

    def __init__(self, kind: type[int | float], low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> None:
        self.kind, self.low, self.high, self.low_open, self.high_open = kind, low, high, low_open, high_open
        self.__name__ = "integer" if kind is int else "number"  # argparse's fallback message uses it

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        low, high = _number_text(self.low), _number_text(self.high)
        if self.low is not None and self.high is not None:
            return f"{what} in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '<='} {high}"
        return what

    def check(self, value: Any) -> Any:
        """``value`` when it is in range; ValueError saying the range otherwise."""
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (self.kind is not int or float(value).is_integer())
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        if not ok:
            raise ValueError(f"must be {self.describe()}, got {value!r}")
        return value

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        try:
            return self.check(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None


POSITIVE_INT, COUNT = Bounded(int, 1), Bounded(int, 0)
POSITIVE, NON_NEGATIVE, FRACTION = Bounded(float, 0, low_open=True), Bounded(float, 0), Bounded(float, 0, 1)
SEED = Bounded(int, 0, 2**32 - 1)  # numpy's SeedSequence and every derived seed stay in range


def _device_option(text: str) -> str:
    """--device: ``auto`` or a device this machine has (checked now: an ``error:`` line, not a
    torch traceback after the data is loaded)."""
    try:
        check_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _towers_option(text: str) -> str:
    """--towers: two devices this machine has, comma-separated."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected two devices as DEV0,DEV1 (e.g. cuda:0,cuda:1), got {text!r}")
    try:
        for part in parts:
            if part == "auto":
                raise ValueError("each tower needs a named device, not 'auto'")
            check_device(part)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _model_config_option(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. hidden=1024), got {text!r}")
    return text


def _data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", type=Path, help="folder holding train/ and val/ (class folders, or val/ + val.txt)")
    g.add_argument("--train-dir", type=Path, help="training folder (default: DATA/train)")
    g.add_argument("--val-dir", type=Path, help="validation folder (default: DATA/val, when it exists)")
    g.add_argument("--synthetic", type=COUNT, default=0, metavar="N", help="N synthetic pictures instead of --data")
    g.add_argument("--synthetic-classes", type=POSITIVE_INT, default=10)
    g.add_argument("--preprocessing", choices=sorted(PREPROCESSINGS), default="paper",
                   help="resize mode, channel order, pixel scale and mean (paper: short side, RGB 0-255)")
    g.add_argument("--image-size", type=POSITIVE_INT, default=256, help="side of the square picture crops are cut from")
    g.add_argument("--crop-size", type=POSITIVE_INT, default=227,
                   help="227 (Caffe) or 224 (the paper's text); at most --image-size")
    g.add_argument("--no-random-crop", dest="random_crop", action="store_false", help="train on centre crops")
    g.add_argument("--no-flip", dest="flip", action="store_false", help="no horizontal reflections")
    g.add_argument("--pca-std", type=NON_NEGATIVE, default=0.1, help="std of the PCA colour shifts' alpha (0: off)")
    g.add_argument("--workers", type=COUNT, default=min(8, os.cpu_count() or 1),
                   help="loader processes per GPU (0: load in the training process)")
    g.add_argument("--prefetch-factor", type=POSITIVE_INT, default=4, help="batches prefetched by each worker")
    g.add_argument("--decode", choices=("cpu", "device"), default="cpu",
                   help="decode JPEGs in the workers (cpu) or on the training device (nvJPEG on CUDA)")


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=sorted(ARCHS), default="alexnet")
    g.add_argument("--init", choices=("paper", "caffe", "torch"), default="paper")
    g.add_argument("--dropout", type=FRACTION, default=0.5, help="probability, in [0, 1]")
    g.add_argument("--num-classes", type=POSITIVE_INT, default=None,
                   help="default: the number of training classes (at least that many)")
    g.add_argument("--model-config", action="append", default=[], metavar="KEY=VALUE", type=_model_config_option,
                   help="any AlexNetConfig field, e.g. hidden=1024 or lrn=false (repeatable)")
    g.add_argument("--towers", default=None, metavar="DEV0,DEV1", type=_towers_option,
                   help="the paper's two-GPU model parallelism: tower 1 on DEV0, tower 2 on DEV1")


def _optimisation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=("paper-sgd", "sgd"), default="paper-sgd")
    g.add_argument("--lr", type=POSITIVE, default=0.01)
    g.add_argument("--momentum", type=Bounded(float, 0, 1, high_open=True), default=0.9, help="in [0, 1)")
    g.add_argument("--weight-decay", type=NON_NEGATIVE, default=5e-4)
    g.add_argument("--param-groups", choices=("paper", "caffe"), default="paper")
    g.add_argument("-b", "--batch-size", type=POSITIVE_INT, default=128, help="global batch, split over the processes")
    g.add_argument("--eval-batch-size", type=POSITIVE_INT, default=None, help="per process (default: the training one)")
    g.add_argument("--label-smoothing", type=Bounded(float, 0, 1, high_open=True), default=0.0, help="in [0, 1)")
    g.add_argument("--lr-schedule", choices=("plateau", "step", "cosine", "constant"), default="plateau")
    g.add_argument("--lr-gamma", type=Bounded(float, 0, 1, low_open=True), default=0.1,
                   help="step schedule's factor, in (0, 1]")
    g.add_argument("--lr-step-epochs", type=POSITIVE, default=20.0, help="step schedule's period")
    g.add_argument("--plateau-patience", type=POSITIVE_INT, default=5, help="epochs without improvement before /10")
    g.add_argument("--plateau-threshold", type=NON_NEGATIVE, default=1e-3, help="improvement of the error that counts")
    g.add_argument("--plateau-max-drops", type=COUNT, default=3)
    g.add_argument("--no-plateau-stop", dest="plateau_stop", action="store_false",
                   help="keep training after the last division instead of stopping at the next plateau")
    g.add_argument("--warmup-epochs", type=NON_NEGATIVE, default=0.0)
    g.add_argument("--min-lr", type=NON_NEGATIVE, default=0.0, help="cosine schedule's final rate (at most --lr)")


def _run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--epochs", type=POSITIVE_INT, default=90)
    g.add_argument("--max-steps", type=POSITIVE_INT, default=None,
                   help="stop (with a checkpoint) after this global step")
    g.add_argument("--device", default="auto", type=_device_option,
                   help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps")
    g.add_argument("--amp", choices=sorted(AMP_DTYPES), default="none", help="autocast dtype")
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--compile", action="store_true", help="torch.compile the training model")
    g.add_argument("--tf32", action="store_true", help="TF32 matmuls on CUDA (fp32 runs)")
    g.add_argument("--seed", type=SEED, default=0)
    g.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower)")
    g.add_argument("--dist-backend", choices=("auto", "nccl", "gloo"), default="auto")


def _output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--output-dir", type=Path, default=Path("runs/alexnet"))
    g.add_argument("--resume", nargs="?", const="latest", default=None, metavar="PATH",
                   help="continue a run: alone, from the latest checkpoint in --output-dir (or from scratch "
                        "when it has none); or from a checkpoint folder / run folder")
    g.add_argument("--checkpoint-every", type=COUNT, default=0, metavar="STEPS",
                   help="also checkpoint every this many steps (one is always written at each epoch's end)")
    g.add_argument("--keep-checkpoints", type=COUNT, default=3, help="newest checkpoints kept (0: all)")
    g.add_argument("--log-every", type=POSITIVE_INT, default=20,
                   help="steps between metrics rows (Caffe's display: 20)")
    g.add_argument("--eval-every", type=POSITIVE_INT, default=1, help="epochs between validations")
    g.add_argument("--val-protocol", choices=("center", "ten"), default="center",
                   help="validate on the centre crop (fast), or on the paper's ten crops with averaged softmax "
                        "(alexnet_zoo.eval.protocols' code; 10x the compute)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument("--tensorboard", action="store_true", help="also log to OUTPUT_DIR/tensorboard")
    g.add_argument("--no-export", dest="export", action="store_false",
                   help="do not write the final model to OUTPUT_DIR/final")


def get_args_parser(add_help: bool = True, prog: str = "python -m alexnet_zoo.train") -> argparse.ArgumentParser:
    """The recipe's parser (torchvision's reference-script shape); ``prog`` names the command typed."""
    p = argparse.ArgumentParser(prog=prog, add_help=add_help,
                                description="Train AlexNet with the 2012 paper's recipe (defaults) or modern options.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for add in (_data_options, _model_options, _optimisation_options, _run_options, _output_options):
        add(p)
    return p


def _combination_problem(args: argparse.Namespace) -> str | None:
    """What is wrong between options that are each in range, or None."""
    if args.crop_size > args.image_size:
        return f"--crop-size {args.crop_size} is larger than the {args.image_size}-pixel pictures (--image-size)"
    if args.min_lr > args.lr:
        return f"--min-lr {args.min_lr:g} is above --lr {args.lr:g}"
    return None


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> None:
    """Every numeric option in its range and the combinations sound, for a Namespace that did
    not come through the parser (the parser's types already checked each value). ValueError."""
    parser = parser or get_args_parser(add_help=False)
    for action in parser._actions:  # the one place the options' types are declared
        value = getattr(args, action.dest, None)
        if value is None:
            continue
        try:
            if isinstance(action.type, Bounded):
                action.type.check(value)
            elif action.type in (_device_option, _towers_option):
                action.type(str(value))
        except (ValueError, argparse.ArgumentTypeError) as err:
            raise ValueError(f"{'/'.join(action.option_strings)}: {err}") from None
    problem = _combination_problem(args)
    if problem:
        raise ValueError(problem)


def parse_args(argv: Sequence[str] | None = None, prog: str = "python -m alexnet_zoo.train") -> argparse.Namespace:
    """The parsed options; a value out of range or a bad combination is argparse's ``error:``
    line (exit 2), named for the command the user typed (``prog``: ``alexnet-zoo train`` too)."""
    parser = get_args_parser(prog=prog)
    args = parser.parse_args(argv)
    problem = _combination_problem(args)
    if problem:
        parser.error(problem)
    return args


def model_overrides(items: Sequence[str]) -> dict[str, Any]:
    """--model-config's KEY=VALUE items as AlexNetConfig overrides (values read as JSON where they parse)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-config expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
