"""benchmarks/training_curves.py add: one point per kimg, sample count, generator width and arm."""
import argparse
import json

from conftest import load_benchmark


def _add(curves, curve_file, report_file, kimg, width, fid, arm=None):
    report_file.write_text(json.dumps({"n": 10000, "truncation": 1.0, "world_fid": fid}))
    curves.add(argparse.Namespace(report=str(report_file), kimg=kimg, note="", width=width, arm=arm,
                                  curve=str(curve_file)))
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


def test_points_from_before_widths_were_recorded_count_as_the_first_width(tmp_path):
    curves = load_benchmark("training_curves")
    curve, report = tmp_path / "curve.json", tmp_path / "report.json"
    curve.write_text(json.dumps({"points": [{"kimg": 940.0, "n": 10000, "world_fid": 14.4}]}))
    points = _add(curves, curve, report, 940.0, "2048/256", 9.0)
    assert sorted(p["world_fid"] for p in points) == [9.0, 14.4]
    points = _add(curves, curve, report, 940.0, curves.MAIN_WIDTH, 14.0)
    assert sorted(p["world_fid"] for p in points) == [9.0, 14.0]


def test_named_arms_of_one_width_are_their_own_series(tmp_path):
    curves = load_benchmark("training_curves")
    curve, report = tmp_path / "curve.json", tmp_path / "report.json"
    _add(curves, curve, report, 3190.0, "2048/256", 5.30)
    _add(curves, curve, report, 3190.0, "2048/256", 4.98, arm="labels")
    points = _add(curves, curve, report, 3190.0, "2048/256", 4.97, arm="labels")
    assert sorted(p["world_fid"] for p in points) == [4.97, 5.30]
    arms = curves._arms(points)
    assert [(suffix, [p["world_fid"] for p in pts]) for suffix, _, pts in arms] == [(", 2048/256", [5.30]),
                                                                                 (", 2048/256, labels", [4.97])]
    assert arms[0][1] != arms[1][1]  # told apart by marker as well as by name
