"""Get the real Kubernetes control-plane programs the cluster tests run (envtest's convention).

If KUBEBUILDER_ASSETS names a folder holding kube-apiserver and etcd, those are used and nothing
is built. Otherwise kube-apiserver, kube-controller-manager and etcd are built once from the Go
module beside this file (tests/k8s/go.mod pins one Kubernetes release) into a cache folder keyed
by that release and a hash of go.mod/go.sum, and reused from then on. `make k8s-tools` runs this;
tests/support/apiserver.py imports it to find the programs. Run with --dir to print the folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parent
REQUIRED = ("kube-apiserver", "etcd")
OPTIONAL = ("kube-controller-manager",)
# Go package -> program name (etcd's main package is its server module's root).
PACKAGES = {
    "k8s.io/kubernetes/cmd/kube-apiserver": "kube-apiserver",
    "k8s.io/kubernetes/cmd/kube-controller-manager": "kube-controller-manager",
    "go.etcd.io/etcd/server/v3": "etcd",
}


def kubernetes_version() -> str:
    match = re.search(
        r"^(?:require)?\s*k8s\.io/kubernetes (v\S+)", (MODULE_DIR / "go.mod").read_text(), re.M
    )
    if match is None:
        raise RuntimeError("tests/k8s/go.mod does not require k8s.io/kubernetes")
    return match.group(1)


def cache_dir() -> Path:
    """The folder the built programs live in: one per pinned release and go.mod/go.sum."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((MODULE_DIR / name).read_bytes())
    base = os.environ.get("SPINE_K8S_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "spine-k8s"
    )
    return Path(base) / f"{kubernetes_version()}-{digest.hexdigest()[:10]}"


def assets_dir() -> Path | None:
    """KUBEBUILDER_ASSETS when it holds the required programs, else None."""
    given = os.environ.get("KUBEBUILDER_ASSETS")
    if given and all((Path(given) / name).is_file() for name in REQUIRED):
        return Path(given)
    return None


def binaries_dir() -> Path:
    """Where the programs are, or would be once built."""
    return assets_dir() or cache_dir()


def missing(folder: Path) -> list[str]:
    return [name for name in (*REQUIRED, *OPTIONAL) if not (folder / name).is_file()]


def build(folder: Path, names: list[str]) -> None:
    go = shutil.which("go")
    if go is None:
        raise SystemExit("go is not installed: install Go, or set KUBEBUILDER_ASSETS")
    version = kubernetes_version()
    major, minor = version.lstrip("v").split(".")[:2]
    # What `kubectl version` and /version show; Kubernetes' own build sets the same variables.
    stamp = " ".join(
        f"-X k8s.io/{module}/version.{key}={value}"
        for module in ("component-base", "client-go/pkg")
        for key, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        )
    )
    packages = [package for package, name in PACKAGES.items() if name in names]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as staging:
        command = [go, "build", "-trimpath", "-ldflags", f"-s -w {stamp}", "-o", staging, *packages]
        print(f"Building {', '.join(names)} ({version}) into {folder}", flush=True)
        started = time.monotonic()
        subprocess.run(command, cwd=MODULE_DIR, check=True, env={**os.environ, "CGO_ENABLED": "0"})
        for package in packages:
            built = Path(staging) / package.rstrip("/").split("/")[-1]
            if re.fullmatch(
                r"v\d+", built.name
            ):  # a major-version suffix: Go names it by the parent
                built = Path(staging) / package.split("/")[-2]
            built.rename(folder / PACKAGES[package])
        print(f"Built in {time.monotonic() - started:.0f} s", flush=True)


def main(argv: list[str]) -> int:
    if "--dir" in argv:
        print(binaries_dir())
        return 0
    given = assets_dir()
    if given is not None:
        print(f"Using KUBEBUILDER_ASSETS={given}")
        return 0
    folder = cache_dir()
    todo = missing(folder)
    if todo:
        build(folder, todo)
    else:
        print(f"Kubernetes test programs are ready in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
