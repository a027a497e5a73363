"""tests/forkstart.py starts programs as a fresh interpreter would run them (the suite's forked starts rely on it)."""

from __future__ import annotations

import signal

import forkstart


def test_a_forked_program_runs_its_atexit_handlers():
    """ember's launcher waits for its ranks in an atexit handler; skipping it killed rank 1 mid-print."""
    done = forkstart.run(["-c", "import atexit; atexit.register(print, 'bye'); print('hello')"], timeout=60)
    assert (done.returncode, done.stdout) == (0, "hello\nbye\n")


def test_a_forked_program_sees_its_own_command_line_and_the_default_start_method():
    code = "import multiprocessing, sys; print(sys.orig_argv[1:], sys.argv, multiprocessing.get_start_method())"
    done = forkstart.run(["-c", code, "x"], timeout=60)
    assert done.stdout.split("] [")[0] == "['-c', " + repr(code) + ", 'x'"
    assert done.stdout.rstrip().endswith("['-c', 'x'] fork")


def test_a_killed_program_reports_the_signal_and_its_exit_code_otherwise():
    p = forkstart.popen(["-c", "import time; print('up', flush=True); time.sleep(60)"], stdout=forkstart.PIPE,
                        start_new_session=True)
    assert p.stdout.readline() == "up\n"
    p.send_signal(signal.SIGKILL)
    assert p.wait(30) == -signal.SIGKILL
    assert forkstart.run(["-c", "raise SystemExit(3)"], timeout=60).returncode == 3
