"""The ``clothclf`` command line: data download, train, evaluate, predict, export, runs.

TensorFlow is imported only by the commands that need it (train, export, and evaluate/predict on a
model without a LiteRT file). Errors a user can cause print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from clothclf import __version__
from clothclf.allocator import tune_for_server
from clothclf.config import BACKENDS, AugmentConfig, Paths, TrainConfig, default, options
from clothclf.console import (
    OneLineParser,
    exit_quietly_on_closed_pipe,
    fill_from_environment,
    native_logs_filtered,
    printable_output,
)
from clothclf.errors import ClothclfError, RunError

if TYPE_CHECKING:
    from clothclf.training.callbacks import StepPrinter

log = logging.getLogger("clothclf")


def _add_model_arg(parser: argparse.ArgumentParser, writes: bool = False) -> None:
    """``--model``; a command that writes into the run folder needs it named (never the shipped model
    by default: it stays as committed)."""
    if writes:
        parser.add_argument("--model", type=Path, required=True, help="the run folder to write into")
    else:
        parser.add_argument("--model", type=Path, help="model or run folder (default: the shipped model)")


def _at_least_one(text: str) -> int:
    """An argument that counts something: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _flag_value(value: object) -> str:
    """How a choice is spelled on the command line (``None`` is ``none``)."""
    return "none" if value is None else str(value)


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per training option (see :func:`clothclf.config.options`): ``--name VALUE``, or
    ``--name`` / ``--no-name`` for a switch (either way, whatever its default)."""
    for name, spec in options().items():
        flag, value = name.replace("_", "-"), default(name)
        if isinstance(value, bool):
            parser.add_argument(
                f"--{flag}",
                dest=name,
                action=argparse.BooleanOptionalAction,
                help=f"{spec.help} (default {'on' if value else 'off'})",
            )
        elif spec.choices:
            choices = [_flag_value(c) for c in spec.choices]
            parser.add_argument(
                f"--{flag}", dest=name, choices=choices, help=f"{spec.help} (default {_flag_value(value)})"
            )
        else:
            limits = f"{spec.bounds()}; " if spec.bounds() else ""
            shown = f"{value:g}" if isinstance(value, (int, float)) else repr(value)
            parser.add_argument(
                f"--{flag}", dest=name, type=type(value), help=f"{spec.help} ({limits}default {shown})"
            )


def _add_data_command(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """``clothclf data download`` and ``clothclf data check``."""
    data = commands.add_parser("data", parents=[common], help="dataset commands")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    download = data_commands.add_parser("download", parents=[common], help="download clothing-dataset-small")
    download.add_argument("--dest", type=Path, help="folder to put it in (default: $CLOTHCLF_DATA_DIR)")
    download.add_argument("--force", action="store_true", help="download again even if present")
    check = data_commands.add_parser(
        "check", help="report a dataset (folder or zip): photos per class and split, skipped files, leakage"
    )
    check.add_argument("path", type=Path, help="dataset folder, or a zip of one")
    check.add_argument("--seed", type=int, default=42, help="seed of the split clothclf makes (default 42)")
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")
    issues = data_commands.add_parser(
        "issues", help="find a dataset's label issues, duplicates (leaks across splits first) and outliers"
    )
    issues.add_argument("--data", type=Path, help="dataset folder or zip (default: the default dataset)")
    _add_model_arg(issues)
    issues.add_argument("--json", action="store_true", help="print the issues as one JSON object")
    issues.add_argument("--out", type=Path, help="also write the issues' JSON to FILE")


def _add_train_command(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """``clothclf train``: one flag per training option."""
    train = commands.add_parser("train", parents=[common], help="train a model (two-phase transfer learning)")
    train.add_argument("--data", type=Path, help="dataset folder (default: the downloaded default dataset)")
    train.add_argument("--config", type=Path, help="start from a run's config.json (flags override it)")
    train.add_argument("--no-augment", action="store_true", help="turn augmentation off")
    _add_option_flags(train)
    train.add_argument("--out", type=Path, help="run folder (default: $CLOTHCLF_RUNS_DIR/<time>-<backbone>)")
    train.add_argument("--name", help="name the run: its folder $CLOTHCLF_RUNS_DIR/NAME (instead of --out)")
    train.add_argument("--json", action="store_true", help="print one final JSON line")


def _add_evaluate_command(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """``clothclf evaluate``."""
    evaluate = commands.add_parser(
        "evaluate", parents=[common], help="metrics of a model on a dataset split or folder"
    )
    _add_model_arg(evaluate)
    evaluate.add_argument(
        "--data",
        type=Path,
        help="dataset root or folder of class folders (default: $CLOTHCLF_DATA_DIR's dataset)",
    )
    evaluate.add_argument("--split", default="test", help="split of a dataset root (default test)")
    evaluate.add_argument(
        "--name",
        help="save as evaluations/NAME in the model folder (default: the split, or the folder's name)",
    )
    evaluate.add_argument("--no-save", action="store_true", help="print the metrics only; save nothing")
    evaluate.add_argument("--backend", choices=BACKENDS, default="auto")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    evaluate.add_argument(
        "--overlay", type=Path, help="also report the metrics on the labels this overlay file corrects"
    )


def _add_predict_command(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """``clothclf predict``: local files, lists of paths, URIs; printed or written to a file."""
    predict = commands.add_parser(
        "predict", parents=[common], help="classify photos, folders of photos or lists of paths"
    )
    _add_model_arg(predict)
    predict.add_argument("--top-k", type=_at_least_one, default=3, help="labels per photo (default 3)")
    predict.add_argument("--backend", choices=BACKENDS, default="auto")
    predict.add_argument(
        "--json",
        action="store_true",
        help="one JSON line per file (without --out); a name that is not UTF-8 also as file_bytes_base64",
    )
    predict.add_argument(
        "--from-list", metavar="FILE", help="also the paths in FILE, one a line (- for stdin)"
    )
    predict.add_argument(
        "--out", type=Path, help="write one row per photo to a .csv, .jsonl or .parquet file"
    )
    predict.add_argument("--resume", action="store_true", help="skip the photos already in --out")
    predict.add_argument(
        "--engine", choices=["local", "ray"], default="local", help="where to run (default local)"
    )
    predict.add_argument("--ray-address", help="Ray cluster to use (default: $RAY_ADDRESS, else a local Ray)")
    predict.add_argument(
        "--explain", type=Path, metavar="DIR", help="also write each photo with its heatmap as DIR/<name>.png"
    )
    predict.add_argument("files", nargs="*", metavar="PATH", help="photos or folders (searched recursively)")


def _add_export_command(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """``clothclf export``: the LiteRT model of a run, float or int8."""
    export = commands.add_parser(
        "export", parents=[common], help="write model.tflite for a run that lacks it"
    )
    _add_model_arg(export, writes=True)
    export.add_argument("--force", action="store_true", help="overwrite an existing model.tflite")
    export.add_argument(
        "--int8",
        action="store_true",
        help="write model_int8.tflite: full-integer, calibrated on training photos",
    )
    export.add_argument(
        "--data",
        type=Path,
        help="dataset whose training photos calibrate --int8 (default: the default dataset)",
    )


def _add_run_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """``clothclf calibrate``, ``clothclf trust``, ``clothclf soup`` and ``clothclf runs``: what is done
    to saved runs."""
    calibrate = commands.add_parser(
        "calibrate",
        parents=[common],
        help="fit a run's temperature on its validation predictions (for older runs)",
    )
    _add_model_arg(calibrate, writes=True)
    trust = commands.add_parser(
        "trust",
        parents=[common],
        help="add trust scores to a run saved without them: feature outputs, feature bank, fitted thresholds",
    )
    _add_model_arg(trust, writes=True)
    trust.add_argument("--data", type=Path, help="the run's dataset (default: CLOTHCLF_DATA_DIR)")
    trust.add_argument(
        "--accept-accuracy", type=float, help="accuracy accepted answers reach on validation (default: 0.97)"
    )
    soup = commands.add_parser(
        "soup",
        parents=[common],
        help="average the weights of runs fine-tuned from the same start into a new run (a model soup)",
    )
    soup.add_argument(
        "runs", type=Path, nargs="+", metavar="RUN", help="run folders (the first sets the config)"
    )
    soup.add_argument("--out", type=Path, required=True, help="the new run folder")
    soup.add_argument("--json", action="store_true", help="print one final JSON line")
    runs = commands.add_parser("runs", parents=[common], help="list training runs")
    runs.add_argument("--json", action="store_true")


def _add_serve_command(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """``clothclf serve``: the HTTP API (FastAPI + uvicorn, or Ray Serve)."""
    serve = commands.add_parser(
        "serve", parents=[common], help="an HTTP API for the model (JSON answers, OpenAPI docs at /docs)"
    )
    _add_model_arg(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument(
        "--workers", type=_at_least_one, default=1, help="server processes, each with the model (default 1)"
    )
    serve.add_argument(
        "--max-body-mb", type=_at_least_one, default=20, help="largest request body in MB (default 20)"
    )
    serve.add_argument(
        "--engine", choices=["local", "ray"], default="local", help="uvicorn or Ray Serve (default local)"
    )
    serve.add_argument("--replicas", type=_at_least_one, help="Ray Serve replicas (--engine ray; default 1)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    common = argparse.ArgumentParser(
        add_help=False
    )  # options every command accepts, before or after its name
    common.add_argument(
        "--verbose", action="store_true", default=argparse.SUPPRESS, help="show TensorFlow's own log messages"
    )
    parser = OneLineParser(prog="clothclf", description="Clothing-photo classifier.", parents=[common])
    parser.set_defaults(verbose=False)
    parser.add_argument("--version", action="version", version=f"clothclf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in (
        _add_data_command,
        _add_train_command,
        _add_evaluate_command,
        _add_predict_command,
        _add_export_command,
        _add_run_commands,
        _add_serve_command,
    ):
        add_command(commands, common)
    return parser


def train_config_from_args(args: argparse.Namespace, paths: Paths) -> TrainConfig:
    """A TrainConfig from defaults (or ``--config``) overridden by the flags given."""
    values = TrainConfig(data_dir="").to_dict()
    if args.config:
        saved = json.loads(args.config.read_text())
        values.update(saved.get("train", saved))
    for name, spec in options().items():
        given = getattr(args, name)
        if given is not None:
            values[name] = None if given == "none" and None in spec.choices else given
    if args.no_augment:
        values["augment"] = {**values.get("augment", AugmentConfig().__dict__), "enabled": False}
    if args.data:
        values["data_dir"] = str(args.data)
    elif not values["data_dir"]:
        values["data_dir"] = str(paths.default_dataset_dir)
    return TrainConfig.from_dict(values)


def cmd_data_download(args: argparse.Namespace, paths: Paths) -> int:
    from clothclf.data.download import download_with_progress_bar

    print(download_with_progress_bar(args.dest, force=args.force))
    return 0


def cmd_data_check(args: argparse.Namespace, paths: Paths) -> int:
    from clothclf.data.archives import dataset_folder
    from clothclf.data.datasets import create_dataset
    from clothclf.data.report import build_report, format_report

    with dataset_folder(args.path) as folder:
        report = build_report(create_dataset(folder, seed=args.seed))
    print(json.dumps(report.to_dict()) if args.json else format_report(report))
    report.raise_if_refused()
    return 0


def cmd_data_issues(args: argparse.Namespace, paths: Paths) -> int:
    from clothclf.data.archives import dataset_folder
    from clothclf.data.datasets import create_dataset
    from clothclf.evaluation.data_issues import dataset_issues, format_issues
    from clothclf.runs import write_json

    with dataset_folder(args.data or paths.default_dataset_dir) as folder:
        issues, _ = dataset_issues(create_dataset(folder), args.model, paths)
    if args.out:
        write_json(args.out, issues.to_json())
    print(json.dumps(issues.to_json()) if args.json else format_issues(issues))
    return 0


def checked_train_config(args: argparse.Namespace, paths: Paths) -> TrainConfig:
    """The run's config, checked (values, backbone name) before TensorFlow is imported."""
    from clothclf.modeling.backbones import get_backbone_spec

    config = train_config_from_args(args, paths)
    try:
        config.validate()
        get_backbone_spec(config.backbone)
    except ValueError as exc:
        raise ClothclfError(str(exc)) from exc
    return config


