"""The exceptions a user can cause; the CLI prints their message, never a traceback."""

from dlgn.train.checkpoint import CheckpointError
from dlgn.train.config import ConfigError
from dlgn.train.data import DatasetError
from dlgn.train.loop import RunError

USER_ERRORS = (CheckpointError, ConfigError, DatasetError, RunError)
