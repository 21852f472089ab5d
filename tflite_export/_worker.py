"""One TensorFlow Python beside the user's, which runs the jobs that can crash or need TensorFlow's backend.

The TFLite converter and its calibrator can kill the process they run in, and a JAX or
PyTorch process cannot run the converter at all. So a job (a folder holding
`options.json`, `data.npz` and its model, as `_convert_worker` reads it) runs in a child
Python, `python -m tflite_export._convert_worker --serve`, started on the first job with
`KERAS_BACKEND=tensorflow` and kept for the next ones (starting TensorFlow takes seconds).
It reads a folder per line and answers a line when that folder's `result.pkl` is written.
If it dies, the job raises `WorkerDied` (how it died, and the last lines it wrote to
stderr) and the next job starts a new one. It ends when this process closes its stdin:
at exit, or when this process dies.

Inside the worker (`IN_WORKER`), jobs run in place.
"""

import atexit
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading

# True in the worker process itself: its jobs run in place.
IN_WORKER = False

_lock = threading.Lock()
_process = None
_stderr = None
_owner = None  # the process that started `_process`


class WorkerDied(RuntimeError):
    """The worker process ended during a job; `how` says how (a signal or an exit status)."""

    def __init__(self, how, tail):
        super().__init__(f"the worker process died ({how})")
        self.how, self.tail = how, tail


def run(folder):
    """Runs the job in `folder`: its result dict, or the error it raised, raised here."""
    if IN_WORKER:
        from tflite_export import _convert_worker

        _convert_worker.main([folder])
    else:
        with _lock:
            _send(folder)
    with open(os.path.join(folder, "result.pkl"), "rb") as stream:
        result = pickle.load(stream)
    if "error" in result:
        raise result["error"]
    return result


def start():
    """Starts the worker now, if none is up, without waiting for it: it imports TensorFlow (seconds)
    while this process lowers the model, so the first job finds it ready."""
    if not IN_WORKER:
        with _lock:
            _started()


def _send(folder):
    process = _started()
    try:
        process.stdin.write(os.fspath(folder) + "\n")
        process.stdin.flush()
        answer = process.stdout.readline()
    except (BrokenPipeError, OSError):
        answer = ""
    if answer.strip() != "done" or not os.path.exists(os.path.join(folder, "result.pkl")):
        _died(process)


def _started():
    """The worker, started if there is none, the last one died, or this is a forked child of the process
    that started it (whose pipes the two would share)."""
    global _process, _stderr, _owner
    if _process is not None and _owner == os.getpid() and _process.poll() is None:
        return _process
    _owner = os.getpid()
    if _stderr is not None:
        _stderr.close()
    _stderr = tempfile.TemporaryFile(mode="w+", prefix="keras-compact-worker-")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    _process = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "tflite_export._convert_worker", "--serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=_stderr, env=env, text=True,
    )
    return _process


def _died(process):
    """Raises WorkerDied for `process`, which answered nothing."""
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    try:
        how = signal.Signals(-code).name if code < 0 else f"exit status {code}"
    except ValueError:
        how = f"signal {-code}"
    raise WorkerDied(how, _tail())


def _tail(frames=3):
    """What the worker said as it died: Python's fatal-error line and the innermost frames of its
    stack (`-X faulthandler`), else its last line on stderr."""
    if _stderr is None:
        return ""
    _stderr.seek(0)
    lines = [line.strip() for line in _stderr.read().splitlines() if line.strip()]
    fatal = [i for i, line in enumerate(lines) if line.startswith("Fatal Python error")]
    if not fatal:
        return lines[-1] if lines else ""
    stack = [line for line in lines[fatal[-1] + 1:] if line.startswith("File ")]
    return "; ".join([lines[fatal[-1]]] + stack[:frames])


@atexit.register
def _close():
    if _process is not None and _owner == os.getpid() and _process.poll() is None:
        try:
            _process.stdin.close()
            _process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            _process.kill()