def _run_folder(args: argparse.Namespace, paths: Paths) -> Path | None:
    """Where ``train`` writes the run: ``--out``, or ``--name`` under the runs folder (None: by time)."""
    from clothclf.runs import checked_run_name

    if args.name is None:
        return args.out
    if args.out is not None:
        raise ClothclfError("give --name or --out, not both")
    folder = paths.runs_dir / checked_run_name(args.name)
    if folder.exists():
        raise ClothclfError(
            f"a run named {args.name!r} is already in {paths.runs_dir}; choose another --name"
        )
    return folder


def cmd_train(args: argparse.Namespace, paths: Paths) -> int:
    from clothclf.data.report import training_report

    require_modules("tensorflow", "keras")  # a missing [train] extra is named before the dataset is read
    config = checked_train_config(args, paths)
    out = _run_folder(args, paths)
    training_report(config, paths.cache_dir).raise_if_refused()  # before TensorFlow is imported
    from clothclf.training.loop import train
    from clothclf.training.missing_weights import weights_failure

    verbose = 0 if args.json else (1 if sys.stdout.isatty() else 2)
    progress = None if args.json else _steps_on_stderr()
    try:
        result = train(config, out, paths=paths, verbose=verbose, progress=progress)
    except Exception as exc:  # offline without cached ImageNet weights: one sentence, no Keras traceback
        failure = weights_failure(exc, config.backbone, config.image_size)
        if failure is None:
            raise
        raise failure from exc
    summary = {
        "val_accuracy": result.val_accuracy,
        "best_epoch_val_accuracy": result.best_epoch_val_accuracy,
        "epochs": result.epochs,
        "seconds": round(result.seconds, 1),
        "run_dir": str(result.run_dir) if result.run_dir else None,
        "weights_digest": result.weights_digest,
    }
    if args.json:
        print(json.dumps(summary))
    elif result.run_dir is None:
        print(
            f"trained in step with the chief, which saves the run: {result.epochs} epochs, best validation "
            f"accuracy {result.best_epoch_val_accuracy:.4f}, weights {result.weights_digest}, {result.seconds:.0f} s"
        )
    else:
        print(
            f"saved {result.run_dir}: validation accuracy {result.val_accuracy:.4f} "
            f"(best epoch {result.best_epoch_val_accuracy:.4f}), {result.epochs} epochs, {result.seconds:.0f} s"
        )
    return 0


