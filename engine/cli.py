"""The command line both stream scripts share: the parser, the recipes applied over it, the
checks of the numbers, and which flags were given explicitly."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dataloader import LAYOUTS, TEST_CROPS, TEST_FRAMES, TEST_POSITIONS, TEST_SCALES, TRAIN_CROPS, multicrop_scale_side
from dataloader.splits import add_split_arguments
from guards import MAX_TEST_FRAMES  # noqa: F401 (engine's name for it)
from guards import INPUT, OUTPUT, add_path, bound, check_io, check_options
from models import ARCHS, LR_GROUPS
from models.zoo import FLOW_SETTINGS, ZOO_PRESET_SETTINGS
from utils import HelpFormatter, UserError

RECIPE_NAMES = ("reference", "tsn")  # --recipe; each stream script says what a recipe sets
LOGGERS = ("csv", "tensorboard", "wandb")  # --logger; engine/loggers.py has the backends


def dataset_options(args: argparse.Namespace) -> dict:
    """The keyword arguments both streams' datasets take from the command line."""
    return dict(input_size=args.input_size, test_frames=args.test_frames, test_positions=args.test_positions,
                test_scale_side=multicrop_scale_side(args.test_scale, args.input_size),
                stack_length=args.stack_length, segments=args.segments, train_crop=args.train_crop,
                crop_scales=args.crop_scales, crop_positions=args.crop_positions, flip=args.flip)


