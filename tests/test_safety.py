"""Nothing a user has is lost, nothing broken passes silently, every bad input is one line
with exit code 2 (issue: safe run and build directories, integrity checks, clear errors).

The commands run as a user runs them (subprocesses) where it matters: interrupts, exit codes,
tracebacks."""

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dlgn.cli import main
from dlgn.safety import StagedDirectory, atomic_write_text

from buildtools import rehash_build

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--set", "data.name=digits", "--set", "model.width=400", "--set", "model.depth=2",
         "--set", "train.lr=0.05", "--set", "train.device=cpu"]


def dlgn(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "dlgn", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def one_line_error(proc, *needles):
    """The command failed with exit 2 and one line on stderr naming ``needles``, no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    # one message, the last line (a progress bar's last state may stand before it)
    err = lines[-1]
    assert err.startswith(("error: ", "dlgn ")) and sum("error: " in line for line in lines) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def snapshot(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}


def no_leftovers(parent):
    """No temporary files or staging directories anywhere under ``parent``."""
    left = [p for p in Path(parent).rglob("*") if ".dlgn-tmp" in p.name or ".dlgn-new-" in p.name
            or ".dlgn-old-" in p.name or p.name.endswith(".tmp")]
    assert not left, left


# ------------------------------------------------------------------ run directories

def test_force_never_replaces_a_foreign_directory(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    before = snapshot(foreign)
    proc = dlgn("train", *SMALL, "--set", "train.epochs=1", "--out", foreign, "--force")
    one_line_error(proc, "is not a dlgn run directory", "never replaces it, even with --force")
    assert snapshot(foreign) == before
    # the working directory itself
    proc = dlgn("train", *SMALL, "--set", "train.epochs=1", "--out", ".", "--force", cwd=foreign)
    one_line_error(proc, "not a dlgn run directory")
    assert snapshot(foreign) == before


def test_out_that_cannot_be_written_is_refused_before_loading_data(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_line_error(dlgn("train", *SMALL, "--out", afile), "is a file, not a directory")
    # a path under a file (and, for root as well, a read-only file system) cannot be created
    one_line_error(dlgn("train", *SMALL, "--out", afile / "run"), "cannot create the run directory")
    one_line_error(dlgn("train", *SMALL, "--out", "/proc/dlgn-run"), "cannot create the run directory")
    # checked before the dataset is read: a missing dataset would have been the error otherwise
    one_line_error(dlgn("train", "--set", "data.name=mnist", "--set", f"data.data_dir={tmp_path / 'none'}",
                        "--out", afile), "is a file")
    assert afile.read_text() == "x"


def _train_until(args, condition, *, signum=signal.SIGINT, timeout=300, cwd=None, command=None):
    """Start ``dlgn train ARGS`` (or ``command``), send ``signum`` once ``condition()`` holds;
    returns the finished process (returncode, stderr)."""
    cmd = command or [sys.executable, "-m", "dlgn", "train", *map(str, args)]
    # Ctrl-C as a terminal delivers it: a test suite started in the background by a shell inherits
    # SIGINT ignored (POSIX), and so would the command, which then never sees the interrupt.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, ("finished before the condition held", proc.communicate())
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)
    os.killpg(proc.pid, signum)
    out, err = proc.communicate(timeout=120)
    proc.stdout_text, proc.stderr_text = out, err
    return proc


def _staging(parent, name):
    return list(Path(parent).glob(f".{name}.dlgn-new-*"))


def test_a_handled_interrupt_exits_130_even_after_it_left_a_string_eval(tmp_path):
    # NumPy's and scikit-learn's imports evaluate strings; a Ctrl-C that left one made CPython end a
    # 'python -m' process by SIGINT (-2) after 'dlgn train' had cleaned up and returned 130
    body = "import sys\ntry:\n    exec('raise KeyboardInterrupt')\nexcept KeyboardInterrupt:\n    pass\n"
    (tmp_path / "bare.py").write_text(body + "sys.exit(0)\n")
    (tmp_path / "cleared.py").write_text(body + "from dlgn.cli import _interrupted_exit\n_interrupted_exit()\n"
                                         "sys.exit(0)\n")
    (tmp_path / "status.py").write_text(body + "from dlgn.cli import _interrupted_exit\nsys.exit(_interrupted_exit())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[1])])}

    def run(module):
        return subprocess.run([sys.executable, "-m", module], env=env, cwd=tmp_path).returncode

    assert run("bare") in (0, 130, -signal.SIGINT)  # not 0 where the interpreter has the quirk
    assert run("cleared") == 0
    assert run("status") == 130


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_old_run_survives_a_new_run_interrupted_in_epoch_one(digits_run, tmp_path, signum):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    before = snapshot(run)
    # a slow first epoch: batch 8 over the digits training split
    args = [*SMALL, "--set", "train.batch_size=8", "--set", "train.epochs=2", "--out", run, "--force"]
    proc = _train_until(args, lambda: bool(_staging(tmp_path, "run")) and
                        any((s / "config.toml").is_file() for s in _staging(tmp_path, "run")), signum=signum)
    assert snapshot(run) == before
    if signum == signal.SIGINT:
        assert proc.returncode == 130, proc.stderr_text[-3000:]
        assert "interrupted before the first epoch finished" in proc.stderr_text
        assert f"{run} still holds the earlier run, unchanged" in proc.stderr_text
        assert "Traceback" not in proc.stderr_text
        assert not _staging(tmp_path, "run")
    # the old run still resumes, compiles, and a new --force run then replaces it (and cleans up)
    assert main(["train", "--resume", str(run)]) == 0
    assert main(["train", *SMALL, "--set", "train.epochs=1", "--out", str(run), "--force"]) == 0
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1
    no_leftovers(tmp_path)


def test_a_swallowed_interrupt_still_stops_the_run_before_it_replaces_the_old_one(digits_run, tmp_path, monkeypatch,
                                                                                  capsys):
    """A Ctrl-C whose KeyboardInterrupt is lost inside library code (C code that clears a pending
    error) is remembered: the run stops at its next step with exit 130 and the old run stays whole
    (seen once in the suite, the command finished and replaced the old run)."""
    import dlgn.train.loop as loop

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    before = snapshot(run)
    real = loop.prepare_data

    def prepare_and_swallow(config):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here and its KeyboardInterrupt is lost
        except KeyboardInterrupt:
            pass
        return real(config)

    monkeypatch.setattr(loop, "prepare_data", prepare_and_swallow)
    # Python's own SIGINT handling, as in a dlgn process (libraries loaded by earlier tests may
    # have replaced it in this one; the latch is installed only over Python's default handler)
    earlier = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main(["train", *SMALL, "--set", "train.epochs=2", "--out", str(run), "--force"]) == 130
        assert "still holds the earlier run, unchanged" in capsys.readouterr().err
        assert snapshot(run) == before
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back
        no_leftovers(tmp_path)
        # without the swallow the next run goes through: nothing stays latched
        monkeypatch.setattr(loop, "prepare_data", real)
        assert main(["train", *SMALL, "--set", "train.epochs=1", "--out", str(run), "--force"]) == 0
    finally:
        signal.signal(signal.SIGINT, earlier)


def test_interrupted_make_train_continues_with_make_train(tmp_path):
    """`make train`, Ctrl-C after the first checkpoint, `make train` again: the same model as
    one uninterrupted run."""
    config = tmp_path / "small.toml"
    config.write_text('[data]\nname = "digits"\n[model]\nwidth = 400\ndepth = 2\n'
                      '[train]\nepochs = 6\nbatch_size = 16\nlr = 0.05\ndevice = "cpu"\n')
    run, straight = tmp_path / "run", tmp_path / "straight"
    make = ["make", "-s", "-C", str(ROOT), "train", f"CONFIG={config}", f"RUN={run}"]

    def first_epoch_done():
        try:
            return json.loads((run / "state.json").read_text())["epoch"] >= 1
        except (OSError, ValueError, KeyError):
            return False

    proc = _train_until(None, first_epoch_done, command=make)
    assert proc.returncode != 0 and "checkpointed after epoch" in proc.stderr_text, proc.stderr_text[-2000:]
    assert "Traceback" not in proc.stderr_text and not (run / "summary.json").exists()
    again = subprocess.run(make, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "continuing the unfinished run" in again.stdout
    assert main(["train", str(config), "--out", str(straight)]) == 0
    from dlgn.train.checkpoint import load_model

    a, _, _ = load_model(run)
    b, _, _ = load_model(straight)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert json.loads((run / "summary.json").read_text())["epochs"] == 6
    again = subprocess.run(make, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already trained" in again.stdout


def test_a_run_without_a_finished_epoch_is_replaced_without_force(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".dlgn-run").write_text('{"format": "dlgn-run", "version": 1}\n')
    (run / "config.toml").write_text("")
    assert main(["train", *SMALL, "--set", "train.epochs=1", "--out", str(run)]) == 0
    assert (run / "state.json").is_file()


def test_a_full_disk_leaves_nothing_half_written(digits_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    before = snapshot(run)
    import safetensors.torch

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    import dlgn.train.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    assert main(["train", "--resume", str(run), "--set", "train.epochs=5"]) == 2
    err = capsys.readouterr().err
    assert "the disk is full" in err and "Traceback" not in err
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k.name not in ("summary.json", "summary.txt")} == \
        {k: v for k, v in before.items() if k.name not in ("summary.json", "summary.txt")}
    no_leftovers(tmp_path)
    # a new run on a full disk leaves no staging directory either
    assert main(["train", *SMALL, "--set", "train.epochs=1", "--out", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()
    no_leftovers(tmp_path)


def test_atomic_write_removes_its_temporary_file_on_error(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    target.write_text("old")

    def broken_fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_staged_directory_swaps_whole_and_cleans_after_a_killed_process(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "a").write_text("old")
    dead = tmp_path / ".out.dlgn-new-999999999"  # no such process
    dead.mkdir()
    with StagedDirectory(final) as stage:
        (stage.path / "b").write_text("new")
        assert (final / "a").read_text() == "old"
    assert [p.name for p in final.iterdir()] == ["b"] and not dead.exists()
    with pytest.raises(RuntimeError):
        with StagedDirectory(final) as stage:
            (stage.path / "c").write_text("half")
            raise RuntimeError("build failed")
    assert [p.name for p in final.iterdir()] == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ------------------------------------------------------------------ broken models never pass

def _resave(run, name, tensors, epoch=None):
    """Write tensor file ``name`` of ``run`` with valid hashes (a consistent, deliberate edit) and
    record it in state.json, as if training had written it."""
    from safetensors import safe_open

    from dlgn.safety import sha256_file
    from dlgn.train.checkpoint import _atomic_save

    with safe_open(str(run / name), "pt") as f:
        meta = {k: v for k, v in (f.metadata() or {}).items() if k != "hashes"}
    if epoch is not None:
        meta["epoch"] = str(epoch)
    _atomic_save(tensors, run / name, meta)
    state = json.loads((run / "state.json").read_text())
    state["files"][name] = sha256_file(run / name)
    (run / "state.json").write_text(json.dumps(state))


def test_checkpoint_files_from_different_epochs_are_refused(digits_run, tmp_path):
    earlier = tmp_path / "earlier"
    assert main(["train", *SMALL, "--set", "train.epochs=1", "--out", str(earlier)]) == 0
    for name, message in (("optimizer.safetensors", "optimizer.safetensors is not the file state.json recorded"),
                          ("model.safetensors", "model.safetensors is not the file state.json recorded"),
                          ("test_scores.safetensors", "test_scores.safetensors is not the file state.json")):
        run = tmp_path / name
        shutil.copytree(digits_run, run)
        shutil.copy(earlier / name, run / name)
        one_line_error(dlgn("train", "--resume", run), message, "different epochs")
    # consistent hashes, different epochs: the epochs themselves are compared
    run = tmp_path / "mixed"
    shutil.copytree(digits_run, run)
    from safetensors.torch import load_file

    _resave(run, "optimizer.safetensors", load_file(str(earlier / "optimizer.safetensors")), epoch=1)
    one_line_error(dlgn("train", "--resume", run), "optimizer state is from epoch 1")
    run = tmp_path / "mixed_scores"
    shutil.copytree(digits_run, run)
    _resave(run, "test_scores.safetensors", load_file(str(earlier / "test_scores.safetensors")), epoch=1)
    one_line_error(dlgn("compile", run, "-o", tmp_path / "b"), "test_scores.safetensors is from epoch 1")


def test_non_finite_weights_are_refused_by_resume_and_compile(digits_run, tmp_path):
    from safetensors.torch import load_file

    for value in (math.nan, math.inf):
        run = tmp_path / f"run_{value}"
        shutil.copytree(digits_run, run)
        tensors = load_file(str(run / "model.safetensors"))
        tensors["layers.1.weight"][3, 1] = value
        _resave(run, "model.safetensors", tensors)
        one_line_error(dlgn("train", "--resume", run, "--set", "train.epochs=5"), "layers.1.weight holds 1 non-finite")
        one_line_error(dlgn("compile", run, "-o", tmp_path / "b"), "non-finite values")
        assert not (tmp_path / "b").exists()


def test_a_sign_flipped_model_is_refused_by_compile(digits_run, tmp_path):
    """Flipping every weight's sign flips every IWP table bit (sin01); the checkpoint is
    re-saved with valid hashes, so only the recorded per-sample scores can tell."""
    from safetensors.torch import load_file

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    tensors = load_file(str(run / "model.safetensors"))
    for name in tensors:
        if name.endswith(".weight"):
            tensors[name] = -tensors[name]
    _resave(run, "model.safetensors", tensors)
    err = one_line_error(dlgn("compile", run, "-o", tmp_path / "b"), "verification failed",
                         "vs the scores recorded by dlgn train", "restore the run or retrain")
    assert "sample 0, class" in err or "sample " in err
    assert not (tmp_path / "b").exists()


def test_training_that_diverges_stops_with_a_clear_message(tmp_path):
    run = tmp_path / "run"
    # a temperature so small that the logits overflow to inf: the loss is not a number at step 1
    proc = dlgn("train", *SMALL, "--set", "model.tau=1e-38", "--set", "train.epochs=3", "--out", run)
    one_line_error(proc, "training diverged: the loss became nan at epoch 1, step 1", "Lower train.lr")
    assert not (run / "model.safetensors").exists()


# ------------------------------------------------------------------ build directories

@pytest.fixture(scope="module")
def small_build(digits_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("safety") / "build"
    assert main(["compile", str(digits_run), "-o", str(out)]) == 0
    return out


def test_recompile_replaces_the_whole_build_directory(digits_run, small_build, tmp_path):
    build = tmp_path / "build"
    shutil.copytree(small_build, build)
    (build / "sim_report.json").write_text("{}")
    (build / "ulx3s-85f").mkdir()
    (build / "ulx3s-85f" / "hw_report.json").write_text("{}")
    other = tmp_path / "other_run"
    assert main(["train", *SMALL, "--set", "model.width=200", "--set", "train.epochs=1", "--out", str(other)]) == 0
    assert main(["compile", str(other), "-o", str(build)]) == 0
    assert sorted(p.name for p in build.iterdir()) == sorted(p.name for p in small_build.iterdir()
                                                            if p.name != "sim_report.json")
    report = json.loads((build / "compile_report.json").read_text())
    assert report["source"] == str(other)
    no_leftovers(tmp_path)


def test_compile_never_replaces_a_foreign_directory(digits_run, tmp_path):
    foreign = tmp_path / "src"
    foreign.mkdir()
    (foreign / "main.c").write_text("int main;")
    one_line_error(dlgn("compile", digits_run, "-o", foreign), "not a dlgn build directory", "choose another -o")
    assert (foreign / "main.c").read_text() == "int main;"


def test_an_interrupted_compile_leaves_the_old_build(digits_run, small_build, tmp_path, monkeypatch, capsys):
    build = tmp_path / "build"
    shutil.copytree(small_build, build)
    before = snapshot(build)
    import dlgn.compile.build as compile_build

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compile_build, "emit_verilog", interrupted)
    assert main(["compile", str(digits_run), "-o", str(build)]) == 130
    assert "the build directory was not changed" in capsys.readouterr().err
    assert snapshot(build) == before
    no_leftovers(tmp_path)


def test_a_build_whose_parts_disagree_is_refused(small_build, tmp_path):
    from dlgn.compile.build import compile_netlist
    from dlgn.compile.synthetic import random_netlist

    other = tmp_path / "other"
    compile_netlist(random_netlist(in_bits=24, widths=(30, 20), classes=10, seed=1), other, log=lambda *_: None)
    for name in ("dlgn_core.v", "netlist.json", "dlgn_core.il"):
        build = tmp_path / f"mixed_{name}"
        shutil.copytree(small_build, build)
        shutil.copy(other / name, build / name)
        for command in (["sim", build, "--samples", "5", "--random", "5"],
                        ["bitstream", build, "--board", "ulx3s-25f", "-o", tmp_path / "bit"]):
            one_line_error(dlgn(*command), f"{name} is not the file this build's compile_report.json lists")


def test_freq_outside_the_pll_range_fails_at_once(small_build, tmp_path, capsys):
    from dlgn.boards.bitstream import build_bitstream
    from dlgn.boards.errors import BoardError

    for freq, message in ((5000, "outside what the ECP5 PLL can make (3.125 to 400 MHz)"),
                          (1, "outside what the ECP5 PLL can make"), (math.nan, "positive number of MHz"),
                          (math.inf, "positive number of MHz"), (0, "positive number of MHz"),
                          (-25, "positive number of MHz")):
        start = time.perf_counter()
        with pytest.raises(BoardError, match=message.replace("(", r"\(").replace(")", r"\)")):
            build_bitstream(small_build, "ulx3s", tmp_path / "bit", freq=freq, log=lambda *_: None)
        assert time.perf_counter() - start < 5
    assert main(["bitstream", str(small_build), "--board", "icebreaker", "--freq", "48"]) == 2
    assert "no iCE40 PLL" in capsys.readouterr().err
    assert main(["bitstream", str(small_build), "--board", "ulx3s", "--freq", "nan"]) == 2
    assert "positive number of MHz" in capsys.readouterr().err
    assert not (tmp_path / "bit").exists()


# ------------------------------------------------------------------ one line, exit code 2

def _idx_set(directory, train_shape, test_shape, corrupt=None):
    from dlgn.train.data import write_idx
    import numpy as np

    directory.mkdir()
    rng = np.random.default_rng(0)
    for prefix, shape in (("train", train_shape), ("t10k", test_shape)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (20, *shape), dtype=np.uint8))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, 20, dtype=np.uint8))
    if corrupt:
        path = directory / corrupt
        raw = path.read_bytes()
        path.write_bytes(raw[:12] + bytes(b ^ 0x5A for b in raw[12:]))
    return directory


def test_every_bad_input_is_one_line_with_exit_code_2(tmp_path, small_build):
    out = tmp_path / "out"
    mnist = ["--set", "data.name=mnist", "--set", f"data.data_dir={tmp_path / 'nowhere'}"]
    cases = [
        # checked before any data is loaded: the dataset directory does not even exist
        (["train", *mnist, "--set", "data.thresholds=300", "--out", out], "data.thresholds = 300 is more than"),
        (["train", *mnist, "--set", "model.width=1001", "--out", out], "multiple of mnist's 10 classes"),
        (["train", *mnist, "--set", "train.lr=nan", "--out", out], "train.lr must be a finite number"),
        (["train", *mnist, "--set", "train.lr=inf", "--out", out], "train.lr must be a finite number"),
        (["train", *mnist, "--set", "model.tau=nan", "--out", out], "model.tau must be a finite number"),
        (["train", *mnist, "--set", "train.gumbel_tau=-inf", "--out", out], "train.gumbel_tau must be a finite"),
        (["train", *mnist, "--set", "train.lr=1e39", "--out", out], "does not fit a float32"),
        (["train", *mnist, "--set", "train.lr=5", "--out", out], "train.lr = 5.0 is more than 1"),
        (["train", "--set", "data.name=digits", "--set", "data.thresholds=17", "--out", out], "values 0..16"),
        (["train", "--set", "data.name=breast-cancer", "--set", "model.width=1001", "--out", out], "2 classes"),
        (["train", "--out", out, "--resume", tmp_path / "other"], "--resume RUN_DIR writes into RUN_DIR"),
        (["train"], "pass --out RUN_DIR"),
        (["train", "configs/digits.toml", "--resume", out], "do not pass CONFIG as well"),
        (["train", "--resume", tmp_path / "none"], "nothing to resume"),
        (["infer", small_build, "--port", "loop://", "--samples", "0"], "--samples must be a positive integer"),
        (["sim", small_build, "--samples", "-3"], "--samples must be a non-negative integer"),
        (["compile", tmp_path / "none", "-o", out], "neither a run directory nor a netlist file"),
        (["compile", small_build / "compile_report.json", "-o", out], "not a dlgn netlist"),
        (["bitstream", small_build, "--board", "ulx3s", "--bist-samples", "0"], "--bist-samples must be at least 1"),
        (["bitstream", tmp_path, "--board", "ulx3s"], "not a dlgn build directory"),
    ]
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[model]\n")
    cases.append((["train", binary, "--out", out], "is not a text (UTF-8) TOML file"))
    for args, message in cases:
        one_line_error(dlgn(*args, cwd=ROOT), message)
    assert not out.exists()
    # data files a user may point at
    for name, train_shape, test_shape, corrupt, message in [
        ("sizes", (28, 28), (20, 20), None, "test images are 20 x 20, training images 28 x 28"),
        ("gzip", (28, 28), (28, 28), "train-images-idx3-ubyte.gz", "cannot read IDX file"),
    ]:
        directory = _idx_set(tmp_path / name, train_shape, test_shape, corrupt)
        one_line_error(dlgn("train", "--set", "data.name=mnist", "--set", f"data.data_dir={directory}",
                            "--set", "model.width=100", "--set", "train.epochs=1", "--out", tmp_path / f"r_{name}"),
                       message)
        assert not (tmp_path / f"r_{name}").exists()
    # argparse's own errors keep their exit code 2
    assert dlgn("compile").returncode == 2 and dlgn("nosuchcommand").returncode == 2


def test_interrupted_commands_say_what_was_kept(small_build, tmp_path, monkeypatch, capsys):
    import dlgn.boards.bitstream as bitstream
    import dlgn.sim.check as check

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(check, "run_cocotb", interrupted)
    build = tmp_path / "b"
    shutil.copytree(small_build, build)
    assert main(["sim", str(build), "--samples", "3", "--random", "3"]) == 130
    err = capsys.readouterr().err
    assert "no simulation report was written" in err and "epoch" not in err
    assert not (build / "sim_report.json").exists()
    monkeypatch.setattr(bitstream, "_core", interrupted)
    assert main(["bitstream", str(build), "--board", "ulx3s-25f", "--no-verify"]) == 130
    err = capsys.readouterr().err
    assert "the board directory was not changed" in err and "epoch" not in err
    assert not (build / "ulx3s-25f").exists()
    no_leftovers(tmp_path)


def test_version_and_help_answer_without_torch():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "dlgn", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout
    assert " torch" not in proc.stderr and "numpy" not in proc.stderr
    proc = dlgn("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("dlgn ")