def _evaluation_split(data: Path, split: str, class_names: tuple[str, ...]):
    """(split files, root for relative names, split name) of a dataset root (its split folders named
    as training reads them: ``Train``, ``val``, ``testing``…) or a class folder."""
    from clothclf.data.datasets import SPLITS, scan_class_folder
    from clothclf.data.layout import split_of

    split_folders = {split_of(d.name): d for d in sorted(data.iterdir()) if d.is_dir() and split_of(d.name)}
    if split_folders:
        if split not in SPLITS:
            raise ClothclfError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if split not in split_folders:
            raise ClothclfError(f"{data}: no {split} folder (its splits: {', '.join(sorted(split_folders))})")
        folder, name = split_folders[split], split
    else:
        folder, name = data, re.sub(r"[^A-Za-z0-9_-]", "_", data.name)
    return scan_class_folder(folder, class_names)[1], folder.parent, name


def _is_default_dataset(data: Path, paths: Paths) -> bool:
    """Whether ``data`` is this machine's default dataset (recorded as None: no machine's path is saved)."""
    return data.resolve() == paths.default_dataset_dir.resolve()


def _print_metrics(metrics: dict) -> None:
    print(
        f"{metrics['n_images']} images  accuracy {metrics['accuracy']:.4f}  "
        f"top-3 {metrics['top3_accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
        f"log loss {metrics['log_loss']:.4f}  ECE {metrics['ece']:.4f}"
    )
    print(f"{'class':<12} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>7}")
    for name, row in metrics["per_class"].items():
        print(
            f"{name:<12} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['f1']:>6.3f} {row['support']:>7}"
        )


