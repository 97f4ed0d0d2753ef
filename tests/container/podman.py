"""podman for the container tests: its own configuration and storage, a base image made locally.

podman on these machines needs the runc runtime, the cgroupfs cgroup manager and no default
ulimits; the test passes that in a containers.conf of its own (CONTAINERS_CONF) with a storage
configuration of its own (CONTAINERS_STORAGE_CONF), never the system's files. Base images cannot
be pulled: `debian:bookworm-slim` is made with `debootstrap --variant=minbase`, trimmed the way
Debian's slim images are, and imported with `podman import`. Everything lives in a cache folder
outside the repository (see `cache_dir`), so the base image is made once per machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
ETCD_IMAGE = "localhost/runner-test-etcd:3.4"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The folder of this machine's local CA certificates (pip and apt inside the build need them).
# Mounted as a folder: a mount of the bundle file breaks the ca-certificates package's install.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")

# What Debian's slim images leave out (docs, man pages, locales), also for later installs.
_DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
"""
_APT_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
"""
_TRIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/groff",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/linda",
    "usr/share/locale",
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/log",
    "var/cache/debconf",
)


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/runner-test-images (default ~/.cache/...): outside any checkout."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "runner-test-images"


class Podman:
    """The podman command with the test's configuration and storage under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("storage", "run", "tmp", "networks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        conf, storage = root / "containers.conf", root / "storage.conf"
        conf.write_text(
            "[containers]\ndefault_ulimits = []\n"
            '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            f'tmp_dir = "{root / "tmp"}"\nvolume_path = "{root / "storage" / "volumes"}"\n'
            f'[network]\nnetwork_config_dir = "{root / "networks"}"\n'
        )
        storage.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{root / "storage"}"\n'
            f'runroot = "{root / "run"}"\n'
        )
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self.env["CONTAINERS_STORAGE_CONF"] = str(storage)
        self.env["CONTAINERS_REGISTRIES_CONF"] = str(self._registries())

    def _registries(self) -> Path:
        path = self.root / "registries.conf"
        path.write_text('unqualified-search-registries = []\nshort-name-mode = "disabled"\n')
        return path

    def run(
        self, *args: str, check: bool = True, timeout: float = 300, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`podman ARGS`, output captured; raises with podman's stderr when it fails."""
        proc = subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            input=None if input is None else input.decode(),
            text=True,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def exists(self, image: str) -> bool:
        return self.run("image", "exists", image, check=False).returncode == 0

    def ensure_base_image(self) -> None:
        """debian:bookworm-slim from Debian's packages: debootstrapped once, then cached."""
        if self.exists(BASE_IMAGE):
            return
        tarball = self.root / "bookworm-slim.tar"
        if not tarball.exists():
            _make_rootfs_tarball(self.root / "rootfs", tarball)
        self.run(
            "import",
            "--change",
            f"ENV {PATH_ENV}",
            "--change",
            'CMD ["bash"]',
            str(tarball),
            BASE_IMAGE,
            timeout=600,
        )

    def build(
        self, context: Path, tag: str, *, file: str = "Dockerfile", build_args: Sequence[str] = ()
    ) -> None:
        """`podman build` with the local CA certificates mounted read-only, no pulls; the
        Docker image format, which keeps HEALTHCHECK (the OCI format has no field for it)."""
        args = ["build", "--format", "docker", "--pull=never", "-f", str(context / file), "-t", tag]
        if LOCAL_CA_DIR.is_dir():
            args += ["-v", f"{LOCAL_CA_DIR}:{LOCAL_CA_DIR}:ro"]
        for arg in build_args:
            args += ["--build-arg", arg]
        self.run(*args, str(context), timeout=900)


def _make_rootfs_tarball(rootfs: Path, tarball: Path) -> None:
    if rootfs.exists():
        shutil.rmtree(rootfs)
    subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(rootfs)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    _trim_and_pack(rootfs, tarball)


def _trim_and_pack(rootfs: Path, tarball: Path) -> None:
    for rel in _TRIM:
        target = rootfs / rel
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir()
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/dpkg/dpkg.cfg.d/docker").write_text(_DPKG_EXCLUDES)
    (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(_APT_CLEAN)
    partial = tarball.with_suffix(".partial")
    subprocess.run(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(partial), "."],
        check=True,
        capture_output=True,
        timeout=300,
    )
    partial.rename(tarball)
    shutil.rmtree(rootfs)
