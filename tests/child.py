"""Running Python code or the command line in a child interpreter that imports the conv3dt
under test (an installed copy or a checkout), never a source tree that happens to be its
working directory: the child runs in an empty folder (unless told otherwise) with the
package's parent on its path; and the command line called in this process."""
import contextlib
import os
import queue
import subprocess
import sys
import tempfile
import threading


def run_python(code, *args, env=None, cwd=None, timeout=120):
    """``python -c code args...`` -> CompletedProcess (text output captured). ``env``:
    the child's whole environment (default: this one)."""
    return _run(["-c", code, *args], env, cwd, timeout)


def run_cli(*args, env=None, cwd=None, timeout=300):
    """``python -m conv3dt args...`` (the command line) -> CompletedProcess."""
    return _run(["-m", "conv3dt", *args], env, cwd, timeout)


def _environ(env):
    import conv3dt

    environ = dict(os.environ if env is None else env)
    parent = os.path.dirname(os.path.dirname(os.path.abspath(conv3dt.__file__)))
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (parent, environ.get("PYTHONPATH"))
                                            if p)
    return environ


def _run(argv, env, cwd, timeout):
    with tempfile.TemporaryDirectory() as empty:
        return subprocess.run([sys.executable, *argv], env=_environ(env), cwd=cwd or empty,
                              capture_output=True, text=True, timeout=timeout)


class Child:
    """A child interpreter that runs while a test talks to it (:func:`started_python`):
    ``proc`` (its Popen), and its output lines as they come, each wait bounded."""

    def __init__(self, proc):
        self.proc = proc
        self._lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def line(self, timeout):
        """The next line the child prints; AssertionError (with its stderr) when none
        comes within ``timeout`` seconds or it ended."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the child printed nothing within {timeout} s") from None
        if line is None:
            self.proc.wait()
            raise AssertionError(f"the child ended (exit code {self.proc.returncode}):\n"
                                 f"{self.proc.stderr.read()}")
        return line

    def finish(self, timeout):
        """(exit code, stderr) once the child ended (within ``timeout`` seconds)."""
        self.proc.wait(timeout)
        return self.proc.returncode, self.proc.stderr.read()


@contextlib.contextmanager
def started_python(code, *args, env=None):
    """``python -c code args...`` started, as a :class:`Child`, for a test that talks to it
    (reads its output, sends it signals) while it runs; killed if it still runs when the
    block ends."""
    with tempfile.TemporaryDirectory() as empty:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], env=_environ(env),
                                cwd=empty, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        child = Child(proc)
        try:
            yield child
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            child.reader.join(10)     # it reads up to the end of the output, then ends
            proc.stdout.close()
            proc.stderr.close()


def run_main(capsys, *args):
    """(exit code, stdout, stderr) of the command line called in this process; SystemExit
    (argparse's --help and usage errors) counts as a return."""
    from conv3dt import _cli

    try:
        code = _cli.main(list(args))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