def cmd_evaluate(args: argparse.Namespace, paths: Paths) -> int:
    from clothclf.evaluation.evaluate import evaluate_classifier
    from clothclf.runs import evaluation_folder
    from clothclf.serving.classifier import load_classifier

    if not args.data.is_dir():
        raise ClothclfError(f"no dataset at {args.data}: pass --data DIR or set CLOTHCLF_DATA_DIR")
    classifier = load_classifier(args.model, backend=args.backend)
    split, root, name = _evaluation_split(args.data, args.split, classifier.class_names)
    saved_as = args.name or name
    evaluation_folder(classifier.model_dir, saved_as)  # a bad --name fails before the evaluation runs
    metrics, rows = evaluate_classifier(classifier, split, root)
    metrics.update(
        {
            "split": name,
            "data": None if _is_default_dataset(args.data, paths) else str(args.data),
            "backend": classifier.backend,
            "tta": classifier.tta,
            "temperature": classifier.temperature,
        }
    )
    if args.overlay:
        from clothclf.evaluation.data_issues import overlay_metrics

        metrics["corrected"] = overlay_metrics(rows, args.overlay, root, classifier.class_names)
    if args.json:
        print(json.dumps(metrics))
    else:
        _print_metrics(metrics)
        if metrics.get("corrected"):
            print(
                f"on the labels {args.overlay} corrects ({metrics['corrected']['photos_changed']} changed):"
            )
            _print_metrics(metrics["corrected"])
    if not args.no_save:
        _save_evaluation(classifier.model_dir, saved_as, metrics, rows)
    return 0


