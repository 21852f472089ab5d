"""Where `export` writes: the path checked before any work, the file written beside it,
verified, and renamed into place (atomic: the path holds its old content or a verified file)."""

import os
import stat
import tempfile


def check_target(path):
    """Fails before converting when `path` cannot be written: the error names `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"Cannot write the .tflite file to {path}: it is a directory.")
    parent = directory
    while not os.path.isdir(parent):
        if os.path.exists(parent):
            raise NotADirectoryError(f"Cannot write the .tflite file to {path}: {parent} is not a directory.")
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise PermissionError(f"Cannot write the .tflite file to {path}: permission denied.")


def write_verified(path, data, verify):
    """Writes `data` beside `path`, returns `verify(bytes read back)`, then renames it into place.

    The rename is atomic, so `path` holds either its previous content or a complete
    file that LiteRT ran; on any error the temporary file is removed. The file gets
    the mode `path` had, or for a new file the usual `0666` less the umask.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".tflite")
    except OSError as error:
        raise OSError(error.errno, f"Cannot write the .tflite file to {path}: {error.strerror}") from error
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        with open(temporary, "rb") as stream:
            result = verify(stream.read())
        os.chmod(temporary, _file_mode(path))
        try:
            os.replace(temporary, path)
        except OSError as error:
            raise OSError(error.errno, f"Cannot write the .tflite file to {path}: {error.strerror}") from error
        return result
    except BaseException:
        os.unlink(temporary)
        raise


def _file_mode(path):
    """The mode of the existing `path`, else `0666` less the process umask (mkstemp's is 0600)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
