#!/usr/bin/env python3
"""EmoCheck across a Windows fleet, the way an admin scripts it in an afternoon.

The peer of pushscan in the Windows benchmark (benches/windows.rs, run through benches/scripts/windows):
a straightforward, correct, untuned script with the usual libraries - pywinrm for commands and
smbprotocol's `smbclient` for files - and a thread pool of 64. Per host:

1. SMB session to the host (NTLM, signing required); read C:\\Windows\\pushscan\\emocheck.exe
   back over ADMIN$ and hash it; if it is missing or its SHA-256 differs, copy the local checker
   there (ADMIN$\\pushscan\\emocheck.exe). Make sure the reports directory exists.
2. WinRM (NTLM, message encryption when over HTTP): run
   C:\\Windows\\pushscan\\emocheck.exe /quiet /json /output C:\\Windows\\pushscan\\reports
3. List the reports directory over SMB, read the newest *_emocheck.json, parse it and classify
   the host: detected / not detected / no result / error.

Usage:
    windows_peer.py HOSTS_FILE --checker emocheck.exe [--sha256 HEX] [--workers 64]
                    [--winrm-port 5985] [--smb-port 445] [--json]

HOSTS_FILE: one host per line, `ADDRESS` or `NAME ADDRESS` (blank lines and # comments skipped).
Credentials: $PUSHSCAN_USER and $PUSHSCAN_PASSWORD (as in the lab's lab.env), else --user and a
password prompt.

Output: one summary line, then one line per host (status, seconds, pushed, detail); with --json
the summary line goes to stderr and stdout carries a JSON document instead:
    {"tool", "workers", "hosts", "wall_s", "counts": {status: n}, "pushed": n,
     "results": [{"host", "address", "status", "pushed", "seconds", "report", "detail"}]}
Exit status: 0 every host "not detected", 1 some host "detected", 2 otherwise (a host without a
result or with an error), 3 bad usage or missing libraries.
"""

import argparse
import concurrent.futures
import errno
import getpass
import hashlib
import json
import os
import sys
import time
import uuid

try:
    import smbclient
    import winrm
    from smbprotocol.connection import Connection
except ImportError as e:
    print(
        f"windows_peer.py: {e.name} is missing: python3 -m pip install pywinrm smbprotocol "
        "(benches/scripts/windows installs them)",
        file=sys.stderr,
    )
    sys.exit(3)

REMOTE_DIR = r"C:\Windows\pushscan"
REMOTE_EXE = REMOTE_DIR + r"\emocheck.exe"
REMOTE_REPORTS = REMOTE_DIR + r"\reports"


def read_hosts(path):
    hosts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            name, address = (parts[0], parts[1]) if len(parts) > 1 else (parts[0], parts[0])
            hosts.append((name, address))
    return hosts


def unc(address, windows_path):
    """C:\\Windows\\... on a host as \\\\host\\ADMIN$\\..."""
    return "\\\\" + address + r"\ADMIN$" + windows_path[len(r"C:\Windows") :]


def sha256_of_remote(path, smb):
    try:
        with smbclient.open_file(path, mode="rb", **smb) as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as e:  # smbclient's SMBOSError: errno ENOENT for a missing file or directory
        if e.errno == errno.ENOENT:
            return None
        raise