def parse_loggers(text: str) -> list[str]:
    """``--logger`` value: a comma-separated list of LOGGERS; csv is always one of them."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in LOGGERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown logger {', '.join(unknown)}; choose from {', '.join(LOGGERS)}")
    return ["csv"] + [name for name in LOGGERS[1:] if name in names]


def get_args_parser(stream: str, description: str, add_help: bool = True) -> argparse.ArgumentParser:
    """Arguments common to both streams; each script adds its own and sets its defaults."""
    p = argparse.ArgumentParser(description=description, add_help=add_help,
                                formatter_class=HelpFormatter)
    p.add_argument("--recipe", default="reference", choices=RECIPE_NAMES,
                   help="reference: the two-stream reference's protocol; tsn: TSN's training and test choices "
                        "(see docs/training.md's table); flags given explicitly win over the recipe")
    _add_data_arguments(p.add_argument_group("data"))
    _add_model_arguments(p.add_argument_group("model"))
    _add_training_arguments(p.add_argument_group("training"), stream)
    _add_speed_arguments(p.add_argument_group("device and speed"))
    return p


def _add_data_arguments(data: argparse._ArgumentGroup) -> None:
    """Splits, frame layout, sampling, test views, loaders."""
    add_split_arguments(data)
    data.add_argument("--layout", default="ucf101", choices=sorted(LAYOUTS), help="frame layout preset")
    data.add_argument("--rgb-template", help="free RGB frame template, e.g. '{video}/img_{idx:05d}.jpg'")
    data.add_argument("--flow-x-template", help="free flow x template")
    data.add_argument("--flow-y-template", help="free flow y template")
    data.add_argument("--allow-missing", action="store_true", help="skip listed videos without frames")
    data.add_argument("--input-size", type=bound("input_size"), default=224, help="crop/resize size fed to the network")
    data.add_argument("--segments", type=bound("segments"), default=1,
                      help="training samples per video, one in each of this many equal parts, logits averaged "
                           "(TSN's segment consensus)")
    data.add_argument("--test-frames", type=bound("test_frames"), default=TEST_FRAMES, help="positions per test video")
    data.add_argument("--test-view", default="resize", choices=["resize", "center"],
                      help="test input with --test-crops 1: whole frame resized (reference) or center crop")
    data.add_argument("--test-crops", type=bound("test_crops"), default=1, choices=TEST_CROPS,
                      help="crops per test position, cut on the device from the frame as stored: 1 = --test-view; "
                           "3 = start, centre and end of the long side; 5 = 4 corners + centre; 10 = those and "
                           "their flips (TSN); a position's score is the mean over its crops")
    data.add_argument("--test-positions", default="starts", choices=TEST_POSITIONS,
                      help="where each test video's --test-frames positions lie in its equal segments: starts "
                           "(the reference's 1 + k*floor(m/n)) or centres (TSN's int(tick/2 + k*tick) + 1)")
    data.add_argument("--test-scale", default="stored", choices=TEST_SCALES,
                      help="--test-crops > 1: cut the crops from frames as stored, or first scale their short side "
                           "to input size x 256/224 (tsn: tsn-pytorch's GroupScale before its crops)")
    data.add_argument("--train-crop", default="random", choices=TRAIN_CROPS,
                      help="training crop: random = an --input-size crop anywhere (reference); multiscale = TSN's "
                           "corner crops of --crop-scales of the short side with aspect jitter, resized to "
                           "--input-size")
    data.add_argument("--crop-scales", type=bound("crop_scales"), nargs="+", metavar="S",
                      help="multiscale: crop sides as fractions of the short side (default: TSN's 1 .875 .75 .66; "
                           "the motion stream the first three)")
    data.add_argument("--crop-positions", type=bound("crop_positions"), default=5, choices=[5, 13],
                      help="multiscale: 4 corners + centre, or TSN's 13 positions")
    data.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                      help="random horizontal flips in training (and the flipped test crops); --no-flip for data "
                           "where left and right matter")
    data.add_argument("--workers", type=bound("workers"), default=None,
                      help="loader processes (default: cores - 1, max 16)")
    data.add_argument("--holdout-groups", type=bound("holdout_groups"), default=0,
                      help="hold out this many whole groups (UCF101's gXX, HMDB51's films) of the training list "
                           "as a validation set for model selection and the scheduler (default 0: select on the "
                           "test list, as the reference)")


def _add_model_arguments(model: argparse._ArgumentGroup) -> None:
    """Architecture, initial weights, dropout, partial BN."""
    model.add_argument("--arch", default="resnet101", choices=ARCHS, help="the ResNet of the stream")
    add_path(model, "--pretrained", role=INPUT, default="imagenet",
                       help="imagenet (= imagenet-v1, torchvision's IMAGENET1K_V1, the reference's) | imagenet-v2 | "
                            "none | mmaction2-tsn-r50-k400-rgb | mmaction2-tsn-r50-k400-flow (Kinetics-400, "
                            "--arch resnet50) | PATH or https URL of a state dict or checkpoint (torchvision, "
                            "this repo, mmaction2, tsn-pytorch/TSM)")
    model.add_argument("--dropout", type=bound("dropout"), default=0.0,
                       help="dropout before the classifier (TSN: 0.8 RGB, 0.7 flow)")
    model.add_argument("--partial-bn", action=argparse.BooleanOptionalAction, default=False,
                       help="TSN's partial BN: every BatchNorm but the first keeps its statistics and affine "
                            "parameters (frozen) in training")


def _add_training_arguments(train: argparse._ArgumentGroup, stream: str) -> None:
    """Output folder, epochs, optimisation, schedule, resuming, logging."""
    add_path(train, "--output-dir", role=OUTPUT, folder=True, default=f"record/{stream}",
             help="checkpoints, logs, score file")
    train.add_argument("--epochs", type=bound("epochs"), default=50, help="epochs to train")
    train.add_argument("--batch-size", type=bound("batch_size"), default=32, help="videos per step and process")
    train.add_argument("--test-batch-size", type=bound("test_batch_size"), default=None,
                       help="model inputs per evaluation batch (frames x test crops); default max(64, 4 x batch size)")
    train.add_argument("--lr", type=bound("lr"), default=1e-3, help="learning rate (SGD)")
    train.add_argument("--momentum", type=bound("momentum"), default=0.9, help="SGD momentum")
    train.add_argument("--weight-decay", type=bound("weight_decay"), default=0.0, help="L2 weight decay")
    train.add_argument("--lr-scheduler", default="plateau", choices=["plateau", "cosine", "step", "multistep"],
                       help="plateau: ReduceLROnPlateau on validation loss (reference)")
    train.add_argument("--lr-patience", type=bound("lr_patience"), default=1,
                       help="plateau: epochs without improvement")
    train.add_argument("--lr-step", type=bound("lr_step"), default=30, help="step: epochs between x0.1 decays")
    train.add_argument("--lr-milestones", type=bound("lr_milestones"), nargs="+", default=[30, 60], metavar="EPOCH",
                       help="multistep: the epochs after which the rate is multiplied by 0.1")
    train.add_argument("--lr-groups", default="single", choices=LR_GROUPS,
                       help="single: one rate and decay for every parameter; tsn: tsn-pytorch's groups (first conv "
                            "weight lr x5 for flow, x1 RGB; first conv bias lr x10 flow, x2 RGB, no decay; other "
                            "biases lr x2, no decay; BatchNorm no decay; frozen BatchNorms left out)")
    train.add_argument("--clip-grad-norm", type=bound("clip_grad_norm"), default=None,
                       help="clip the gradients' total norm to this (TSN: 20); default no clipping")
    train.add_argument("--val-interval", type=bound("val_interval"), default=1,
                       help="test (or validate) every this many epochs, and after the last; the schedule's plateau "
                            "and the best checkpoint follow these passes")
    train.add_argument("--print-freq", type=bound("print_freq"), default=0,
                       help="every this many steps a line with loss, lr, samples/s and the epoch's ETA (and "
                            "TensorBoard's per-step scalars); 0: only the progress bar")
    train.add_argument("--seed", type=bound("seed"), default=0,
                       help="seed of initialisation, sampling and augmentation")
    add_path(train, "--resume", role=INPUT, default="", nargs="?", const="auto", metavar="PATH",
             help="checkpoint to continue from, in its run's folder with its settings (flags given win), or to "
                  "evaluate; alone (or 'auto'): the run in --output-dir if it has a checkpoint, else a fresh one")
    train.add_argument("--start-epoch", type=bound("start_epoch"), default=None, help="override the checkpoint's epoch")
    train.add_argument("--evaluate", action="store_true", help="only run the test pass and write the score file")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run in --output-dir (without it a folder holding a run is refused "
                            "unless --resume is given)")
    train.add_argument("--override-checkpoint-settings", action="store_true",
                       help="let the command line change the settings stored in the --resume checkpoint "
                            "(recipe, input size, test view, frames and crops, stack length and order, flow mean)")

    add_path(train, "--config", role=INPUT, metavar="FILE",
             help="start from the settings of a run record (a run folder's config.json); flags given win")
    train.add_argument("--logger", type=parse_loggers, default=["csv"], metavar="csv[,tensorboard][,wandb]",
                       help="where the numbers go besides the CSV logs: tensorboard (OUTPUT_DIR/tensorboard: "
                            "loss, top-1/5, lr, samples/s, data-wait share, confusion matrices, hparams), wandb "
                            "(pip install wandb)")


def _add_speed_arguments(speed: argparse._ArgumentGroup) -> None:
    """Device, mixed precision, memory format, compilation."""
    speed.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                       help="cuda, cuda:N or cpu (default: cuda when there is one)")
    speed.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                       help="mixed precision (bf16 where supported, else fp16); default: on for CUDA")
    speed.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels_last memory format; default: on for CUDA")
    speed.add_argument("--device-resize", action=argparse.BooleanOptionalAction, default=None,
                       help="test view 'resize': resize whole batches on the device instead of each frame in the "
                            "loader workers (frames must share one size); default: on for CUDA")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model")
    speed.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun")


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None,
               recipes: dict[str, dict] | None = None) -> argparse.Namespace:
    """Parse and validate; ``args.explicit`` holds the flags given on the command line (they
    win over the --recipe and over a checkpoint's stored settings). Invalid numbers are one
    usage error (exit 2)."""
    args = parser.parse_args(argv)
    check_io(parser, args)
    configured = _config_defaults(parser, args.config)
    if configured:  # the record's settings are the defaults the flags given override
        args = parser.parse_args(argv)
    probe = argparse.Namespace(**{a.dest: _UNSET for a in parser._actions if a.dest != "help"})
    probe, _ = parser.parse_known_args(argv, namespace=probe)
    args.explicit = sorted({k for k, v in vars(probe).items() if v is not _UNSET} | set(configured))
    apply_recipe(args, (recipes or {}).get(args.recipe, {}))
    # each number is checked by its parser type (guards.BOUNDS); what remains relates two of them
    problems = []
    if list(args.lr_milestones) != sorted(set(args.lr_milestones)):
        problems.append(f"--lr-milestones must be increasing epochs, got {' '.join(map(str, args.lr_milestones))}")
    problems += apply_preset(args)
    if getattr(args, "test_crops", 1) == 10 and not getattr(args, "flip", True):
        if "test_crops" in args.explicit:
            problems.append("--test-crops 10 includes flipped crops, which --no-flip rules out: use --test-crops 5")
        else:
            args.test_crops = 5  # the recipe's 10 crops without their flips
    if problems:
        parser.error("; ".join(problems))
    return args


# what --config never takes from a run record: where this run writes and what it continues
CONFIG_SKIPPED = ("resume", "evaluate", "overwrite", "output_dir", "start_epoch", "config")


def _config_defaults(parser: argparse.ArgumentParser, path: str | None) -> dict:
    """--config FILE: the settings of a run record (config.json) become the parser's defaults,
    checked as the flags are (bounds, choices); returns them (they count as given, so a recipe
    does not replace them)."""
    import json

    if not path:
        return {}
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"--config {path}: not a readable run record ({err})\n  fix: pass a run folder's "
                        f"config.json") from None
    settings = record.get("settings", record) if isinstance(record, dict) else None
    if not isinstance(settings, dict):
        raise UserError(f"--config {path}: no settings in it\n  fix: pass a run folder's config.json")
    actions = {a.dest: a for a in parser._actions}
    values = {k: v for k, v in settings.items() if k in actions and k not in CONFIG_SKIPPED}
    wrong = [f"{k} {v!r}" for k, v in values.items() if actions[k].choices is not None and v is not None
             and not all(item in actions[k].choices for item in (v if isinstance(v, list) else [v]))]
    if wrong:
        raise UserError(f"--config {path}: values no flag takes: {', '.join(wrong)}\n  fix: the file was edited "
                        f"or comes from another version; correct or drop them")
    try:
        check_options(parser, values)
    except UserError as err:
        raise UserError(f"--config {path}: {err}\n  fix: the file was edited; correct those values") from None
    parser.set_defaults(**values)
    return values


def apply_preset(args: argparse.Namespace) -> list[str]:
    """--pretrained NAME of a zoo preset sets what its model is (--arch resnet50; the flow model's
    --stack-length 5, or a multiple of it, and normalisation on the motion stream); a flag given
    that contradicts it is a problem returned."""
    problems = []
    motion = hasattr(args, "flow_std")
    for name, value in ZOO_PRESET_SETTINGS.get(args.pretrained, {}).items():
        if name in FLOW_SETTINGS and not motion:
            continue
        tiled = name == "stack_length" and getattr(args, name) % value == 0  # pairs tiled to a longer stack
        if name not in args.explicit:
            setattr(args, name, value)
        elif getattr(args, name) != value and not tiled:
            problems.append(f"--pretrained {args.pretrained} is a model of --{name.replace('_', '-')} {value}, the "
                            f"command line says {getattr(args, name)}: drop that flag")
    return problems


def describe_recipes(parser: argparse.ArgumentParser, recipes: dict[str, dict]) -> None:
    """--help lists what each recipe sets, under --recipe."""
    def shown(value: object) -> str:
        return " ".join(map(str, value)) if isinstance(value, list) else str(value)
    action = next(a for a in parser._actions if a.dest == "recipe")
    sets = "; ".join(f"{name} sets " + ", ".join(f"--{k.replace('_', '-')} {shown(v)}" for k, v in values.items())
                     for name, values in recipes.items() if values)
    action.help = f"{action.help}. {sets}" if sets else action.help


def apply_recipe(args: argparse.Namespace, values: dict) -> list[str]:
    """Set a recipe's values on every argument not given explicitly; returns what was set."""
    explicit = set(getattr(args, "explicit", ()))
    changed = []
    for name, value in values.items():
        if name not in explicit and getattr(args, name) != value:
            setattr(args, name, value)
            changed.append(name)
    return changed
