"""The training and evaluation engine shared by both streams.

``spatial_cnn.py`` and ``motion_cnn.py`` only describe their stream (:class:`Stream`) and
their argument defaults; everything else is here, one job a module, imported one way (each
module only from those above it; none but this file imports ``run``):

- ``distributed``: the processes (one, or torchrun's world), the device, main-process printing
- ``stream``: :class:`Stream`, what differs between the streams
- ``cli``: the shared parser, recipes, the checks of the numbers, explicit flags
- ``schedule``: the learning-rate schedule, built and restored
- ``loops``: one training epoch (with its timing), one test pass, meters, the graceful stop
- ``state``: what a run holds: its data and its training state
- ``checkpoints``: save/load, stored settings, compatibility, publishing, restoring a run
- ``run_dir``: the output folder and its lock, the score file, the curves
- ``loggers``: CSV, TensorBoard and W&B behind one interface
- ``build``: builds a run's data and training state, in torchvision's order
- ``run``: the orchestration: evaluate only, or the epoch loop
"""
from .checkpoints import (CHECKPOINT_FORMAT, CHECKPOINT_SETTINGS, FIXED_SETTINGS, LEGACY_SETTINGS, PUBLISHED_KEYS,
                          apply_checkpoint_settings, check_compatible, check_complete, check_finite_weights,
                          check_record_shapes, check_stored_settings, load_checkpoint, model_name, publishable,
                          save_checkpoint)
from .cli import (MAX_TEST_FRAMES, RECIPE_NAMES, apply_recipe, dataset_options, describe_recipes, get_args_parser,
                  parse_args)
from .distributed import World, init_distributed, resolve_device
from .loops import Context, EpochTiming, GracefulStop, Meters, evaluate, topk_correct, train_one_epoch
from .run import run
from .run_dir import OutputFolder, plot_curves
from .schedule import build_scheduler, restore_schedule, scheduled_lr
from .stream import Stream

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_SETTINGS", "FIXED_SETTINGS", "LEGACY_SETTINGS", "PUBLISHED_KEYS",
           "apply_checkpoint_settings", "check_compatible", "check_complete", "check_finite_weights",
           "check_record_shapes", "check_stored_settings", "load_checkpoint", "model_name", "publishable",
           "save_checkpoint", "MAX_TEST_FRAMES",
           "RECIPE_NAMES", "apply_recipe", "dataset_options", "describe_recipes", "get_args_parser",
           "parse_args", "World", "init_distributed", "resolve_device", "Context", "GracefulStop", "Meters", "evaluate",
           "topk_correct", "train_one_epoch", "EpochTiming", "run", "OutputFolder", "plot_curves", "build_scheduler",
           "restore_schedule", "scheduled_lr", "Stream"]
