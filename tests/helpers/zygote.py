"""A fork server for ``python -m tinyllm`` in tests: the interpreter starts and imports once, each run forks.

Importing Lightning (and what it pulls in: torchmetrics, transformers, dynamo) takes 4-9 s on two
cores, longer than most test runs train. This process imports tinyllm's commands once, with the
environment the tests give the CLI, and then, for each request on stdin, forks a child that is
``python -m tinyllm ARGS`` from that point on: its own working directory, environment, argv,
``sys.path`` and stdio, its own exit status (a signal's too). It never runs torch itself, so no
thread pool exists to be broken by ``fork``.

Protocol, one JSON line each way: ``{"args", "cwd", "env", "stdout", "stderr"}`` in; the child's
``{"pid"}`` out at once, then ``{"returncode"}`` when it ends. ``tests/helpers/cli.py`` speaks it.
"""

from __future__ import annotations

import json
import os
import sys


def preload() -> None:
    """Import every command's module (and so Lightning) once, as the first run of each would."""
    from tinyllm.__main__ import COMMANDS

    targets = [t for c in COMMANDS.values() for t in (c.values() if isinstance(c, dict) else [c])]
    for target in targets:
        __import__(target.partition(":")[0])


def child(request: dict) -> None:
    """Become ``python -m tinyllm ARGS`` in the request's folder, environment and files; never returns."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # sys.path as `python -m` builds it: the working directory first, then PYTHONPATH, then the rest.
    rest = sys.path[1:]  # sys.path[0] is this script's folder
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p and p not in rest]
    sys.path[:] = [os.getcwd(), *extra, *rest]
    for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY), (2, request["stderr"], os.O_WRONLY)):
        target = os.open(path, mode)
        os.dup2(target, fd)
        os.close(target)
    import tinyllm.__main__ as entry

    # What `python -m tinyllm` sets: Lightning's DDP launcher starts its other processes from them.
    sys.argv = [entry.__file__, *request["args"]]
    sys.modules["__main__"] = entry
    try:
        entry.main()
    except SystemExit:
        raise  # the interpreter exits with main's status after flushing stdio and running atexit handlers
    except BaseException:  # noqa: BLE001  everything a real run would print as a traceback
        import traceback

        traceback.print_exc()  # what an uncaught exception prints in a real run, with its status 1
        sys.exit(1)
    sys.exit(0)


def serve() -> None:
    preload()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
