"""Command-line interface: the only module that parses arguments or calls sys.exit.

Every failure a user can cause (missing files, corrupt checkpoints, unreadable images, unknown names,
impossible values) is a ``convprop.errors.ConvpropError`` and ends in one line ``convprop: error: ...``
and exit code 2, with no traceback unless ``--debug`` is given. Any other exception is a bug in convprop:
it shows its traceback and exits with code 1 (STYLE rule 16).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import textwrap
import traceback
import types
import typing
from pathlib import Path

from . import __version__
from .errors import ConfigError, ConvpropError

EXAMPLES = {
    "train": """
        examples:
          convprop train                                  # LeNet on 5,000 real MNIST digits (offline)
          convprop train --dataset digits --epochs 3      # the small 8x8 digits, in seconds
          convprop train --dataset mnist --epochs 5       # full MNIST, downloaded once
          convprop train --optimizer sgd --lr 0.05 --out-dir runs/sgd""",
    "evaluate": """
        examples:
          convprop evaluate runs/20261121-101500
          convprop evaluate runs/20261121-101500/model.safetensors --dataset mnist
          convprop evaluate runs/20261121-101500 --robustness   # rotated, thick, thin, shifted, typeset""",
    "predict": """
        examples:
          convprop predict runs/20261121-101500 my_seven.png
          convprop predict model.safetensors a.png b.jpg --json""",
    "inspect": """
        examples:
          convprop inspect runs/20261121-101500 my_seven.png --out seven_maps.png""",
    "export": """
        examples:
          convprop export runs/20261121-101500 digits.onnx      # then: onnxruntime, or convprop predict digits.onnx
          convprop export model.safetensors model.onnx --opset 18""",
    "explain": """
        examples:
          convprop explain runs/20261121-101500 my_seven.png                # why the predicted class?
          convprop explain runs/20261121-101500 my_seven.png --target 1 --out why_not_one.png""",
    "gradcheck": """
        examples:
          convprop gradcheck            # every layer type, float64 central differences""",
    "serve": """
        examples:
          convprop serve                         # the latest run in ./runs, on http://127.0.0.1:8000
          convprop serve runs/20261121-101500 --port 8080""",
}


