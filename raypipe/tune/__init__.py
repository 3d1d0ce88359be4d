"""Ray Tune sweeps over the papers' published grids (``tune_spaces/*.yaml``)."""
from raypipe.tune.spaces import SPACES_DIR, SchedulerSpec, SpaceError, TuneSpace, load_space

__all__ = ["SPACES_DIR", "SchedulerSpec", "SpaceError", "TuneSpace", "load_space"]
