"""``lightning.pytorch.core.saving``: reading and writing hyperparameter files."""

from ember.hparams_file import (
    convert,
    load_hparams_from_tags_csv,
    load_hparams_from_yaml,
    save_hparams_to_tags_csv,
    save_hparams_to_yaml,
    update_hparams,
)

__all__ = ["convert", "load_hparams_from_tags_csv", "load_hparams_from_yaml", "save_hparams_to_tags_csv",
           "save_hparams_to_yaml", "update_hparams"]
