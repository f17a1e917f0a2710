"""MLflow helpers: runs, lineage, datasets, registry, and the report renderers.

The renderers (:mod:`rlsd.tracking.plots`, :mod:`rlsd.tracking.credit_view`) are pure: they
write PNG/HTML files and never call MLflow, so reports can be built and tested offline.
matplotlib is imported only when a figure is drawn, keeping ``import rlsd.tracking`` cheap.
"""

from rlsd.tracking.credit_view import (
    CreditSample,
    read_credit_samples,
    render_credit_html,
    write_credit_samples,
)
from rlsd.tracking.plots import (
    load_metric_rows,
    phase_times_figure,
    plot_phase_times,
    plot_training_curves,
    training_curves_figure,
)

__all__ = [
    "CreditSample",
    "load_metric_rows",
    "phase_times_figure",
    "plot_phase_times",
    "plot_training_curves",
    "read_credit_samples",
    "render_credit_html",
    "training_curves_figure",
    "write_credit_samples",
]
