"""`python -m spine_operator.asyncapi_download [--dest DIR]`: fetch the AsyncAPI JSON Schemas once.

Run by `make install` (into ~/.cache/spine/asyncapi-specs/<version>/) and by the Dockerfile's
build stage (into the image, named by $SPINE_ASYNCAPI_SCHEMAS). It downloads the pinned npm
tarball of `@asyncapi/specs` with a plain HTTPS GET (no node needed), refuses it unless its
sha512 equals npm's pinned integrity, and keeps only the schemas and the package's licence files.
It lives beside `asyncapi_schemas.py` so the pinned version has one source.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from spine_operator.asyncapi_schemas import (
    INTEGRITY,
    MARKER_FILE,
    PACKAGE,
    SUPPORTED_VERSION_PATTERN,
    TARBALL_URL,
    VERSION,
    schemas_dir,
)

DOWNLOAD_TIMEOUT_SECONDS = 60
MAX_TARBALL_BYTES = 20 * 1024 * 1024  # 6.11.1 is 0.35 MB
SCHEMA_SUFFIX = "-without-$id.json"  # local $refs only: nothing to resolve over the network
LICENCE_FILES = ("LICENSE", "NOTICE", "package.json")


class DownloadError(RuntimeError):
    pass


def integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def download(url: str = TARBALL_URL) -> bytes:
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
        data: bytes = response.read(MAX_TARBALL_BYTES + 1)
    if len(data) > MAX_TARBALL_BYTES:
        raise DownloadError(f"{url} is larger than {MAX_TARBALL_BYTES} bytes")
    return data


def unpack(tarball: bytes, destination: Path) -> list[str]:
    """Write the schemas (as schemas/<version>.json) and the licence files; names written."""
    if integrity_of(tarball) != INTEGRITY:
        raise DownloadError(
            f"the tarball of {PACKAGE} {VERSION} does not match its pinned integrity "
            f"(got {integrity_of(tarball)})"
        )
    written: list[str] = []
    (destination / "schemas").mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member in archive.getmembers():
            # Members are read and written under names we choose: no path from the archive is
            # ever used as a file name.
            name = member.name.removeprefix("package/")
            if not member.isfile():
                continue
            if name.startswith("schemas/") and name.endswith(SCHEMA_SUFFIX):
                version = name.removeprefix("schemas/").removesuffix(SCHEMA_SUFFIX)
                if not SUPPORTED_VERSION_PATTERN.match(version):
                    continue
                target = destination / "schemas" / f"{version}.json"
            elif name in LICENCE_FILES:
                target = destination / name
            else:
                continue
            source = archive.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
            written.append(str(target.relative_to(destination)))
    if not any(item.startswith("schemas/") for item in written):
        raise DownloadError(f"the tarball of {PACKAGE} {VERSION} holds no schemas")
    (destination / MARKER_FILE).write_text(f"{PACKAGE}@{VERSION} {INTEGRITY}\n{TARBALL_URL}\n")
    return written


def install(destination: Path) -> bool:
    """Fetch and unpack into `destination` unless it is there already; whether it fetched."""
    if (destination / MARKER_FILE).is_file():
        return False
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Unpacked beside the destination and renamed into place, so a reader (or a second
    # `make install` running at the same time) never sees half a directory.
    staging = Path(tempfile.mkdtemp(prefix=".asyncapi-", dir=destination.parent))
    try:
        unpack(download(), staging)
        staging.chmod(0o755)
        try:
            staging.rename(destination)
        except OSError:
            if not (destination / MARKER_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spine_operator.asyncapi_download",
        description=f"Fetch the AsyncAPI JSON Schemas ({PACKAGE} {VERSION}) once.",
    )
    parser.add_argument("--dest", type=Path, default=None, help="default: %(default)s")
    args = parser.parse_args(argv)
    destination = args.dest or schemas_dir()
    try:
        fetched = install(destination)
    except (OSError, DownloadError, tarfile.TarError) as error:
        print(f"Cannot fetch {PACKAGE} {VERSION} from {TARBALL_URL}: {error}", file=sys.stderr)
        return 1
    state = "fetched into" if fetched else "already in"
    print(f"AsyncAPI JSON Schemas ({PACKAGE} {VERSION}) {state} {destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
