"""The stages of a run, one file each. A stage is a plain function of the run :class:`~.load.Context`, the
config section(s) it needs and the results it builds on; it returns a frozen result (``results.py``) and
writes only its own files of the run folder (``artifacts.RunLayout``: ``baseline/``; ``pruned/``, shared by
prune and fine-tune; ``export/``; ``profile/``). ``pipeline.run`` decides which run, in which order, on which
rank, and records them. Two commands look at a recipe without running it: ``preflight.py`` (``compress
validate``: every check the stages would make, all problems listed) and ``inspect.py`` (``compress inspect``:
the groups, what the recipe keeps of each, what is protected and why, the predicted MACs)."""

from .baseline import baseline
from .export import export
from .finetune import finetune
from .load import Context, Inputs, check_dependencies, check_plan, load_inputs
from .profile import profile
from .prune import Latency, prune
from .results import Baseline, Exported, Profiled, Pruned, Results, Tuned, deployables, onnx_exports

__all__ = ["Baseline", "Context", "Exported", "Inputs", "Latency", "Profiled", "Pruned", "Results", "Tuned", "baseline",
           "check_dependencies", "check_plan", "deployables", "export", "finetune", "load_inputs", "onnx_exports", "profile",
           "prune"]
