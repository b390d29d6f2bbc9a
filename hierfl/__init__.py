"""hierfl: hierarchical federated learning on edge devices; simulated clock, real learning.

The public names are imported on first use (PEP 562), so ``import hierfl`` alone is cheap
and the command line can pause the garbage collector before the heavy imports
(``hierfl.launch``).
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("hierfl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

_WHERE = {  # public name -> (module, attribute)
    "HierflError": ("hierfl.errors", "HierflError"),
    "ScenarioError": ("hierfl.errors", "ScenarioError"),
    "Result": ("hierfl.results", "Result"),
    "Scenario": ("hierfl.scenario", "Scenario"),
    "load_result": ("hierfl.results", "read_result"),
    "load_scenario": ("hierfl.scenario", "load_scenario"),
    "parse_scenario": ("hierfl.scenario", "parse_scenario"),
    "resume": ("hierfl.sim.runner", "resume"),
    "run": ("hierfl.sim.runner", "simulate"),
}

__all__ = [
    "HierflError",
    "Result",
    "Scenario",
    "ScenarioError",
    "load_result",
    "load_scenario",
    "parse_scenario",
    "resume",
    "run",
]

if TYPE_CHECKING:
    from hierfl.errors import HierflError, ScenarioError
    from hierfl.results import Result
    from hierfl.results import read_result as load_result
    from hierfl.scenario import Scenario, load_scenario, parse_scenario
    from hierfl.sim.runner import resume
    from hierfl.sim.runner import simulate as run


def __getattr__(name: str):
    """Import a public name on first access, then keep it as a module attribute."""
    if name not in _WHERE:
        raise AttributeError(f"module 'hierfl' has no attribute {name!r}")
    module, attribute = _WHERE[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
