"""``tinyllm.core.kernels``'s process settings, each in a fresh process: they are process-wide."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest


# In a fresh process (glibc's settings are process-wide): the minor page faults that touching each new tensor costs.
FAULTS = """
import ctypes, json, resource, sys, torch
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: count 4 KB pages, whatever the host's huge pages
from tinyllm.core.kernels import reuse_freed_memory
reused = reuse_freed_memory() if sys.argv[1] == "reuse" else None
def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for mb in (20, 24, 28, 20, 24):
    before = faults()
    torch.ones(mb * 2**18)  # mb MB of float32, written and freed
    counts.append((faults() - before) / (mb * 256))  # a share of its 4 KB pages
print(json.dumps({"reused": reused, "faulted": counts}))
"""


def faulted_pages(mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or "LD_PRELOAD" in os.environ,
                    reason="glibc's own malloc only")  # fmt: skip
def test_a_process_reuses_freed_tensor_memory_instead_of_faulting_it_in_again():
    default, reused = faulted_pages("default"), faulted_pages("reuse")
    assert reused["reused"] is True
    # By default 20 MB, freed twice already, still comes as fresh pages from the OS ...
    assert default["faulted"][3] > 0.9
    # ... while kept, the freed blocks serve it again without a page fault.
    assert reused["faulted"][3] < 0.1
