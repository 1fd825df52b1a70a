"""Helpers for tests that alter a build directory on purpose."""

import json
from pathlib import Path

from dlgn.safety import sha256_file


def rehash_build(build_dir):
    """Record the current files of ``build_dir`` in its compile report, as if a consistent
    compile had written them: what a deliberate, consistent edit of a build looks like."""
    build_dir = Path(build_dir)
    path = build_dir / "compile_report.json"
    report = json.loads(path.read_text())
    report["files_sha256"] = {name: sha256_file(build_dir / name) for name in report["files"].values() if name}
    report["build_id"] = report["files_sha256"]["netlist.json"]
    path.write_text(json.dumps(report, indent=1))