def _save_evaluation(model_dir: Path, name: str, metrics: dict, rows: list[dict]) -> None:
    """Save an evaluation under ``evaluations/<name>/``; a folder that cannot be written only warns."""
    from clothclf.runs import save_evaluation

    try:
        saved = save_evaluation(model_dir, name, metrics, rows)
    except RunError as exc:  # a read-only model folder (the installed default model) still evaluates
        print(f"clothclf: warning: not saved: {exc}", file=sys.stderr)
    else:
        print(f"clothclf: saved in {saved}", file=sys.stderr)


class _PrintedRows:
    """Rows printed as they come: JSON lines, or one line per photo for people (errors on stderr)."""

    done: frozenset[str] = frozenset()

    def __init__(self, as_json: bool):
        self._as_json = as_json

    def write(self, row: dict) -> None:
        if self._as_json:
            from clothclf.serving.result_files import json_line

            print(json_line(row), flush=True)
        elif "error" in row:  # the error may name the file itself: say it once
            print(f"{row['file']}: error: {row['error'].removeprefix(row['file'] + ': ')}", file=sys.stderr)
        else:
            others = ", ".join(f"{t['label']} {t['probability']:.1%}" for t in row["top_k"][1:])
            if row["label"] == row["closest"]:
                answer = f"{row['label']} ({row['confidence']:.1%}, {row['status']})"
            else:
                answer = f"{row['label']} (closest: {row['closest']} {row['confidence']:.1%})"
            print(f"{row['file']}: {answer}  [{others}]", flush=True)

    def close(self) -> None:
        pass


