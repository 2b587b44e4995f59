#!/usr/bin/env python3
"""Offline stand-ins for the images docker-py's integration suite uses, built
from the host's static busybox (Debian's busybox-static), and a tiny
read-only registry that serves them (for the suite's pull tests against an
engine that pulls through a registry mirror).

  images.py archives OUTDIR
      writes OUTDIR/<name>.tar (docker-archive, as `docker save` writes it)
      for alpine:3.10, alpine:latest, busybox:latest and hello-world:latest,
      and OUTDIR/registry/ (manifests and blobs of the same images).
  images.py registry OUTDIR/registry PORT_FILE
      serves that directory as a registry (API v2, read-only, no auth) on
      127.0.0.1 at a free port, written to PORT_FILE once it listens.

The stand-ins: every busybox applet is a symlink in /bin, /sbin, /usr/bin or
/usr/sbin (as `busybox --list-full` says). The alpine images carry Alpine's
/etc/passwd and /etc/group (the suite runs `whoami` as `postgres`, uid 70),
/var/opt and /etc/alpine-release; alpine:3.10 and alpine:latest differ in
that file, so their image IDs differ (the suite relies on it). Everything is
deterministic: the same host busybox gives the same image IDs.
"""
import gzip
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MTIME = 1_600_000_000
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), "amd64")

