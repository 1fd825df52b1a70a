"""The build directory: what ``dlgn compile`` writes and every later stage reads (DESIGN §3).

A build directory holds ``netlist.json``, ``dlgn_core.il``, ``dlgn_core.v`` (unless compiled with
``--no-verilog``), ``compile_report.json`` and ``compile_summary.txt``. The report records the
SHA-256 of each file (``files_sha256``) and the build's identity, ``build_id`` (the netlist's
SHA-256); :func:`load_build` refuses a directory whose files are not the ones the report lists, so
a netlist from one compile and Verilog from another can never be simulated or built together.
Reports written by later stages (``sim_report.json``, ``hw_report.json``) record the ``build_id``
they checked.

This is the one module that loads and validates a build directory, finds the trained run it came
from and that run's test set; ``dlgn sim``, ``dlgn bitstream`` and ``dlgn infer`` use it.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlgn.safety import sha256_file

from . import netlist as ir
from .errors import CompileError

__all__ = ["BuildDirError", "Build", "TestSet", "load_build", "is_build_dir", "find_run_dir", "load_test_set",
           "REPORT_FILE", "REPORT_FORMAT", "NETLIST_FILE", "SUMMARY_FILE"]

NETLIST_FILE = "netlist.json"
REPORT_FILE = "compile_report.json"
SUMMARY_FILE = "compile_summary.txt"
REPORT_FORMAT = "dlgn-compile-report"


class BuildDirError(CompileError):
    """A build directory that is missing, damaged, stale or inconsistent; the message says what to do."""


@dataclass
class Build:
    """A ``dlgn compile`` build directory, read and checked."""

    path: Path
    report: dict
    netlist: "ir.Netlist"

    @property
    def build_id(self):
        """SHA-256 of the build's ``netlist.json``: what later reports name as the build they checked."""
        return self.report["build_id"]

    @property
    def top(self):
        return self.report.get("top", "dlgn_core")

    @property
    def verilog(self):
        return self.path / self.report["files"]["verilog"]

    @property
    def rtlil(self):
        return self.path / self.report["files"]["rtlil"]

    @property
    def encoder(self):
        """True when the core takes raw features (``in_features``), False for input bits."""
        return bool(self.report["encoder"])

    @property
    def input_port(self):
        return "in_features" if self.encoder else "in_bits"

    @property
    def latency(self):
        return int(self.report["latency_cycles"])

    @property
    def classes(self):
        return int(self.report["classes"])

    @property
    def score_width(self):
        return int(self.report["score_width"])


def is_build_dir(path):
    """True when ``path`` holds a dlgn compile report (the only kind of directory ``dlgn compile`` replaces)."""
    try:
        return json.loads((Path(path) / REPORT_FILE).read_text()).get("format") == REPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_build(build_dir, *, need_verilog=True):
    """Read and check ``build_dir``; raise :class:`BuildDirError` with what to do when it is not a
    usable, consistent build."""
    path = Path(build_dir)
    report_path = path / REPORT_FILE
    if not path.is_dir():
        raise BuildDirError(f"{path} is not a directory; pass the build directory that 'dlgn compile RUN_DIR -o "
                            f"BUILD_DIR' wrote")
    if not report_path.is_file():
        raise BuildDirError(f"{path} has no {REPORT_FILE}: not a dlgn build directory (run 'dlgn compile' first)")
    try:
        report = json.loads(report_path.read_text())
        files, ports = report["files"], report["ports"]
        missing = [k for k in ("latency_cycles", "classes", "score_width", "encoder") if k not in report]
        if missing:
            raise KeyError(", ".join(missing))
        if not isinstance(files, dict) or not isinstance(ports, dict):
            raise TypeError("files and ports must be objects")
    except (ValueError, KeyError, TypeError) as e:
        raise BuildDirError(f"{report_path} is damaged (missing or unreadable: {e}); recompile the run") from None
    hashes = report.get("files_sha256")
    if not isinstance(hashes, dict) or "build_id" not in report:
        raise BuildDirError(f"{path} was compiled by an older dlgn that did not record its files' hashes, so its parts "
                            f"cannot be checked against each other; recompile the run")
    for role in ("netlist", "rtlil", "verilog"):
        name = files.get(role)
        if not name:
            continue
        file = path / name
        if not file.is_file():
            raise BuildDirError(f"{path} lacks {name}; recompile the run")
        if hashes.get(name) != sha256_file(file):
            raise BuildDirError(f"{path}: {name} is not the file this build's {REPORT_FILE} lists (SHA-256 differs): "
                                f"it comes from another compile or was edited; recompile the run")
    if need_verilog and not files.get("verilog"):
        raise BuildDirError(f"{path} was compiled with --no-verilog; recompile without it")
    netlist = ir.load(path / files.get("netlist", NETLIST_FILE))
    build = Build(path, report, netlist)
    if netlist.classes != build.classes or netlist.score_width != build.score_width:
        raise BuildDirError(f"{path}: netlist.json and {REPORT_FILE} disagree (classes or score width); "
                            f"recompile the run")
    width = ports.get(build.input_port)
    expected = netlist.encoding.features * netlist.encoding.feature_width if build.encoder else netlist.in_bits
    if width != expected:
        raise BuildDirError(f"{path}: port {build.input_port} is {width} bits wide, the netlist needs {expected}; "
                            f"recompile the run")
    return build