def cmd_predict(args: argparse.Namespace, paths: Paths) -> int:
    from clothclf.serving.batch import predict_catalog

    if not args.files and args.from_list is None:
        raise ClothclfError("name photos or folders to classify, or --from-list FILE")
    if args.resume and args.out is None:
        raise ClothclfError("--resume needs --out (the file to continue)")
    if args.explain is not None and args.explain.exists() and not args.explain.is_dir():
        raise ClothclfError(f"--explain {args.explain}: not a folder")
    summary = predict_catalog(
        args.files,
        args.out if args.out is not None else _PrintedRows(args.json),
        path_list=args.from_list,
        model_dir=args.model,
        backend=args.backend,
        top_k=args.top_k,
        resume=args.resume,
        engine=args.engine,
        ray_address=args.ray_address,
        progress=args.out is not None and sys.stderr.isatty(),
    )
    print(f"clothclf: {summary.line()}" + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    if args.explain:
        from_list = None if str(args.from_list) == "-" else args.from_list  # standard input is read once
        _write_explanations(args.files, from_list, args.model, args.backend, args.explain)
    return 1 if summary.failed else 0


def _write_explanations(
    files: list[str], from_list: str | None, model_dir: Path | None, backend: str, out_dir: Path
) -> None:
    """Each local photo of ``files`` and ``from_list`` with the heatmap of where the model looked, as
    ``out_dir/<stem>.png`` (``<stem>-2.png``… for photos of the same name in other folders)."""
    from PIL import Image

    from clothclf.data.images import load_image
    from clothclf.serving.batch import catalog_files, is_uri
    from clothclf.serving.classifier import load_classifier
    from clothclf.serving.explain import overlay

    classifier = load_classifier(model_dir, backend=backend)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for file in catalog_files(files, from_list):
        if is_uri(file):
            continue
        try:
            explanation = classifier.explain(file)
            photo = Image.fromarray(load_image(file, None, classifier.max_pixels))
        except ClothclfError as exc:
            print(f"{file}: no explanation: {exc}", file=sys.stderr)
            continue
        photo.thumbnail((1024, 1024), Image.Resampling.BILINEAR)
        stem = Path(file).stem
        written[stem] = written.get(stem, 0) + 1
        name = stem if written[stem] == 1 else f"{stem}-{written[stem]}"
        overlay(photo, explanation).save(out_dir / f"{name}.png")


def _steps_on_stderr() -> StepPrinter:
    """A progress hook drawing each step with its count or estimate on stderr (Keras draws the epochs)."""
    from clothclf.training.callbacks import StepPrinter
    from clothclf.training.phases import FIT_PHASES

    return StepPrinter(sys.stderr, FIT_PHASES)


def cmd_export(args: argparse.Namespace, paths: Paths) -> int:
    from clothclf.runs import INT8_MODEL, LITERT_MODEL
    from clothclf.serving.export import export_run
    from clothclf.training.callbacks import StepReporter
    from clothclf.training.phases import CONVERTING

    model_dir = args.model
    target = model_dir / (INT8_MODEL if args.int8 else LITERT_MODEL)
    if target.is_file() and not args.force:
        print(f"{target}: already there (--force writes it again)")
    elif args.int8:
        from clothclf.training.quantize import quantize_run

        data = args.data or paths.default_dataset_dir
        record = quantize_run(model_dir, data, overwrite=args.force, progress=_steps_on_stderr())
        print(target)
        served = "served by default" if record["served"] else "not served (the float model answers)"
        print(
            f"validation accuracy: int8 {record['val_accuracy']:.4f}, float {record['fp32_val_accuracy']:.4f}: {served}"
        )
    else:
        print(
            export_run(
                model_dir, overwrite=args.force, progress=StepReporter(_steps_on_stderr()).timed(CONVERTING)
            )
        )
    return 0


def cmd_calibrate(args: argparse.Namespace, paths: Paths) -> int:
    from clothclf.evaluation.evaluate import recalibrate_run

    model_dir = args.model
    old, new = recalibrate_run(model_dir)
    print(f"{model_dir}: temperature {old:.4f} -> {new:.4f}")
    return 0


def cmd_trust(args: argparse.Namespace, paths: Paths) -> int:
    from clothclf.training.trust import upgrade_run

    model_dir = args.model
    record = upgrade_run(
        model_dir, args.data or paths.default_dataset_dir, args.accept_accuracy, _steps_on_stderr()
    )
    val = record["validation"]
    print(
        f"{model_dir}: unknown at ood_score >= {record['unknown_threshold']:.3f}, review below confidence "
        f"{record['review_confidence']:.3f}; validation: {val['accept']:.1%} accepted "
        f"({val['accepted_accuracy'] or 0:.1%} correct), {val['review']:.1%} review, {val['unknown']:.1%} unknown"
    )
    return 0


def cmd_soup(args: argparse.Namespace, paths: Paths) -> int:
    require_modules("tensorflow", "keras")
    from clothclf.training.soup import average_runs

    result = average_runs(args.runs, args.out, paths=paths)  # on the first run's dataset
    if args.json:
        print(json.dumps({"val_accuracy": result.val_accuracy, "run_dir": str(result.run_dir)}))
    else:
        print(
            f"saved {result.run_dir}: validation accuracy {result.val_accuracy:.4f}, {result.seconds:.0f} s"
        )
    return 0


#: The Models page's columns ``clothclf runs`` prints, with their headings (the class list last: it is long).
RUNS_COLUMNS = {
    "model": "model",
    "dataset": "dataset",
    "backbone": "backbone",
    "image size": "px",
    "val accuracy": "val acc",
    "test accuracy": "test acc",
    "epochs": "epochs",
    "training time": "training",
    "classes": "classes",
}
#: The columns of numbers, aligned right.
RUNS_NUMBERS = frozenset({"image size", "val accuracy", "test accuracy", "epochs"})


def _runs_cell(value: object, column: str) -> str:
    """A table cell as the Models page shows it: accuracies in percent with one decimal, – when unknown."""
    if value is None:
        return "–"
    return f"{value:.1f}%" if column.endswith("accuracy") else str(value)


def cmd_runs(args: argparse.Namespace, paths: Paths) -> int:
    from clothclf.app.models_list import describe_model, models_table
    from clothclf.runs import list_runs

    runs = list_runs(paths.runs_dir)
    if args.json:
        print(json.dumps([{"path": str(r.path), **r.summary} for r in runs]))
        return 0
    if not runs:
        print(f"no runs in {paths.runs_dir}")
        return 0
    rows = models_table([e for e in (describe_model(r.path) for r in runs) if e is not None])
    cells = [list(RUNS_COLUMNS.values())] + [[_runs_cell(row[c], c) for c in RUNS_COLUMNS] for row in rows]
    widths = {c: max(len(line[i]) for line in cells) for i, c in enumerate(RUNS_COLUMNS)}
    for line in cells:
        padded = [
            cell.rjust(widths[c]) if c in RUNS_NUMBERS else cell.ljust(widths[c])
            for cell, c in zip(line, RUNS_COLUMNS)
        ]
        print("  ".join(padded).rstrip())
    return 0


def cmd_serve(args: argparse.Namespace, paths: Paths) -> int:
    import os

    require_modules("fastapi", "uvicorn", "python_multipart")
    from clothclf.api.server import ServerConfig, run_server
    from clothclf.runs import is_model_folder

    if args.engine == "local" and args.replicas is not None:
        raise ClothclfError("--replicas is for --engine ray (--workers runs more processes here)")
    if args.engine == "ray" and args.workers > 1:
        raise ClothclfError("--workers is for --engine local (--replicas runs more copies on Ray)")
    if not is_model_folder(args.model):
        raise ClothclfError(f"{args.model}: not a clothclf model folder")
    config = ServerConfig(
        model_dir=args.model,
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_body_mb=args.max_body_mb,
        api_key=os.environ.get("CLOTHCLF_API_KEY") or None,
    )
    if args.engine == "ray":
        require_modules("ray")
        from clothclf.api.ray_serve import run_on_ray

        run_on_ray(config, replicas=args.replicas or 1)
    else:
        run_server(config)
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "export": cmd_export,
    "calibrate": cmd_calibrate,
    "trust": cmd_trust,
    "soup": cmd_soup,
    "runs": cmd_runs,
    "serve": cmd_serve,
}


