"""Where `export` writes: the path checked before any work, the file written beside it,
verified, and renamed into place (atomic: the path holds its old content or a verified file).
A symbolic link is written through, so the link stays and the file it points to changes."""

import os
import stat
import tempfile


def check_target(path):
    """Fails before converting when `path` cannot be written: the error names `path`.

    A symbolic link is checked (and later written) through, at the file it points to;
    a path that exists and is not a regular file (a directory, a FIFO, a device, a
    socket) is refused; missing parent directories are fine (they are created), but
    the nearest existing one must take a new file, which is tried.
    """
    if not isinstance(path, (str, bytes, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"path must name the .tflite file to write. Received: path={path!r}")
    path = os.fspath(path)
    target = os.path.realpath(path)
    if os.path.isdir(target):
        raise IsADirectoryError(f"Cannot write the .tflite file to {path}: it is a directory.")
    if os.path.exists(target) and not stat.S_ISREG(os.stat(target).st_mode):
        kind = _KINDS.get(stat.S_IFMT(os.stat(target).st_mode), "not a regular file")
        raise ValueError(f"Cannot write the .tflite file to {path}: it is {kind}, not a regular file.")
    parent = os.path.dirname(target)
    while not os.path.isdir(parent):
        if os.path.exists(parent):
            raise NotADirectoryError(f"Cannot write the .tflite file to {path}: {parent} is not a directory.")
        parent = os.path.dirname(parent)
    if os.path.exists(target) and not os.access(target, os.W_OK):
        raise PermissionError(f"Cannot write the .tflite file to {path}: permission denied.")
    try:  # what the rename into place needs: a new file in that directory (root passes os.access everywhere)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".tmp-", suffix=".tflite"):
            pass
    except OSError as error:
        raise OSError(error.errno, f"Cannot write the .tflite file to {path}: {error.strerror}") from None


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket"}


def write_verified(path, data, verify):
    """Writes `data` beside `path`, returns `verify(bytes read back)`, then renames it into place.

    The rename is atomic, so `path` holds either its previous content or a complete
    file that LiteRT ran; on any error the temporary file is removed. The file gets
    the mode `path` had, or for a new file the usual `0666` less the umask. A symbolic
    link is written through: the file it points to is replaced, in its own directory.
    """
    path = os.fspath(path)
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
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
        os.chmod(temporary, _file_mode(target))
        try:
            os.replace(temporary, target)
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
