"""``dlgn compile``: run dir -> netlist -> passes -> Amaranth core -> RTLIL/Verilog + reports.

Every step is checked against the one before it with the golden model (DESIGN §5): the
discretized netlist against the trained network in evaluation mode, and every pass against the
discretized netlist, on the dataset's test split (when it can be loaded) and on random inputs.
"""

import json
import time
from pathlib import Path

import numpy as np

from dlgn.safety import StagedDirectory, atomic_write_text, sha256_file

from . import netlist as ir
from .builddir import NETLIST_FILE, REPORT_FILE, REPORT_FORMAT, SUMMARY_FILE, is_build_dir
from .errors import CompileError
from .estimate import encoder_size
from .golden import GoldenModel
from .lower import TOP_NAME, build_core, emit_rtlil, emit_verilog, flip_flops, port_widths
from .passes import PASS_NAMES, optimize

__all__ = ["CompileError", "compile_run", "compile_netlist", "first_mismatch", "NETLIST_FILE", "REPORT_FILE",
           "SUMMARY_FILE", "LUT_SIZES"]

REPORT_VERSION = 1
LUT_SIZES = (4, 6)
RANDOM_SAMPLES = 4096
_TORCH_BATCH = 2000  # samples per PyTorch forward (bounds its memory on large nets)


def first_mismatch(expected, got, stage):
    """``None`` if the score arrays are equal, else a message naming the first differing sample
    and class and the stage that differs."""
    expected, got = np.asarray(expected), np.asarray(got)
    if expected.shape == got.shape and (expected == got).all():
        return None
    if expected.shape != got.shape:
        return f"{stage}: scores have shape {got.shape}, expected {expected.shape}"
    sample, cls = map(int, np.argwhere(expected != got)[0])
    return (f"{stage}: sample {sample}, class {cls}: score {int(got[sample, cls])}, "
            f"expected {int(expected[sample, cls])}")


def _check_options(lut_size, pipeline_every, output_every):
    if lut_size not in LUT_SIZES:
        raise CompileError(f"--lut-size must be one of {', '.join(map(str, LUT_SIZES))} "
                           f"(4 for ECP5/iCE40, 6 for LUT6 parts), not {lut_size!r}")
    for name, value in (("--pipeline-every", pipeline_every), ("--output-every", output_every)):
        if not isinstance(value, int) or value < 0:
            raise CompileError(f"{name} must be a non-negative integer (0: combinational), not {value!r}")


def _test_bits(info, encoder, log):
    """Encoded test split of the run's dataset, or ``(None, reason)``."""
    from dlgn.train.data import DatasetError, load_dataset

    data_cfg = info["config"]["data"]
    try:
        data = load_dataset(info["dataset"], data_cfg.get("data_dir") or None, data_cfg.get("val_fraction", 0.1),
                            info["config"]["train"].get("seed", 0))
    except DatasetError as e:
        log(f"  note: test split not available ({e}); checking on random inputs only")
        return None, str(e)
    return encoder.encode(data.x_test).numpy(), None


def _check_recorded_scores(run_path, info, netlist, test_bits):
    """The discretized netlist must give, on every test sample, the per-class scores that
    ``dlgn train`` recorded for this epoch: a checkpoint that was altered after training (its
    own hashes recomputed) or damaged in a way that still loads is refused here."""
    from dlgn.train.checkpoint import CheckpointError, load_test_scores

    try:
        recorded = load_test_scores(run_path, info["epoch"])
    except CheckpointError as e:
        raise CompileError(str(e)) from None
    if recorded is None:
        return "skipped: the run recorded no test scores (trained by an older dlgn)"
    if test_bits is None:
        return "skipped: the test split is not available"
    if len(recorded) != len(test_bits):
        raise CompileError(f"{run_path} recorded scores for {len(recorded)} test samples, the test set has "
                           f"{len(test_bits)}: the dataset changed since training; retrain the run")
    message = first_mismatch(recorded.numpy(), GoldenModel(netlist).scores(test_bits),
                             "golden model of the discretized netlist vs the scores recorded by dlgn train")
    if message:
        raise CompileError(f"verification failed: {message}; the checkpoint is not the model that was trained "
                           f"(altered or damaged): restore the run or retrain")
    return {"test_samples": len(test_bits), "equal": True}


