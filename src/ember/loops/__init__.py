"""The loops: fit and evaluation, their settings, hook dispatch, self.log's results, precision, data, preemption."""
