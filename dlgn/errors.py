"""The exceptions a user can cause; the CLI prints their message, never a traceback."""

from dlgn.train.checkpoint import CheckpointError
from dlgn.train.config import ConfigError
from dlgn.train.data import DatasetError
from dlgn.train.loop import RunError
from dlgn.compile.errors import CompileError
from dlgn.compile.netlist import NetlistError
from dlgn.sim.errors import SimError
from dlgn.boards.errors import BoardError

USER_ERRORS = (CheckpointError, ConfigError, DatasetError, RunError, CompileError, NetlistError, SimError, BoardError)
