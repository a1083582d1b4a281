"""The alexnet-zoo command line: layer tables, pretrained weights, classification, the conv1
filters, ILSVRC-2012 evaluation, feature extraction, image retrieval and training, one subcommand each.

It parses and checks arguments and calls the library, nothing more; ``main(argv)`` takes an
argument list so tests call it directly. Every number is checked where it is parsed, a device
before any work starts. An expected failure (a file that is missing, unreadable, unwritable or not
what was expected; a full disk; input our validation refuses) is one line on stderr naming the
file and what was expected, exit status 2; a bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from alexnet_zoo.cli.failures import EXIT_PARTIAL, CommandError, report_errors
from alexnet_zoo.cli.options import bounded_int, describe, device_arg
from alexnet_zoo.eval.precision_names import PRECISION_HELP, PRECISIONS
from alexnet_zoo.models.config import ARCHS
from alexnet_zoo.models.summary import format_table, summarize
from alexnet_zoo.weights.config_file import CONFIG_FILE, WEIGHTS_FILE

__all__ = ["build_parser", "main"]

_EPILOG = ("exit status: 0 done; 1 done, but some input files were unreadable (each listed on stderr); "
           "2 an error stopped the command (one line on stderr naming the file and what was expected).")
_UPSTREAM = (".onnx", ".caffemodel", ".pth", ".pt")
_FOLDER = f"{WEIGHTS_FILE} + {CONFIG_FILE}"  # what a folder in our format holds
_CONVERT_FORMS = f"an upstream .onnx, .caffemodel or .pth / .pt file, a .safetensors file, or a folder with {_FOLDER}"


def _crops(text: str) -> int:
    if text.strip() not in ("1", "10"):
        raise argparse.ArgumentTypeError(f"expected 1 (the centre crop) or 10 (the paper's ten crops), got {text!r}")
    return int(text)


def _picture_out(text: str) -> Path:
    """--out of a picture: a name whose suffix says the format (Pillow's own error names no file)."""
    from PIL import Image

    path = Path(text)
    if path.suffix.lower() not in Image.registered_extensions():
        raise argparse.ArgumentTypeError(f"{path}: expected a picture file name ending in .png, .jpg, .webp, ... "
                                         f"(the suffix chooses the format)")
    return path


def _convert_source(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{path}: no such file or folder; expected {_CONVERT_FORMS}")
    if path.is_dir() and not (path / WEIGHTS_FILE).is_file():
        raise argparse.ArgumentTypeError(f"{path}: a folder without {WEIGHTS_FILE}; expected {_CONVERT_FORMS}")
    if path.is_file() and path.suffix.lower() not in (*_UPSTREAM, ".safetensors"):
        raise argparse.ArgumentTypeError(f"{path}: not a weight file this converts ({path.suffix or 'no suffix'}); "
                                         f"expected {_CONVERT_FORMS}")
    return path


def _summary(args: argparse.Namespace) -> int:
    config = ARCHS[args.arch].replace(num_classes=args.num_classes)
    table = format_table(summarize(config, args.input))
    side = args.input or config.input_size
    print(f"{args.arch} at {side}x{side}\n{table}")
    return 0


def _load(args: argparse.Namespace):
    """--pretrained: a weight name or path; 'default' = the arch's default weights; 'none' = random."""
    from alexnet_zoo.factory import model_for_weights

    return model_for_weights(args.pretrained, arch=args.arch)


def _weights_list(args: argparse.Namespace) -> int:
    from alexnet_zoo.weights.specs import get_weight_spec, list_pretrained
    from alexnet_zoo.weights.store import is_cached

    rows = []
    for name in list_pretrained():
        spec = get_weight_spec(name)
        m = spec.metrics[0]
        size = spec.sources[0].size
        rows.append({"name": name, "params": spec.num_params, "top1": m.top1, "top5": m.top5, "protocol": m.protocol,
                     "size_mb": round(size / 1e6, 1) if size else None, "license": spec.license,
                     "cached": is_cached(spec)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<22} {'params':>11} {'top-1':>7} {'top-5':>7} {'size':>9} {'cached':>6}  protocol / licence")
    for r in rows:
        size = f"{r['size_mb']} MB" if r["size_mb"] else "?"
        print(f"{r['name']:<22} {r['params']:>11,} {r['top1']:>7.2f} {r['top5']:>7.2f} {size:>9} "
              f"{'yes' if r['cached'] else 'no':>6}  {r['protocol']} / {r['license']}")
    return 0


def _weights_download(args: argparse.Namespace) -> int:
    from alexnet_zoo.weights.specs import get_weight_spec
    from alexnet_zoo.weights.store import cached_spec

    for name in args.names:
        try:
            spec = get_weight_spec(name)
        except KeyError as err:  # the registry's "no such name" (only this call's KeyError is meant)
            raise CommandError(err.args[0] if err.args else f"no pretrained weights named {name!r}") from None
        checkpoint = cached_spec(spec, force=args.force)
        print(f"{name}: {checkpoint.meta.get('weights', {}).get('name', name)} ready "
              f"({len(checkpoint.state_dict)} tensors)")
    return 0


def _weights_convert(args: argparse.Namespace) -> int:
    from safetensors import SafetensorError

    from alexnet_zoo.data.transforms import DEFAULT_PREPROCESSING
    from alexnet_zoo.factory import create_model
    from alexnet_zoo.weights.store import save_pretrained

    model = create_model(args.arch, pretrained=args.source)
    try:
        out = save_pretrained(model, args.out, preprocessing=DEFAULT_PREPROCESSING[args.arch],
                              meta={"converted_from": str(args.source)})
    except SafetensorError as err:  # its message names no file: a full disk, a quota, a vanished folder
        raise CommandError(f"{args.out / WEIGHTS_FILE}: could not be written ({err}); check free space "
                           f"and permissions there") from err
    print(f"{args.source} -> {out}/{_FOLDER} ({args.arch})")
    return 0


def _weights_publish(args: argparse.Namespace) -> int:
    from alexnet_zoo.weights.publish import folder_card, publish

    if args.dry_run:
        print(folder_card(args.directory, args.repo, spec=args.spec), end="")
        return 0
    url = publish(args.directory, args.repo, spec=args.spec, revision=args.revision, private=args.private,
                  commit_message=args.commit_message)
    print(f"{args.directory} -> hf-hub:{args.repo.removeprefix('hf-hub:')}: {url}")
    return 0


def _classify(args: argparse.Namespace) -> int:
    from alexnet_zoo.devices import resolve_device
    from alexnet_zoo.eval.classify import classify_files

    device = resolve_device(args.device)
    model = _load(args)
    classes = model.config.num_classes
    if args.top > classes:
        raise CommandError(f"--top {args.top}: the model has {classes} classes; expected a number from 1 to {classes}")
    results = list(classify_files(model, args.images, model.preprocessing.transforms(), top=args.top,
                                  batch_size=args.batch_size, crops=args.crops, device=device,
                                  precision=args.precision))
    if args.json:
        print(json.dumps([{"path": r.path, "classes": r.classes, "error": r.error} for r in results], indent=2))
    for r in results:
        if r.error:
            print(f"alexnet-zoo classify: error: {r.error}", file=sys.stderr)
        elif not args.json:
            print(r.path)
            for c in r.classes:
                label = f"{c.get('wnid', '')} {c.get('name', '')}".strip()
                print(f"  {c['probability']:7.2%}  {c['index']:>4}  {label}".rstrip())
    return EXIT_PARTIAL if any(r.error for r in results) else 0


def _filters(args: argparse.Namespace) -> int:
    from alexnet_zoo.models.visualize import conv1_filter_grid

    model = _load(args)
    image = conv1_filter_grid(model, channel_order=model.preprocessing.channel_order)
    image.save(args.out)
    print(f"conv1 kernels ({model.config.widths[0]}) -> {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from alexnet_zoo.benchmarks.imagenet import run

    run(args)
    return 0


def _sentences(parser: argparse.ArgumentParser, helps: dict[str, str] | None = None) -> None:
    """Give every subcommand without a description its one-line help as a sentence, so each
    ``--help`` says what the command does in full."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                text = (helps.get(name) or "").strip()
                if sub.description is None and text:
                    sub.description = text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")
                if sub.epilog is None:
                    sub.epilog = _EPILOG
                _sentences(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alexnet-zoo", description=describe(__doc__), epilog=_EPILOG)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    summary = commands.add_parser("summary", help="layer table: output shapes, parameters, multiply-adds")
    summary.add_argument("--arch", choices=sorted(ARCHS), default="alexnet")
    summary.add_argument("--input", type=bounded_int(1), default=None,
                         help="square input side in pixels (default: the arch's own)")
    summary.add_argument("--num-classes", type=bounded_int(0), default=1000, help="classes of fc8 (0: no fc8)")
    summary.set_defaults(run=_summary)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--arch", choices=sorted(ARCHS), default="alexnet")
        p.add_argument("--pretrained", default="default",
                       help="weight name (see `weights list`), hf-hub:org/repo, a local folder or file, "
                            "'default' (the arch's default weights) or 'none' (random)")

    weights = commands.add_parser("weights", help="list, download, convert and publish pretrained weights")
    wsub = weights.add_subparsers(dest="weights_command", required=True, metavar="COMMAND")
    wlist = wsub.add_parser("list", help="the weight specs, their accuracy, size, licence and cache state")
    wlist.add_argument("--json", action="store_true")
    wlist.set_defaults(run=_weights_list)
    wdown = wsub.add_parser("download", help="download, verify and convert weights into the cache")
    wdown.add_argument("names", nargs="+")
    wdown.add_argument("--force", action="store_true", help="redo the conversion even if cached")
    wdown.set_defaults(run=_weights_download)
    wconv = wsub.add_parser("convert", help="convert an upstream .onnx / .caffemodel / .pth to our format")
    wconv.add_argument("source", type=_convert_source, help=_CONVERT_FORMS)
    wconv.add_argument("--arch", choices=sorted(ARCHS), required=True)
    wconv.add_argument("--out", type=Path, required=True, help=f"the folder to write {_FOLDER} to")
    wconv.set_defaults(run=_weights_convert)
    wpub = wsub.add_parser("publish", help="upload a folder in our format to the Hub with a generated model card")
    wpub.add_argument("directory", type=Path, help=f"a folder with {_FOLDER}")
    wpub.add_argument("--repo", required=True, help="the Hub model repo, ORG/NAME (created if missing)")
    wpub.add_argument("--revision", default=None, help="branch to commit to (default: main; created if missing)")
    wpub.add_argument("--private", action="store_true", help="create the repo private (an existing repo is kept as is)")
    wpub.add_argument("--spec", default=None, help="weight spec whose card to upload (default: the one config.json "
                                                   "names, else a card from config.json)")
    wpub.add_argument("--commit-message", default=None)
    wpub.add_argument("--dry-run", action="store_true", help="check the folder and print the card; upload nothing")
    wpub.set_defaults(run=_weights_publish)

    from alexnet_zoo.devices import DEVICE_HELP

    classify = commands.add_parser("classify", help="top-k classes of image files, named as the weights name them")
    classify.add_argument("images", nargs="+", type=Path)
    model_args(classify)
    classify.add_argument("--top", type=bounded_int(1), default=5, help="classes per image (1 to the model's classes)")
    classify.add_argument("--batch-size", type=bounded_int(1), default=16, help="images per forward pass")
    classify.add_argument("--crops", type=_crops, default=1,
                          help="1: the centre crop; 10: the paper's test (corners, centre and their mirrors, "
                               "softmax averaged)")
    classify.add_argument("--device", type=device_arg, default=None, help=f"{DEVICE_HELP} (default: auto)")
    classify.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    classify.add_argument("--json", action="store_true")
    classify.set_defaults(run=_classify)

    filters = commands.add_parser("filters", help="draw the conv1 kernels as the paper's Figure 3")
    model_args(filters)
    filters.add_argument("--out", type=_picture_out, default=Path("conv1.png"),
                         help="the picture to write; its suffix chooses the format (default: conv1.png)")
    filters.set_defaults(run=_filters)

    from alexnet_zoo.benchmarks.imagenet import __doc__ as evaluate_doc
    from alexnet_zoo.benchmarks.imagenet import add_arguments

    evaluate = commands.add_parser("evaluate", help="top-1 / top-5 accuracy on ILSVRC-2012 (or any labelled folder)",
                                   description=describe(evaluate_doc))
    add_arguments(evaluate)
    evaluate.set_defaults(run=_evaluate)

    from alexnet_zoo.cli import deploy, search, serve  # extract, index, serve (FastAPI loads when it runs), export
    for registrar in (search, serve, deploy):
        registrar.add_commands(commands)

    # `train` has its own parser (alexnet_zoo.train.args); main() forwards its arguments untouched
    commands.add_parser("train", add_help=False,
                        help="train with the paper's recipe (`alexnet-zoo train --help` lists the options)")
    _sentences(parser)
    return parser


def _writes(args: argparse.Namespace) -> list[str]:
    """The files and folders a parsed command writes to, for messages about failed writes."""
    return [str(v) for k in ("out", "json", "predictions", "grid") if isinstance(v := getattr(args, k, None), Path)]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        from alexnet_zoo.train.args import parse_args
        from alexnet_zoo.train.run import main as train

        options = parse_args(argv[1:], prog="alexnet-zoo train")  # its errors name the command typed

        def run_training() -> int:
            try:
                train(options)
            except ImportError as err:  # --tensorboard without the tensorboard package
                raise CommandError(str(err)) from err
            return 0

        return report_errors("alexnet-zoo train", run_training)
    args = build_parser().parse_args(argv)
    prog = " ".join(["alexnet-zoo", args.command, *(v for k in ("weights_command", "index_command")
                                                      if (v := getattr(args, k, None)))])
    return report_errors(prog, lambda: args.run(args), _writes(args))


if __name__ == "__main__":
    sys.exit(main())
