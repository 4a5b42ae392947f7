#!/usr/bin/env python3
"""Writes a one-layer OCI image tarball whose /bin holds the host's static busybox and its
applets, for `ctr images import`. No registry is needed (tests run offline).

usage: oci-image.py OUT.tar REF [CMD ...]   e.g. oci-image.py pause.tar kedge.local/pause:1 sleep 2147483647
"""
import gzip, hashlib, io, json, os, subprocess, sys, tarfile

BUSYBOX = "/bin/busybox"


def layer() -> bytes:
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "var"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for name in applets.stdout.split():
            if name != "busybox":
                info = tarfile.TarInfo("bin/" + name)
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
    return raw.getvalue()


def blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return "sha256:" + digest


def main() -> None:
    out, ref, cmd = sys.argv[1], sys.argv[2], sys.argv[3:] or ["sh"]
    plain = layer()
    packed = gzip.compress(plain, mtime=0)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    with tarfile.open(out, "w") as tar:
        layer_digest = blob(tar, packed)
        config = json.dumps({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(plain).hexdigest()]},
        }).encode()
        config_digest = blob(tar, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": len(packed)}],
        }).encode()
        manifest_digest = blob(tar, manifest)
        index = json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": ref},
        }]}).encode()
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
