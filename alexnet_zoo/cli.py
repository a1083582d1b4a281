"""The ``alexnet-zoo`` command line. It parses arguments and calls the library, nothing more;
``main(argv)`` takes an argument list so tests call it directly."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from alexnet_zoo.config import OWT, PAPER
from alexnet_zoo.errors import WeightsError
from alexnet_zoo.summary import format_table, summarize

__all__ = ["main"]

_ARCHS = {"alexnet": PAPER, "alexnet_owt": OWT}


def _summary(args: argparse.Namespace) -> int:
    config = _ARCHS[args.arch].replace(num_classes=args.num_classes)
    table = format_table(summarize(config, args.input))
    side = args.input or config.input_size
    print(f"{args.arch} at {side}x{side}\n{table}")
    return 0


def _load(args: argparse.Namespace):
    """--pretrained: a weight name or path; 'default' = the arch's default weights; 'none' = random."""
    from alexnet_zoo.factory import model_for_weights

    return model_for_weights(args.pretrained, arch=args.arch)


def _weights_list(args: argparse.Namespace) -> int:
    from alexnet_zoo.pretrained import is_cached
    from alexnet_zoo.weights import get_weight_spec, list_pretrained

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
    from alexnet_zoo.pretrained import cached_spec
    from alexnet_zoo.weights import get_weight_spec

    for name in args.names:
        checkpoint = cached_spec(get_weight_spec(name), force=args.force)
        print(f"{name}: {checkpoint.meta.get('weights', {}).get('name', name)} ready "
              f"({len(checkpoint.state_dict)} tensors)")
    return 0


def _weights_convert(args: argparse.Namespace) -> int:
    from alexnet_zoo.factory import create_model
    from alexnet_zoo.pretrained import save_pretrained
    from alexnet_zoo.transforms import DEFAULT_PREPROCESSING

    model = create_model(args.arch, pretrained=args.source)
    out = save_pretrained(model, args.out, preprocessing=DEFAULT_PREPROCESSING[args.arch],
                          meta={"converted_from": str(args.source)})
    print(f"{args.source} -> {out}/model.safetensors + config.json ({args.arch})")
    return 0


def _weights_publish(args: argparse.Namespace) -> int:
    from alexnet_zoo.publish import folder_card, publish

    if args.dry_run:
        print(folder_card(args.directory, args.repo, spec=args.spec), end="")
        return 0
    url = publish(args.directory, args.repo, spec=args.spec, revision=args.revision, private=args.private,
                  commit_message=args.commit_message)
    print(f"{args.directory} -> hf-hub:{args.repo.removeprefix('hf-hub:')}: {url}")
    return 0


def _classify(args: argparse.Namespace) -> int:
    from alexnet_zoo.classify import classify_files

    model = _load(args)
    results = list(classify_files(model, args.images, model.preprocessing.transforms(), top=args.top,
                                  batch_size=args.batch_size, crops=args.crops))
    if args.json:
        print(json.dumps([{"path": r.path, "classes": r.classes, "error": r.error} for r in results], indent=2))
    else:
        for r in results:
            if r.error:
                print(f"{r.path}: error: {r.error}")
                continue
            print(r.path)
            for c in r.classes:
                label = f"{c.get('wnid', '')} {c.get('name', c['index'])}".strip()
                print(f"  {c['probability']:7.2%}  {c['index']:>4}  {label}")
    return 1 if any(r.error for r in results) else 0


