"""Running Python code or the command line in a child interpreter that imports the conv3dt
under test (an installed copy or a checkout), never a source tree that happens to be its
working directory: the child runs in an empty folder (unless told otherwise) with the
package's parent on its path; and the command line called in this process."""
import os
import subprocess
import sys
import tempfile


def run_python(code, *args, env=None, cwd=None, timeout=120):
    """``python -c code args...`` -> CompletedProcess (text output captured). ``env``:
    the child's whole environment (default: this one)."""
    return _run(["-c", code, *args], env, cwd, timeout)


def run_cli(*args, env=None, cwd=None, timeout=300):
    """``python -m conv3dt args...`` (the command line) -> CompletedProcess."""
    return _run(["-m", "conv3dt", *args], env, cwd, timeout)


def _run(argv, env, cwd, timeout):
    import conv3dt

    environ = dict(os.environ if env is None else env)
    parent = os.path.dirname(os.path.dirname(os.path.abspath(conv3dt.__file__)))
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (parent, environ.get("PYTHONPATH"))
                                            if p)
    with tempfile.TemporaryDirectory() as empty:
        return subprocess.run([sys.executable, *argv], env=environ, cwd=cwd or empty,
                              capture_output=True, text=True, timeout=timeout)


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