def compile_run(run_dir, build_dir, *, lut_size=4, pipeline_every=2, output_every=None, encoder=False,
                passes=PASS_NAMES, verify=True, verilog=True, prove=True, log=print):
    """Compile a trained run directory (or a netlist file) into ``build_dir``; returns the report.
    ``prove``: finish with ``dlgn prove`` on the new build (:mod:`dlgn.compile.prove`)."""
    output_every = (2 if pipeline_every else 0) if output_every is None else output_every
    _check_options(lut_size, pipeline_every, output_every)
    run_path = Path(run_dir)
    timings = {}
    start = time.perf_counter()
    check_bits, checks = None, {}
    if run_path.is_file():
        netlist = ir.load(run_path)
        log(f"loaded {run_path}: {len(netlist.gates)} gates")
        checks["trained_model"] = "skipped: compiling a netlist file"
    else:
        from .discretize import netlist_from_run

        if not run_path.is_dir():
            raise CompileError(f"{run_path} is neither a run directory nor a netlist file")
        netlist, net, thermometer, info = netlist_from_run(run_path)
        log(f"discretized {run_path}: {len(netlist.gates)} gates in {netlist.depth} levels, "
            f"{netlist.classes} classes, {netlist.in_bits} input bits")
        if verify:
            import torch

            test_bits, reason = _test_bits(info, thermometer, log)
            rng = np.random.default_rng(0)
            random_bits = (rng.random((RANDOM_SAMPLES, netlist.in_bits)) < 0.5).astype(np.uint8)
            check_bits = random_bits if test_bits is None else np.concatenate([test_bits, random_bits])
            expected = np.concatenate([net.scores(torch.from_numpy(check_bits[i:i + _TORCH_BATCH])).numpy()
                                       for i in range(0, len(check_bits), _TORCH_BATCH)])
            message = first_mismatch(expected, GoldenModel(netlist).scores(check_bits),
                                     "golden model of the discretized netlist vs trained model (eval mode)")
            if message:
                raise CompileError(f"verification failed: {message}")
            checks["trained_model"] = {"test_samples": 0 if test_bits is None else len(test_bits),
                                       "random_samples": RANDOM_SAMPLES, "equal": True}
            if reason:
                checks["trained_model"]["test_split"] = f"unavailable: {reason}"
            log(f"  golden model == trained model on {len(check_bits)} inputs "
                f"({checks['trained_model']['test_samples']} test samples)")
            checks["recorded_scores"] = _check_recorded_scores(run_path, info, netlist, test_bits)
            if isinstance(checks["recorded_scores"], dict):
                log(f"  golden model == the scores dlgn train recorded, on all {len(test_bits)} test samples")
            else:
                log(f"  note: recorded scores {checks['recorded_scores']}")
    timings["load_seconds"] = round(time.perf_counter() - start, 3)
    report = compile_netlist(netlist, build_dir, lut_size=lut_size, pipeline_every=pipeline_every,
                             output_every=output_every, encoder=encoder, passes=passes, verify=verify,
                             check_bits=check_bits, verilog=verilog, log=log, checks=checks, timings=timings,
                             source=str(run_path), prove=prove)
    return report


def compile_netlist(netlist, build_dir, *, lut_size=4, pipeline_every=2, output_every=2, encoder=False,
                    passes=PASS_NAMES, verify=True, check_bits=None, verilog=True, log=print, checks=None,
                    timings=None, source=None, prove=False):
    """Optimize ``netlist``, lower it and write the build directory; returns the report dict.

    ``prove``: prove the emitted Verilog equal to the netlist (``dlgn prove``, which writes
    ``prove_report.json`` into the build) before the build is swapped in; a failed proof keeps
    the unproved build as ``BUILD_DIR-failed`` (with its counterexample) and raises
    :class:`~dlgn.compile.prove.ProveError`; a Yosys step that runs past
    :data:`~dlgn.compile.prove.COMPILE_STEP_TIMEOUT` records ``"result": "timeout"`` and the build
    is written (``dlgn prove BUILD_DIR`` then proves it without a limit), and so is one where Yosys
    stopped without a verdict (``"result": "unfinished"``)."""
    _check_options(lut_size, pipeline_every, output_every)
    if encoder and netlist.encoding is None:
        raise CompileError("--encoder needs a netlist with a thermometer input encoding; this one has none")
    final = Path(build_dir)
    if final.exists() and not final.is_dir():
        raise CompileError(f"{final} exists and is not a directory; choose another -o")
    if final.is_dir() and any(final.iterdir()) and not is_build_dir(final):
        raise CompileError(f"{final} is not empty and is not a dlgn build directory (no {REPORT_FILE}); dlgn compile "
                           f"never replaces it: choose another -o")
    stage = StagedDirectory.created(final, CompileError, "-o")
    try:
        report = _write_build(netlist, stage.path, lut_size, pipeline_every, output_every, encoder, passes, verify,
                              check_bits, verilog, log, checks, timings, source)
        if prove and verilog:
            _prove_stage(stage, final, log)
        elif prove:
            log("  proof skipped: --no-verilog leaves no Verilog to prove")
        stage.commit()
    finally:
        stage.discard()
    log(f"wrote {final}: {report['gates']} gates, ~{report['estimated_luts']} LUT{lut_size}, depth {report['depth']}, "
        f"latency {report['latency_cycles']} cycles")
    return report