ALPINE_PASSWD = """root:x:0:0:root:/root:/bin/ash
bin:x:1:1:bin:/bin:/sbin/nologin
daemon:x:2:2:daemon:/sbin:/sbin/nologin
adm:x:3:4:adm:/var/adm:/sbin/nologin
lp:x:4:7:lp:/var/spool/lpd:/sbin/nologin
sync:x:5:0:sync:/sbin:/bin/sync
shutdown:x:6:0:shutdown:/sbin:/sbin/shutdown
halt:x:7:0:halt:/sbin:/sbin/halt
mail:x:8:12:mail:/var/spool/mail:/sbin/nologin
news:x:9:13:news:/usr/lib/news:/sbin/nologin
uucp:x:10:14:uucp:/var/spool/uucppublic:/sbin/nologin
operator:x:11:0:operator:/root:/sbin/nologin
man:x:13:15:man:/usr/man:/sbin/nologin
postmaster:x:14:12:postmaster:/var/spool/mail:/sbin/nologin
cron:x:16:16:cron:/var/spool/cron:/sbin/nologin
ftp:x:21:21::/var/lib/ftp:/sbin/nologin
sshd:x:22:22:sshd:/dev/null:/sbin/nologin
at:x:25:25:at:/var/spool/cron/atjobs:/sbin/nologin
squid:x:31:31:Squid:/var/cache/squid:/sbin/nologin
xfs:x:33:33:X Font Server:/etc/X11/fs:/sbin/nologin
games:x:35:35:games:/usr/games:/sbin/nologin
postgres:x:70:70::/var/lib/postgresql:/bin/sh
cyrus:x:85:12::/usr/cyrus:/sbin/nologin
vpopmail:x:89:89::/var/vpopmail:/sbin/nologin
ntp:x:123:123:NTP:/var/empty:/sbin/nologin
smmsp:x:209:209:smmsp:/var/spool/mqueue:/sbin/nologin
guest:x:405:100:guest:/dev/null:/sbin/nologin
nobody:x:65534:65534:nobody:/:/sbin/nologin
"""
ALPINE_GROUP = """root:x:0:root
bin:x:1:root,bin,daemon
daemon:x:2:root,bin,daemon
sys:x:3:root,bin,adm
adm:x:4:root,adm,daemon
tty:x:5:
disk:x:6:root,adm
lp:x:7:lp
mem:x:8:
kmem:x:9:
wheel:x:10:root
floppy:x:11:root
mail:x:12:mail
news:x:13:news
uucp:x:14:uucp
man:x:15:man
cron:x:16:cron
console:x:17:
audio:x:18:
cdrom:x:19:
dialout:x:20:root
ftp:x:21:
sshd:x:22:
input:x:23:
at:x:25:at
tape:x:26:root
video:x:27:root
netdev:x:28:
readproc:x:30:
squid:x:31:squid
xfs:x:33:xfs
kvm:x:34:kvm
games:x:35:
shadow:x:42:
postgres:x:70:
cdrw:x:80:
usb:x:85:
vpopmail:x:89:
users:x:100:games
ntp:x:123:
nofiles:x:200:
smmsp:x:209:smmsp
locate:x:245:
abuild:x:300:
utmp:x:406:
ping:x:999:
nogroup:x:65533:
nobody:x:65534:
"""
BUSYBOX_PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
BUSYBOX_GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
"""


class Layer:
    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.GNU_FORMAT)

    def add(self, name, data=b"", mode=0o644, kind=tarfile.REGTYPE, link=""):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime, info.linkname = kind, mode, MTIME, link
        if isinstance(data, str):
            data = data.encode()
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        self.tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    def dirs(self, *names, mode=0o755):
        for d in names:
            self.add(d, mode=mode, kind=tarfile.DIRTYPE)

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


def busybox_layer():
    """The shared base: busybox and a symlink per applet, the usual directories."""
    out = subprocess.run(["/bin/busybox", "--list-full"], check=True, capture_output=True, text=True).stdout
    applets = sorted({a.strip() for a in out.split() if a.strip() and a.strip() != "bin/busybox"})
    layer = Layer()
    layer.dirs("bin", "dev", "etc", "home", "lib", "media", "mnt", "opt", "proc", "run", "sbin", "srv", "sys",
               "usr", "usr/bin", "usr/sbin", "usr/local", "usr/local/bin", "var", "var/opt", "var/log", "var/spool")
    layer.dirs("tmp", "var/tmp", mode=0o1777)
    layer.dirs("root", mode=0o700)
    with open("/bin/busybox", "rb") as f:
        layer.add("bin/busybox", f.read(), 0o755)
    for applet in applets:
        layer.add(applet, kind=tarfile.SYMTYPE, link="/bin/busybox", mode=0o777)
    return layer.bytes()


def etc_layer(passwd, group, release=None):
    layer = Layer()
    layer.dirs("etc")
    layer.add("etc/passwd", passwd)
    layer.add("etc/group", group)
    layer.add("etc/shadow", "".join(line.split(":")[0] + ":!::0:::::\n" for line in passwd.splitlines()), 0o640)
    if release:
        layer.add("etc/alpine-release", release + "\n")
        layer.add("etc/os-release", f'NAME="Alpine Linux (busybox stand-in)"\nID=alpine\nVERSION_ID={release}\n')
    return layer.bytes()


def hello_layer():
    layer = Layer()
    layer.add("hello", "Hello from Docker! (an offline stand-in: this image is only pulled, never run)\n", 0o755)
    return layer.bytes()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image(tag, layers, cmd, labels=None):
    config = {
        "architecture": ARCH, "os": "linux", "created": CREATED,
        "config": {"Cmd": cmd, "Env": [PATH_ENV], **({"Labels": labels} if labels else {})},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer) for layer in layers]},
        "history": [{"created": CREATED, "created_by": f"tests/dockerpy/images.py: layer {i} of {tag}"}
                    for i in range(len(layers))],
    }
    return tag, json.dumps(config, sort_keys=True).encode(), layers


def all_images():
    base = busybox_layer()
    return [
        image("alpine:3.10", [base, etc_layer(ALPINE_PASSWD, ALPINE_GROUP, "3.10.9")], ["/bin/sh"]),
        image("alpine:latest", [base, etc_layer(ALPINE_PASSWD, ALPINE_GROUP, "3.18.4")], ["/bin/sh"]),
        image("busybox:latest", [base, etc_layer(BUSYBOX_PASSWD, BUSYBOX_GROUP)], ["sh"]),
        image("hello-world:latest", [hello_layer()], ["/hello"]),
    ]


def write_archive(path, tag, config, layers):
    layer = Layer()   # reused as a plain tar writer
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = []
    for data in layers:
        d = hashlib.sha256(data).hexdigest()
        layer.dirs(d)
        layer.add(f"{d}/layer.tar", data)
        names.append(f"{d}/layer.tar")
    layer.add(config_name, config)
    layer.add("manifest.json", json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]))
    with open(path, "wb") as f:
        f.write(layer.bytes())


def write_registry(root, tag, config, layers):
    """Blobs under root/blobs/<hex>, manifests under root/manifests/<repo>/<tag>
    and root/manifests/<repo>/sha256:<hex>; images are served as docker.io's
    official ones are named (library/NAME)."""
    os.makedirs(os.path.join(root, "blobs"), exist_ok=True)
    entries = []
    for blob, media in [(config, None)] + [(gzip.compress(layer, mtime=0), "gz") for layer in layers]:
        with open(os.path.join(root, "blobs", hashlib.sha256(blob).hexdigest()), "wb") as f:
            f.write(blob)
        if media:
            entries.append({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                            "size": len(blob), "digest": sha(blob)})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": sha(config)},
        "layers": entries,
    }, indent=3).encode()
    name, ref = tag.rsplit(":", 1)
    mdir = os.path.join(root, "manifests", "library", name)
    os.makedirs(mdir, exist_ok=True)
    for r in (ref, sha(manifest)):
        with open(os.path.join(mdir, r), "wb") as f:
            f.write(manifest)


def archives(outdir):
    os.makedirs(outdir, exist_ok=True)
    for tag, config, layers in all_images():
        write_archive(os.path.join(outdir, tag.split(":")[0] + "-" + tag.split(":")[1] + ".tar"), tag, config, layers)
        write_registry(os.path.join(outdir, "registry"), tag, config, layers)
        print(f"{tag} {sha(config)}")


MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def registry(root, port_file):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            sys.stderr.write("registry: " + (fmt % args) + "\n")

        def reply(self, status, body=b"", ctype="application/json", headers=()):
            self.send_response(status)
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def unknown(self, code, status=404):
            body = json.dumps({"errors": [{"code": code, "message": code.lower().replace("_", " "), "detail": self.path}]})
            self.reply(status, body.encode())

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path in ("/v2", "/v2/"):
                return self.reply(200, b"{}")
            if not path.startswith("/v2/"):
                return self.unknown("UNSUPPORTED")
            rest = path[len("/v2/"):]
            if "/manifests/" in rest:
                repo, ref = rest.rsplit("/manifests/", 1)
                if ".." in repo or "/" in ref:
                    return self.unknown("NAME_INVALID", 400)
                f = os.path.join(root, "manifests", repo, ref)
                if not os.path.isfile(f):
                    return self.unknown("MANIFEST_UNKNOWN")
                data = open(f, "rb").read()
                return self.reply(200, data, MANIFEST_TYPE, [("Docker-Content-Digest", sha(data)), ("Etag", f'"{sha(data)}"')])
            if "/blobs/" in rest:
                repo, digest = rest.rsplit("/blobs/", 1)
                hexd = digest.removeprefix("sha256:")
                f = os.path.join(root, "blobs", hexd)
                if not digest.startswith("sha256:") or "/" in hexd or not os.path.isfile(f):
                    return self.unknown("BLOB_UNKNOWN")
                data = open(f, "rb").read()
                return self.reply(200, data, "application/octet-stream", [("Docker-Content-Digest", digest)])
            return self.unknown("UNSUPPORTED")

        do_HEAD = do_GET

        def do_POST(self):
            self.unknown("UNSUPPORTED", 405)

        do_PUT = do_DELETE = do_PATCH = do_POST

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "archives":
        archives(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "registry":
        registry(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
