"""Hostile or mistaken command-line inputs: each is one `error:` line and exit status 2 (or works),
never a traceback, a crash or a hang (issue 16)."""
import pytest
from click.testing import CliRunner

from latentedit.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_refused(r, *words):
    """Exit 2 with one `error:` line that names the problem."""
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in r.output, r.output
    for word in words:
        assert word in errors[0], errors[0]


THREAD_COMMANDS = [
    ["train", "gan", "--out", "{tmp}/run"],
    ["train", "offset", "--kind", "mask", "--out", "{tmp}/run"],
    ["train", "encoder", "--out", "{tmp}/run"],
    ["train", "evaluators", "--out", "{tmp}/run"],
    ["evaluate", "generator"],
    ["studio", "--port", "0"],
]


@pytest.mark.parametrize("threads", ["0", "-1", "100000"])
@pytest.mark.parametrize("command", THREAD_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_threads_out_of_range_refused_before_any_work(tmp_path, command, threads):
    r = run(*[a.format(tmp=tmp_path) for a in command], "--threads", threads)
    assert_refused(r, "--threads", threads)
    assert not (tmp_path / "run").exists()
