"""What every recipe shares, by concern: flags (:mod:`~mdtblocks.training.recipe.cli`), data choice (:mod:`~mdtblocks.training.recipe.data`), the run
folder and logs (:mod:`~mdtblocks.training.recipe.run`), and the one training recipe over them (:mod:`~mdtblocks.training.recipe.train`)."""

from .cli import RecipeConfig, build_parser, choose_config, exit_on_bad_input, flag, parse_flags, presets_of, to_argv
from .data import CachedLatents, RunData, load_run_data
from .run import announce_builtin, model_overrides, setup_logging, train_config, write_run_config
from .train import DEMO, MODEL_OVERRIDES, OFFICIAL_FIELDS, TrainRecipe, build_criterion, build_optimizer

__all__ = [
    "flag",
    "exit_on_bad_input",
    "presets_of",
    "RecipeConfig",
    "parse_flags",
    "to_argv",
    "choose_config",
    "announce_builtin",
    "build_parser",
    "RunData",
    "load_run_data",
    "CachedLatents",
    "train_config",
    "model_overrides",
    "write_run_config",
    "setup_logging",
    "TrainRecipe",
    "MODEL_OVERRIDES",
    "OFFICIAL_FIELDS",
    "build_optimizer",
    "build_criterion",
    "DEMO",
]