def scan(name, address, cfg):
    """One host, start to end. Returns its result dict; never raises."""
    start = time.monotonic()
    result = {
        "host": name,
        "address": address,
        "status": "error",
        "pushed": None,
        "seconds": None,
        "report": None,
        "detail": "",
    }
    # Lab note: smbclient gives every connection the process's one ClientGuid. Against real,
    # separate Windows hosts that is harmless; against the lab's single Samba serving every
    # host address, Samba takes a second connection with a known ClientGuid for another
    # channel of the same client and hands it to the first connection's smbd process, whose
    # share paths (ADMIN$ = the tree of %i, the address connected to) are another host's. So
    # each host gets its own connection (a fresh ClientGuid) in its own connection cache, as
    # pushscan's SMB client does; otherwise the script is what an admin writes.
    cache = {}
    smb = {"port": cfg.smb_port, "connection_cache": cache}
    try:
        conn = Connection(uuid.uuid4(), address, cfg.smb_port, require_signing=True)
        conn.connect(timeout=30)
        cache[f"{address.lower()}:{cfg.smb_port}"] = conn
        smbclient.register_session(
            address,
            username=cfg.user,
            password=cfg.password,
            require_signing=True,
            **smb,
        )
        try:
            # 1. The checker: there with the right hash, else copy it.
            exe = unc(address, REMOTE_EXE)
            result["pushed"] = False
            if sha256_of_remote(exe, smb) != cfg.sha256:
                smbclient.makedirs(unc(address, REMOTE_DIR), exist_ok=True, **smb)
                with smbclient.open_file(exe, mode="wb", **smb) as f:
                    f.write(cfg.checker_bytes)
                result["pushed"] = True
            reports = unc(address, REMOTE_REPORTS)
            smbclient.makedirs(reports, exist_ok=True, **smb)

            # 2. Run it.
            session = winrm.Session(
                f"http://{address}:{cfg.winrm_port}/wsman",
                auth=(cfg.user, cfg.password),
                transport="ntlm",
                message_encryption="auto",
            )
            r = session.run_cmd(REMOTE_EXE, ["/quiet", "/json", "/output", REMOTE_REPORTS])
            if r.status_code != 0:
                err = r.std_err.decode("utf-8", "replace").strip()
                result["detail"] = f"emocheck exited {r.status_code}: {err[:200]}"
                return result

            # 3. The newest report (its name ends with a yyyymmddhhmmss stamp).
            names = [e.name for e in smbclient.scandir(reports, **smb) if e.name.endswith("_emocheck.json")]
            if not names:
                result["status"] = "no result"
                result["detail"] = "no *_emocheck.json in " + REMOTE_REPORTS
                return result
            newest = max(names, key=lambda n: n.rsplit("_", 2)[-2])
            result["report"] = newest
            with smbclient.open_file(reports + "\\" + newest, mode="rb", **smb) as f:
                data = f.read()
            try:
                doc = json.loads(data.decode("utf-8"))
            except ValueError as e:
                result["detail"] = f"unreadable report {newest}: {e}"
                return result
            infected = doc.get("is_infected")
            if infected == "yes":
                result["status"] = "detected"
                procs = doc.get("emotet_processes") or []
                result["detail"] = ", ".join(
                    f"{p.get('process_name')} (PID {p.get('process_id')}) {p.get('image_path')}" for p in procs
                )
            elif infected == "no":
                result["status"] = "not detected"
            else:
                result["detail"] = f"report {newest}: is_infected = {infected!r}"
        finally:
            smbclient.reset_connection_cache(connection_cache=cache)
    except Exception as e:  # noqa: BLE001 - one host's failure must not stop the sweep
        result["status"] = "error"
        result["detail"] = f"{type(e).__name__}: {e}".strip()[:300]
    finally:
        result["seconds"] = round(time.monotonic() - start, 3)
    return result


def main():
    ap = argparse.ArgumentParser(description="EmoCheck sweep over WinRM + SMB (pywinrm, smbprotocol)")
    ap.add_argument("hosts_file")
    ap.add_argument("--checker", required=True, help="local emocheck.exe to push")
    ap.add_argument("--sha256", help="expected SHA-256 of the checker [default: the local file's]")
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--winrm-port", type=int, default=5985)
    ap.add_argument("--smb-port", type=int, default=445)
    ap.add_argument("--user", default=os.environ.get("PUSHSCAN_USER"))
    ap.add_argument("--json", action="store_true", help="JSON document on stdout")
    cfg = ap.parse_args()
    if not cfg.user:
        ap.error("no user: set PUSHSCAN_USER or pass --user")
    cfg.password = os.environ.get("PUSHSCAN_PASSWORD") or getpass.getpass(f"password of {cfg.user}: ")
    with open(cfg.checker, "rb") as f:
        cfg.checker_bytes = f.read()
    actual = hashlib.sha256(cfg.checker_bytes).hexdigest()
    if cfg.sha256 and cfg.sha256.lower() != actual:
        print(f"windows_peer.py: {cfg.checker} has SHA-256 {actual}, expected {cfg.sha256}", file=sys.stderr)
        return 3
    cfg.sha256 = actual
    hosts = read_hosts(cfg.hosts_file)

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        results = list(pool.map(lambda h: scan(h[0], h[1], cfg), hosts))
    wall = time.monotonic() - start

    counts = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    pushed = sum(1 for r in results if r["pushed"])
    summary = (
        f"{len(hosts)} hosts in {wall:.1f} s ({len(hosts) / wall if wall else 0:.1f} hosts/s), "
        f"{cfg.workers} workers: "
        + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("not detected", "detected", "no result", "error"))
        + f"; pushed {pushed}"
    )
    if cfg.json:
        print(summary, file=sys.stderr)
        doc = {
            "tool": "windows_peer.py",
            "workers": cfg.workers,
            "hosts": len(hosts),
            "wall_s": round(wall, 3),
            "counts": counts,
            "pushed": pushed,
            "results": results,
        }
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        print(summary)
        for r in results:
            print(
                f"{r['host']:<20} {r['status']:<13} {r['seconds']:7.2f} s  "
                f"{'pushed' if r['pushed'] else '      '}  {r['detail']}"
            )
    if counts.get("detected"):
        return 1
    if counts.get("not detected", 0) != len(hosts):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