def _parser_for(name: str, sub: argparse._SubParsersAction, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog=textwrap.dedent(EXAMPLES.get(name, "")),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field: name, type, default, choices and help all come from the dataclass."""
    from .train import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text, choices = f.metadata.get("help", ""), f.metadata.get("choices")
        kind = hints[f.name]
        if kind is bool:  # off by default: --flag; on by default: --no-flag turns it off
            action = argparse.BooleanOptionalAction if f.default else "store_true"
            parser.add_argument(flag, action=action, default=f.default, help=help_text)
            continue
        if isinstance(kind, types.UnionType):  # `str | None`
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        default = "" if f.default is None else f" (default: {f.default})"
        parser.add_argument(
            flag,
            type=kind,
            default=f.default,
            choices=choices,
            help=help_text + default,
            metavar=(f.metadata.get("metavar") or f.name.upper()) if choices is None else None,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convprop",
        description="Convolutional networks from first principles: train, inspect and serve a digit recogniser.",
        epilog="Run 'convprop COMMAND --help' for each command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"convprop {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_config_options(_parser_for("train", sub, "train a convnet on handwritten digits"))

    p = _parser_for("evaluate", sub, "accuracy, per-class precision/recall and confusion matrix of a model")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT", help="a run directory or a .safetensors file")
    p.add_argument("--dataset", help="evaluate on this data set's test split (default: the one it was trained on)")
    p.add_argument("--data-dir", help="folder with the four IDX files (mnist, fashion-mnist)")
    p.add_argument(
        "--robustness",
        action="store_true",
        help="also measure accuracy on rotated, thickened, thinned, shifted and typeset digits; "
        "writes robustness.json next to the checkpoint",
    )

    p = _parser_for("predict", sub, "classify images (PNG/JPEG) of handwritten digits")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--top", type=int, default=3, help="how many classes to list (default: 3)")

    p = _parser_for("inspect", sub, "draw the feature maps of every conv layer for one image")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--out", help="PNG to write (default: <image name>_feature_maps.png next to the image)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    p = _parser_for("export", sub, "write a model as an ONNX file (for ONNX Runtime, phones, browsers)")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT", help="a run directory or a .safetensors file")
    p.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=int, help="ONNX opset to write (default: convprop.onnx.DEFAULT_OPSET)")
    p.add_argument("--force", action="store_true", help="overwrite OUT.onnx if it exists")
    p = _parser_for("explain", sub, "why that class: saliency, gradient x input, Grad-CAM, every conv layer's gradient")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--target", type=int, help="the class index to explain (default: the predicted class)")
    p.add_argument("--out", help="PNG to write (default: <image name>_explain.png next to the image)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    p = _parser_for("gradcheck", sub, "check every layer's backward pass against finite differences")
    p.add_argument("--seed", type=int, default=0)

    p = _parser_for("serve", sub, "draw a digit in the browser and watch the network think")
    p.add_argument("checkpoint", nargs="?", metavar="RUN_OR_CHECKPOINT", help="default: the latest run in ./runs")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .train import TrainConfig, fit

    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    # `mpiexec -n N convprop train ...` trains data-parallel (docs/distributed.md); a DistributedError is a
    # ConvpropError, so a missing mpi4py is the usual one-line error
    world = distributed.init()
    with world.guard():  # under MPI an error on one rank ends every rank, never a hang
        result = fit(config)
    return 130 if result.interrupted else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import data
    from .inference import Predictor
    from .train import evaluate

    predictor = Predictor(args.checkpoint)
    name = args.dataset or predictor.dataset
    if name not in data.DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(data.DATASETS)} with --dataset")
    seed = predictor.split_seed if name == predictor.dataset else 0  # the test split the model was trained beside
    dataset = data.load_dataset(name, data_dir=args.data_dir, seed=seed)
    if dataset.image_size != predictor.image_size:
        raise ConfigError(f"the model takes {predictor.image_size} images but {name} has {dataset.image_size}")
    result = evaluate(predictor.model, predictor.normalization(dataset.test_images), dataset.test_labels)
    precision, recall = result.per_class()
    print(f"{predictor.path}: {name} test split, {len(dataset.test_labels)} images")
    print(f"test accuracy: {100 * result.accuracy:.2f}%   (loss {result.loss:.4f})")
    print("\nclass  precision  recall")
    for c, p, r in zip(predictor.classes, precision, recall, strict=True):
        print(f"{c:>5}  {100 * p:8.2f}%  {100 * r:6.2f}%")
    print("\nconfusion matrix (rows: true, columns: predicted)")
    width = max(4, len(str(result.confusion.max())) + 1)
    print(" " * 6 + "".join(f"{c[: width - 1]:>{width}}" for c in predictor.classes))
    for c, row in zip(predictor.classes, result.confusion, strict=True):
        print(f"{c[:5]:>5} " + "".join(f"{v:>{width}}" for v in row))
    if args.robustness:
        from .robustness import REPORT_NAME, format_table, robustness_report, write_report

        rows = robustness_report(predictor, dataset.test_images, dataset.test_labels)
        print(
            f"\nrobustness (accuracy on changed test digits; change in points from the original)\n{format_table(rows)}"
        )
        path = write_report(predictor.path.parent / REPORT_NAME, rows, checkpoint=str(predictor.path), dataset=name)
        print(f"\nrobustness report written to {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference import Predictor

    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    predictor = Predictor(args.checkpoint)
    results = []
    for image in args.images:
        pred = predictor.predict(image)
        results.append(
            {
                "image": image,
                "prediction": pred.label,
                "top": [{"class": c, "probability": round(p, 6)} for c, p in pred.top(predictor.classes, args.top)],
            }
        )
    if args.json:
        print(json.dumps(results, indent=2))  # always a list, one entry per image
    else:
        for r in results:
            top = ", ".join(f"{t['class']}: {100 * t['probability']:.1f}%" for t in r["top"])
            print(f"{r['image']}: {r['prediction']}   ({top})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import numpy as np

    from . import plots
    from .inference import Predictor

    predictor = Predictor(args.checkpoint)
    out = Path(args.out) if args.out else Path(args.image).with_name(Path(args.image).stem + "_feature_maps.png")
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it or choose another --out")
    if not out.parent.is_dir():
        raise ConfigError(f"cannot write {out}: directory {out.parent} does not exist (choose another --out)")
    x = predictor.preprocess(args.image)  # (1, H, W), preprocessed once for both uses below
    label = predictor.classes[int(np.argmax(predictor.probabilities(x)[0]))]
    maps = predictor.feature_maps(x)  # every convolution, wherever it sits in the model, labelled by its path
    if not maps:
        raise ConvpropError(f"the model in {predictor.path} has no convolution, so there are no feature maps to draw")
    plots.plot_feature_maps(x[0], maps, out)
    print(f"{args.image}: predicted {label}; feature maps written to {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .inference import load_model_file, resolve_checkpoint
    from .onnx import DEFAULT_OPSET, export

    source = resolve_checkpoint(args.checkpoint)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    if not out.parent.is_dir():
        raise ConfigError(f"cannot write {out}: directory {out.parent} does not exist")
    model, meta = load_model_file(source)
    image_size = json.loads(meta.get("image_size", "[28, 28]"))
    kept: dict[str, str] = {k: meta[k] for k in ("classes", "image_size", "normalization", "dataset") if k in meta}
    export(model, out, (1, 1, *image_size), opset=args.opset, metadata=kept)
    print(
        f"{source} -> {out} (ONNX opset {args.opset or DEFAULT_OPSET}, input (N, 1, {image_size[0]}, {image_size[1]}))"
    )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain
    from .inference import Predictor
    from .plots_explain import plot_explanation

    predictor = Predictor(args.checkpoint)
    out = Path(args.out) if args.out else Path(args.image).with_name(Path(args.image).stem + "_explain.png")
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it or choose another --out")
    if not out.parent.is_dir():
        raise ConfigError(f"cannot write {out}: directory {out.parent} does not exist (choose another --out)")
    x = predictor.preprocess(args.image)  # (1, H, W) in [0, 1]: the gradients are with respect to this picture
    result = explain(predictor.model, x, args.target, normalization=predictor.normalization)
    plot_explanation(x, result, predictor.classes, out)
    predicted = predictor.classes[int(result.logits[0].argmax())]
    print(f"{args.image}: predicted {predicted}; explained class {predictor.classes[int(result.target[0])]}; "
          f"figure written to {out}")  # fmt: skip
    return 0


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from .layer_check import check_all_layers

    rows = check_all_layers(seed=args.seed)
    width = max(len(r.layer) for r in rows)
    print(f"{'layer':<{width}}  {'tensors':>7}  {'max abs error':>13}  {'max rel error':>13}  result")
    for r in rows:
        print(
            f"{r.layer:<{width}}  {r.tensors:>7}  {r.max_abs:>13.2e}  {r.max_rel:>13.2e}  {'ok' if r.ok else 'FAILED'}"
        )
    failed = [r.layer for r in rows if not r.ok]
    print(
        f"\n{len(rows) - len(failed)} of {len(rows)} layers agree with finite differences "
        "(float64, central differences)"
    )
    return 1 if failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .serve import run
    except ImportError as exc:
        raise ConvpropError(f"convprop serve is not available: {exc}") from None
    return run(args.checkpoint, host=args.host, port=args.port)


COMMANDS: dict[str, typing.Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "inspect": cmd_inspect,
    "export": cmd_export,
    "explain": cmd_explain,
    "gradcheck": cmd_gradcheck,
    "serve": cmd_serve,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit codes: 0 success, 1 a bug (traceback shown) or failed gradcheck,
    2 a user error (``ConvpropError``, one line) or bad arguments (argparse), 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\nconvprop: interrupted", file=sys.stderr)
        return 130
    except ConvpropError as exc:
        if args.debug:
            raise
        print(f"convprop: error: {exc}", file=sys.stderr)
        return 2
    except Exception:  # not a user error: a bug in convprop, so the traceback is the useful output
        traceback.print_exc()
        print(
            f"convprop: internal error (a bug in convprop {__version__}); please report it with the traceback above",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
