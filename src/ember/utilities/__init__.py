"""Helpers Lightning users import from ``lightning.pytorch.utilities``."""

from ember.distributed import rank_zero_only
from ember.core.module import AttributeDict
from ember.seed import seed_everything
from ember.utilities.grads import grad_norm
from ember.utilities.model_summary import ModelSummary, summarize
from ember.utilities.rank_zero import rank_zero_debug, rank_zero_info, rank_zero_warn

__all__ = ["AttributeDict", "ModelSummary", "grad_norm", "rank_zero_debug", "rank_zero_info", "rank_zero_only",
           "rank_zero_warn", "seed_everything", "summarize"]
