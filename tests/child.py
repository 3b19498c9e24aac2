"""Running Python code in a child interpreter that imports the conv3dt under test (an
installed copy or a checkout), never a source tree that happens to be its working
directory: the child runs in an empty folder with the package's parent on its path."""
import os
import subprocess
import sys
import tempfile


def run_python(code, *args, env=None, cwd=None, timeout=120):
    """``python -c code args...`` -> CompletedProcess (text output captured). ``env``:
    the child's whole environment (default: this one)."""
    import conv3dt

    environ = dict(os.environ if env is None else env)
    parent = os.path.dirname(os.path.dirname(os.path.abspath(conv3dt.__file__)))
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (parent, environ.get("PYTHONPATH"))
                                            if p)
    with tempfile.TemporaryDirectory() as empty:
        return subprocess.run([sys.executable, "-c", code, *args], env=environ,
                              cwd=cwd or empty, capture_output=True, text=True,
                              timeout=timeout)
