#!/usr/bin/env python3
"""Writes a `docker save`-style archive of a busybox image built from the
host's static busybox (Debian's busybox-static), for tests and benchmarks
that need a real image without a registry.

usage: busybox-archive.py OUT.tar [TAG]   (TAG defaults to busybox:latest)

Env: BUSYBOX, the static busybox to pack (default /bin/busybox), and
IMAGE_ARCH, its Docker architecture (default: the host's), e.g. an arm64
image from Debian's busybox-static:arm64 (initramfs/foreign-sysroot.sh
unpacks one).
"""
import hashlib
import io
import json
import os
import platform
import sys
import tarfile

APPLETS = ("sh echo cat sleep ls id hostname true false env pwd ps wc head seq tty stat mount grep kill "
           "touch mkdir rm unshare stty printf yes dd top tail sync test whoami readlink date cp mv ln "
           "chmod chown find sed awk tr sort uniq cut xargs du df free uname nproc vi wget nc").split()


def add(tar, name, data=b"", mode=0o644, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, 1_600_000_000, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def layer():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700), ("home/app", 0o755)):
            add(tar, d, mode=mode, kind=tarfile.DIRTYPE)
        with open(os.environ.get("BUSYBOX", "/bin/busybox"), "rb") as f:
            add(tar, "bin/busybox", f.read(), 0o755)
        add(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                               b"app:x:1000:1000::/home/app:/bin/sh\n")
        add(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\napp:x:1000:\nwheel:x:10:app\n")
        for applet in APPLETS:
            add(tar, "bin/" + applet, kind=tarfile.SYMTYPE, link="busybox", mode=0o777)
    return buf.getvalue()


def main():
    out = sys.argv[1]
    tag = sys.argv[2] if len(sys.argv) > 2 else "busybox:latest"
    data = layer()
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    config = json.dumps({
        "architecture": os.environ.get("IMAGE_ARCH")
        or {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), "amd64"),
        "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "busybox-archive.py"}],
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        add(tar, config_name, config)
        add(tar, "layer", mode=0o755, kind=tarfile.DIRTYPE)
        add(tar, "layer/layer.tar", data)
        add(tar, "manifest.json", manifest)


if __name__ == "__main__":
    main()