def _prove_stage(stage, final, log):
    """``dlgn prove`` on the staged build (named as ``final`` in messages); on failure the staged
    build is kept as ``final-failed`` for its counterexample and logs."""
    import os
    import shutil

    from . import prove as prover
    from .builddir import load_build

    build = load_build(stage.path)
    try:
        prover.prove_loaded_build(build, log=log, display_path=final.resolve(), timeout=prover.COMPILE_STEP_TIMEOUT)
    except (prover.ProveTimeout, prover.ProveUnfinished) as e:
        # nothing was shown either way: the build is written, and the report says so
        timeout = isinstance(e, prover.ProveTimeout)
        shutil.rmtree(stage.path / prover.PROVE_DIR, ignore_errors=True)
        note = (f"not finished: {e}; nothing was shown either way; run 'dlgn prove {final}' (no time limit) "
                f"to prove this build" if timeout else f"not finished: {e}; nothing was shown either way")
        atomic_write_text(stage.path / prover.REPORT_FILE, json.dumps({
            "format": prover.REPORT_FORMAT, "version": prover.REPORT_VERSION, "build_dir": str(final.resolve()),
            "build_id": build.build_id, "result": "timeout" if timeout else "unfinished", "passed": False,
            "note": note}, indent=1) + "\n")
        log(f"  proof {note}")
    except prover.ProveError as e:
        failed = final.resolve().with_name(final.resolve().name + "-failed")
        if failed.exists():
            shutil.rmtree(failed)
        os.replace(stage.path, failed)
        message = str(e).replace(str(final.resolve()), str(failed))
        raise prover.ProveError(f"{message} (the unproved build is kept in {failed}; {final} was not "
                                f"changed)") from None


def _write_build(netlist, build, lut_size, pipeline_every, output_every, encoder, passes, verify, check_bits, verilog,
                 log, checks, timings, source):
    """Write every file of a build into the (staging) directory ``build``; returns the report."""
    checks = dict(checks or {})
    timings = dict(timings or {})

    check = None
    if verify:
        if check_bits is None:
            rng = np.random.default_rng(0)
            check_bits = (rng.random((RANDOM_SAMPLES, netlist.in_bits)) < 0.5).astype(np.uint8)
        reference = GoldenModel(netlist).scores(check_bits)

        def check(name, current):
            message = first_mismatch(reference, GoldenModel(current).scores(check_bits),
                                     f"golden model after pass {name}")
            if message:
                raise CompileError(f"verification failed: {message}")

    start = time.perf_counter()
    optimized, records = optimize(netlist, lut_size, passes, check)
    timings["passes_and_checks_seconds"] = round(time.perf_counter() - start, 3)
    for r in records[1:]:
        log(f"  {r['name']:<12} {r['gates']:>8} gates, depth {r['depth']}")
    if verify:
        checks["passes"] = {"samples": len(check_bits), "equal": True}
        log(f"  every pass == discretized netlist on {len(check_bits)} inputs")

    optimized.source = dict(optimized.source, passes=list(passes), lut_size=lut_size)
    ir.save(optimized, build / NETLIST_FILE)

    log(f"  lowering {len(optimized.gates)} gates to Amaranth, writing {TOP_NAME}.il")
    start = time.perf_counter()
    try:
        core = build_core(optimized, pipeline_every=pipeline_every, output_every=output_every, encoder=encoder)
    except ValueError as e:
        raise CompileError(str(e)) from None
    emit_rtlil(core, build / f"{TOP_NAME}.il")
    timings["rtlil_seconds"] = round(time.perf_counter() - start, 3)
    if verilog:
        from .yosys import YosysError

        log(f"  writing {TOP_NAME}.v with Yosys")
        start = time.perf_counter()
        try:
            emit_verilog(build / f"{TOP_NAME}.il", build / f"{TOP_NAME}.v")
        except YosysError as e:
            raise CompileError(str(e)) from None
        timings["verilog_seconds"] = round(time.perf_counter() - start, 3)

    report = _report(optimized, core, records, lut_size, pipeline_every, output_every, encoder, checks, timings,
                     source, verilog)
    report["flip_flops"] = flip_flops((build / f"{TOP_NAME}.il").read_text())
    report["files_sha256"] = {name: sha256_file(build / name) for name in report["files"].values() if name}
    report["build_id"] = report["files_sha256"][NETLIST_FILE]
    atomic_write_text(build / REPORT_FILE, json.dumps(report, indent=1) + "\n")
    atomic_write_text(build / SUMMARY_FILE, _summary(report))
    return report


