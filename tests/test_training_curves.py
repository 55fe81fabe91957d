"""benchmarks/training_curves.py add: one point per kimg, sample count and generator width."""
import argparse
import json

from conftest import load_benchmark


def _add(curves, curve_file, report_file, kimg, width, fid):
    report_file.write_text(json.dumps({"n": 10000, "truncation": 1.0, "world_fid": fid}))
    curves.add(argparse.Namespace(report=str(report_file), kimg=kimg, note="", width=width, curve=str(curve_file)))
    return json.loads(curve_file.read_text())["points"]


def test_arms_of_two_widths_keep_their_points_at_the_same_kimg(tmp_path):
    curves = load_benchmark("training_curves")
    curve, report = tmp_path / "curve.json", tmp_path / "report.json"
    _add(curves, curve, report, 2780.0, "2048/256", 5.46)
    points = _add(curves, curve, report, 2780.0, "3072/256", 5.56)
    assert sorted((p["width"], p["world_fid"]) for p in points) == [("2048/256", 5.46), ("3072/256", 5.56)]
    # The same arm measured again replaces its own point only.
    points = _add(curves, curve, report, 2780.0, "2048/256", 5.40)
    assert sorted((p["width"], p["world_fid"]) for p in points) == [("2048/256", 5.40), ("3072/256", 5.56)]
