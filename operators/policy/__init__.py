"""The pure policy engine: (previous state, metrics snapshot, spec, now) -> decision. No I/O inside."""

from operators.policy.engine import decide, initial_state
from operators.policy.state import Decision, DecisionEvent, EngineState, dump_state, load_state

__all__ = ["Decision", "DecisionEvent", "EngineState", "decide", "dump_state", "initial_state", "load_state"]
