"""hierfl: hierarchical federated learning on edge devices; simulated clock, real learning."""

from importlib.metadata import PackageNotFoundError, version

from hierfl.errors import HierflError, ScenarioError
from hierfl.results import Result
from hierfl.scenario import Scenario, load_scenario, parse_scenario
from hierfl.sim.runner import resume
from hierfl.sim.runner import simulate as run

try:
    __version__ = version("hierfl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "HierflError",
    "Result",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "parse_scenario",
    "resume",
    "run",
]