def find_run_dir(build, run_dir=None):
    """The trained run the build came from: ``run_dir`` if given, else the one recorded by the
    compiler (absolute, or relative to the current directory or to the build directory).
    ``None`` when the build was compiled from a bare netlist file and no run is given."""
    if run_dir is not None:
        candidates = [Path(run_dir)]
    else:
        recorded = build.netlist.source.get("run_dir") or build.report.get("source")
        if not recorded or Path(recorded).is_file():
            return None
        candidates = [Path(recorded), build.path / recorded]
    for candidate in candidates:
        if (candidate / "summary.json").is_file():
            return candidate.resolve()
    raise BuildDirError(f"cannot find the trained run of {build.path} (looked for summary.json in "
                        f"{', '.join(str(c) for c in dict.fromkeys(candidates))}); pass --run RUN_DIR, or --samples 0 "
                        f"to use random inputs only")


@dataclass
class TestSet:
    """The test split of a trained run: raw features ``x`` ``[N, F]`` and labels ``y`` (the first
    ``N`` of ``size``), the run's discrete test accuracy, and the discrete per-class scores the
    trained model recorded for these samples (``None`` for a run that recorded none)."""

    __test__ = False  # not a pytest class

    x: np.ndarray
    y: np.ndarray
    trained_accuracy: float
    size: int
    trained_scores: "np.ndarray | None"


def load_test_set(run_dir, samples=None):
    """The test set of ``run_dir`` (its first ``samples`` samples; all when ``None``)."""
    from dlgn.train.checkpoint import CheckpointError, load_test_scores, read_state
    from dlgn.train.config import ConfigError, load_config
    from dlgn.train.data import load_dataset

    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
        trained = float(summary["test_acc_discrete"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BuildDirError(f"{summary_path} is unreadable or lacks test_acc_discrete ({e}); retrain the run") from None
    try:
        config = load_config(run_dir / "config.toml")
        recorded = None
        if (run_dir / "state.json").is_file():
            recorded = load_test_scores(run_dir, read_state(run_dir)["epoch"])
    except (ConfigError, CheckpointError) as e:
        raise BuildDirError(f"the trained run {run_dir} is damaged: {e}") from None
    data_cfg = config["data"]
    data = load_dataset(data_cfg["name"], data_cfg.get("data_dir") or None, data_cfg["val_fraction"],
                        config["train"]["seed"])
    x, y = data.x_test, data.y_test
    if recorded is not None and len(recorded) != len(x):
        raise BuildDirError(f"{run_dir} recorded scores for {len(recorded)} test samples, but {data_cfg['name']}'s "
                            f"test set has {len(x)}: the dataset changed since training; retrain the run")
    if samples is not None:
        if samples > len(x):
            raise BuildDirError(f"--samples {samples} is more than the {len(x)} samples of {data_cfg['name']}'s "
                                f"test set")
        x, y = x[:samples], y[:samples]
        recorded = None if recorded is None else recorded[:samples]
    return TestSet(np.ascontiguousarray(x), np.asarray(y, dtype=np.int64), trained, len(data.x_test),
                   None if recorded is None else recorded.numpy().astype(np.int64))
