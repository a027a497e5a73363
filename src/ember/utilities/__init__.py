"""Helpers Lightning users import from ``lightning.pytorch.utilities``."""

from ember.loops.combined_loader import CombinedLoader
from ember.distributed import rank_zero_only
from ember.core.module import AttributeDict
from ember.seed import seed_everything
from ember.utilities.data import move_data_to_device, suggested_max_num_workers
from ember.utilities.enums import GradClipAlgorithmType, LightningEnum
from ember.utilities.filesystem import is_shared_filesystem
from ember.utilities.grads import grad_norm
from ember.utilities.model_summary import ModelSummary, summarize
from ember.utilities.parameter_tying import find_shared_parameters, set_shared_parameters
from ember.utilities.parsing import is_picklable
from ember.utilities.rank_zero import rank_zero_debug, rank_zero_deprecation, rank_zero_info, rank_zero_warn
from ember.utilities.throughput import measure_flops
from ember.utilities.warnings import disable_possible_user_warnings
from ember import not_supported as _not_supported

globals().update(_not_supported.install("utilities"))

__all__ = ["CombinedLoader", "AttributeDict", "GradClipAlgorithmType", "LightningEnum", "ModelSummary",
           "disable_possible_user_warnings",
           "find_shared_parameters", "grad_norm", "is_picklable", "is_shared_filesystem", "measure_flops",
           "move_data_to_device", "rank_zero_debug", "rank_zero_deprecation", "rank_zero_info", "rank_zero_only",
           "rank_zero_warn", "seed_everything", "set_shared_parameters", "suggested_max_num_workers", "summarize"]
