#!/usr/bin/env python3
"""Writes a `docker save`-style archive of a large image for load benchmarks:
the busybox layer of tests/images/busybox-archive.py plus a second layer
holding one file of random (incompressible) bytes.

usage: big-image-archive.py OUT.tar [MB] [TAG]   (MB defaults to 100, TAG to bigimage:latest)
"""
import hashlib
import importlib.util
import json
import os
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("busybox_archive", os.path.join(HERE, "../images/busybox-archive.py"))
busybox = importlib.util.module_from_spec(spec)
spec.loader.exec_module(busybox)


def random_layer(path, size):
    """A layer tar with `data/random.bin` of `size` random bytes, written in chunks."""
    chunk = 1 << 20
    with open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        busybox.add(tar, "data", mode=0o755, kind=tarfile.DIRTYPE)
        info = tarfile.TarInfo("data/random.bin")
        info.size, info.mode, info.mtime = size, 0o644, 1_600_000_000

        class Random:
            left = size

            def read(self, n=-1):
                n = min(self.left if n < 0 else n, self.left, chunk)
                self.left -= n
                return os.urandom(n)

        tar.addfile(info, Random())


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    out = sys.argv[1]
    mb = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    tag = sys.argv[3] if len(sys.argv) > 3 else "bigimage:latest"
    base = busybox.layer()
    big_path = out + ".layer2.tmp"
    random_layer(big_path, mb * 1000 * 1000 - len(base))
    diff_ids = ["sha256:" + hashlib.sha256(base).hexdigest(), "sha256:" + sha256_file(big_path)]
    config = json.dumps({
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, "amd64"), "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "busybox-archive.py"},
                    {"created": "2024-01-01T00:00:00Z", "created_by": "big-image-archive.py"}],
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layers = ["base/layer.tar", "random/layer.tar"]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": layers}]).encode()
    try:
        with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
            busybox.add(tar, config_name, config)
            for d in ("base", "random"):
                busybox.add(tar, d, mode=0o755, kind=tarfile.DIRTYPE)
            busybox.add(tar, layers[0], base)
            info = tar.gettarinfo(big_path, arcname=layers[1])
            info.mtime, info.uid, info.gid, info.uname, info.gname = 1_600_000_000, 0, 0, "", ""
            with open(big_path, "rb") as f:
                tar.addfile(info, f)
            busybox.add(tar, "manifest.json", manifest)
    finally:
        os.unlink(big_path)


if __name__ == "__main__":
    main()