def _report(netlist, core, records, lut_size, pipeline_every, output_every, encoder, checks, timings, source,
            verilog):
    stages = core.stage_latencies
    widths = port_widths(core)
    report = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "source": source,
        "top": TOP_NAME,
        "files": {"netlist": NETLIST_FILE, "rtlil": f"{TOP_NAME}.il", "verilog": f"{TOP_NAME}.v" if verilog else None},
        "passes": records,
        "gates": len(netlist.gates),
        "depth": netlist.depth,
        "arity_histogram": {str(k): v for k, v in netlist.arity_histogram().items()},
        "lut_size": lut_size,
        "estimated_luts": netlist.estimated_luts(lut_size),
        "gates_per_kind": netlist.source.get("gates_per_kind"),  # discretized gates: conv_tree, pool, dense
        "group_sum_adder_bits": core.group_sum.adder_bits,
        "pipeline_every": pipeline_every,
        "output_every": output_every,
        "pipeline_stages": core.latency,
        "stage_latency": stages,
        "latency_cycles": core.latency,
        "score_width": core.score_width,
        "class_width": core.class_width,
        "classes": netlist.classes,
        "in_bits": netlist.in_bits,
        "encoder": bool(encoder),
        "ports": widths,
        "checks": checks,
        "timings": timings,
    }
    if netlist.encoding is not None:
        report["features"] = netlist.encoding.features
        report["encoder_size"] = encoder_size(netlist)
    if encoder:
        report["in_features"] = netlist.encoding.features
        report["feature_width"] = netlist.encoding.feature_width
    return report


def _summary(report):
    lines = [f"dlgn compile of {report['source']}", ""]
    lines.append(f"{'pass':<14}{'gates':>9}{'depth':>7}{'LUTs':>9}")
    for r in report["passes"]:
        lines.append(f"{r['name']:<14}{r['gates']:>9}{r['depth']:>7}{r['estimated_luts']:>9}")
    lines.append("")
    lines.append(f"gates {report['gates']}, depth {report['depth']}, ~{report['estimated_luts']} LUT{report['lut_size']} "
                 f"(core), {report['group_sum_adder_bits']} adder bits in the group sum")
    stages = ", ".join(f"{k} {v}" for k, v in report["stage_latency"].items())
    lines.append(f"pipeline: register every {report['pipeline_every']} gate levels and every "
                 f"{report['output_every']} adder/argmax levels (0 = combinational)")
    lines.append(f"latency {report['latency_cycles']} cycles ({stages}); one sample per clock")
    ports = ", ".join(f"{k}[{v}]" for k, v in report["ports"].items())
    lines.append(f"ports: {ports}")
    lines.append(f"classes {report['classes']}, score width {report['score_width']}, class width {report['class_width']}")
    for name, result in report["checks"].items():
        lines.append(f"check {name}: {result}")
    lines.append("timings: " + ", ".join(f"{k} {v}" for k, v in report["timings"].items()))
    return "\n".join(lines) + "\n"