#: Modules of an optional dependency -> the extra that installs them (``pip install clothclf`` has none).
EXTRA_OF_MODULE = {
    "tensorflow": "train",
    "keras": "train",
    "sklearn": "train",
    "scipy": "train",
    "cleanlab": "train",
    "ray": "ray",
    "fastapi": "api",
    "uvicorn": "api",
    "python_multipart": "api",
}


def require_modules(*names: str) -> None:
    """Raise ``ModuleNotFoundError`` for the first of ``names`` that is not installed (without importing it)."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    tune_for_server()  # two malloc arenas: a cold head-only run of the default backbone fits in 700 MB
    printable_output()
    paths = Paths.from_env()
    args = fill_from_environment(build_parser().parse_args(argv), paths)
    # clothclf's own messages from INFO up; the libraries' (TensorFlow's collectives...) from WARNING.
    logging.basicConfig(level=logging.WARNING, format="clothclf: %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    if args.command == "data":
        handler = {"check": cmd_data_check, "issues": cmd_data_issues}.get(
            args.data_command, cmd_data_download
        )
    else:
        handler = COMMANDS[args.command]
    try:
        with native_logs_filtered(enabled=not args.verbose):
            code = handler(args, paths)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:  # `clothclf predict ... | head`: the reader left; stop quietly
        return exit_quietly_on_closed_pipe()
    except ClothclfError as exc:
        print(f"clothclf: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if exc.name not in EXTRA_OF_MODULE:
            raise
        extra = EXTRA_OF_MODULE[exc.name]
        print(
            f"clothclf: error: {args.command} needs {exc.name}: pip install 'clothclf[{extra}]'",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("clothclf: interrupted", file=sys.stderr)
        return 130