def _filters(args: argparse.Namespace) -> int:
    from alexnet_zoo.visualize import conv1_filter_grid

    model = _load(args)
    image = conv1_filter_grid(model, channel_order=model.preprocessing.channel_order)
    image.save(args.out)
    print(f"conv1 kernels ({model.conv1.weight.shape[0]}) -> {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alexnet-zoo", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    summary = commands.add_parser("summary", help="layer table: output shapes, parameters, multiply-adds")
    summary.add_argument("--arch", choices=sorted(_ARCHS), default="alexnet")
    summary.add_argument("--input", type=int, default=None, help="square input side (default: the arch's own)")
    summary.add_argument("--num-classes", type=int, default=1000)
    summary.set_defaults(run=_summary)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--arch", choices=sorted(_ARCHS), default="alexnet")
        p.add_argument("--pretrained", default="default",
                       help="weight name (see `weights list`), hf-hub:org/repo, a local folder or file, "
                            "'default' (the arch's default weights) or 'none' (random)")

    weights = commands.add_parser("weights", help="list, download, convert and publish pretrained weights")
    wsub = weights.add_subparsers(dest="weights_command", required=True)
    wlist = wsub.add_parser("list", help="the weight specs, their accuracy, size, licence and cache state")
    wlist.add_argument("--json", action="store_true")
    wlist.set_defaults(run=_weights_list)
    wdown = wsub.add_parser("download", help="download, verify and convert weights into the cache")
    wdown.add_argument("names", nargs="+")
    wdown.add_argument("--force", action="store_true", help="redo the conversion even if cached")
    wdown.set_defaults(run=_weights_download)
    wconv = wsub.add_parser("convert", help="convert an upstream .onnx / .caffemodel / .pth to our format")
    wconv.add_argument("source", type=Path)
    wconv.add_argument("--arch", choices=sorted(_ARCHS), required=True)
    wconv.add_argument("--out", type=Path, required=True)
    wconv.set_defaults(run=_weights_convert)
    wpub = wsub.add_parser("publish", help="upload a folder in our format to the Hub with a generated model card")
    wpub.add_argument("directory", type=Path, help="a folder with model.safetensors + config.json")
    wpub.add_argument("--repo", required=True, help="the Hub model repo, ORG/NAME (created if missing)")
    wpub.add_argument("--revision", default=None, help="branch to commit to (default: main; created if missing)")
    wpub.add_argument("--private", action="store_true", help="create the repo private (an existing repo is kept as is)")
    wpub.add_argument("--spec", default=None, help="weight spec whose card to upload (default: the one config.json "
                                                   "names, else a card from config.json)")
    wpub.add_argument("--commit-message", default=None)
    wpub.add_argument("--dry-run", action="store_true", help="check the folder and print the card; upload nothing")
    wpub.set_defaults(run=_weights_publish)

    classify = commands.add_parser("classify", help="top-k ImageNet classes of image files")
    classify.add_argument("images", nargs="+", type=Path)
    model_args(classify)
    classify.add_argument("--top", type=int, default=5)
    classify.add_argument("--batch-size", type=int, default=16)
    classify.add_argument("--crops", type=int, choices=(1, 10), default=1,
                          help="1: the centre crop; 10: the paper's test (corners, centre and their mirrors, "
                               "softmax averaged)")
    classify.add_argument("--json", action="store_true")
    classify.set_defaults(run=_classify)

    filters = commands.add_parser("filters", help="draw the conv1 kernels as the paper's Figure 3")
    model_args(filters)
    filters.add_argument("--out", type=Path, default=Path("conv1.png"))
    filters.set_defaults(run=_filters)

    from alexnet_zoo.search import add_commands  # extract, index build|query|dedupe

    add_commands(commands, _ARCHS)

    # `train` has its own parser (alexnet_zoo.train.recipe); main() forwards its arguments untouched
    commands.add_parser("train", add_help=False,
                        help="train with the paper's recipe (`alexnet-zoo train --help` lists the options)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        from alexnet_zoo.train.recipe import main as train

        try:
            train(argv[1:])
        except (ValueError, FileNotFoundError, FileExistsError, ImportError) as err:  # ImportError: --tensorboard
            print(f"alexnet-zoo train: error: {err}", file=sys.stderr)
            return 2
        return 0
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, KeyError, WeightsError) as err:
        print(f"alexnet-zoo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
