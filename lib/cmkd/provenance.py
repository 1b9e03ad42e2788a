"""Provenance: what produced a notebook's results (code, environment, device, cost).

``cmkd reproduce`` records :func:`environment` plus the run's wall time and peak memory in each
notebook's manifest, and REPORT.md shows them in its environment section.  The kernel that runs
a notebook reports its own peak memory through :func:`peak_memory` (the Report object writes it
beside the staged results).
"""

from __future__ import annotations

import hashlib
import platform
import resource
import subprocess
import sys
from pathlib import Path

LOCK_FILE = "requirements.lock"


def git_commit(root: Path) -> tuple[str | None, bool | None]:
    """The checked-out commit of ``root`` and whether tracked or unignored files differ from it
    (reports/ excluded: it is what a run writes).  (None, None) outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], check=True, text=True,
                              capture_output=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=normal", "--", ".",
                         ":(exclude)reports"))
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, dirty


def lock_hash(root: Path) -> str | None:
    """sha256 of requirements.lock (the exact environment), or None when it is absent."""
    path = root / LOCK_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def device_description(preference: str | None) -> str:
    """The device a ``device`` parameter resolves to here, in words: 'cpu', 'cuda (<GPU>)'."""
    import torch

    from cmkd.runtime import select_device

    try:
        device = select_device(preference or "auto")
    except (RuntimeError, ValueError):
        return f"unavailable ({preference})"
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; elsewhere what ``platform`` knows), or ''.

    Recorded because CPU kernels differ between processors (AVX2 or AVX-512 code paths round
    differently), and SGD amplifies a last-bit difference: the same code and lock can give
    slightly different numbers on another CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def environment(root: Path, device: str | None = None) -> dict:
    """Code and environment facts of a run made in checkout ``root`` on ``device``."""
    import torch

    commit, dirty = git_commit(root)
    return {"commit": commit, "dirty": dirty, "lock_sha256": lock_hash(root),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "platform": f"{sys.platform}-{platform.machine()}",
            "device": device_description(device), "cpu": cpu_model()}


def peak_memory() -> dict:
    """Peak resident memory of this process in MiB (and peak CUDA memory when CUDA was used)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mib = rss / 1024 if sys.platform != "darwin" else rss / 2**20  # KiB on Linux, B on macOS
    out = {"peak_rss_mib": round(rss_mib, 1)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out
