#!/usr/bin/env python3
"""pywinrm against the pushscan-lab WinRM simulator (driven by lab/tests/winrm_pywinrm.rs).

pywinrm is written against real Windows hosts: if it accepts the simulator, the simulator is
not just shaped around pushscan's own client. Usage: pywinrm_client.py CONFIG.json, where the
config names the endpoints, the account, the CA file and the host trees (see the Rust test).
Prints one "ok <name>" line per check and exits 1 on the first failure.
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import time

try:
    import winrm
    from winrm.exceptions import InvalidCredentialsError, WinRMOperationTimeoutError, WSManFaultError
except ImportError:
    print("install pywinrm: python3 -m pip install pywinrm (scripts/test does this)")
    sys.exit(2)


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok {name}")


def session(url, cfg, transport, **kw):
    return winrm.Session(url, auth=(cfg["user"], cfg["password"]), transport=transport, proxy=None, **kw)


def protocol(url, cfg, transport="ntlm", password=None, **kw):
    return winrm.Protocol(
        url,
        transport=transport,
        username=cfg["user"],
        password=password if password is not None else cfg["password"],
        proxy=None,
        **kw,
    )


def expect_invalid_credentials(name, fn):
    try:
        fn()
    except InvalidCredentialsError:
        check(name, True)
        return
    except Exception as e:  # noqa: BLE001 - report what happened instead
        check(name, False, f"expected InvalidCredentialsError, got {type(e).__name__}: {e}")
    check(name, False, "expected InvalidCredentialsError, the request succeeded")


def main():
    cfg = json.load(open(sys.argv[1]))
    a, b, c = cfg["hosts"]  # each: name, http, https, tree
    http_a = f"http://{a['http']}/wsman"

    # 1. NTLM with message encryption over HTTP: output and exit codes.
    s = session(http_a, cfg, "ntlm", message_encryption="always")
    r = s.run_cmd("cmd", ["/c", "echo hello"])
    check("ntlm_sealed_echo", (r.std_out, r.std_err, r.status_code) == (b"hello\r\n", b"", 0), repr(r.__dict__))
    r = s.run_cmd("cmd", ["/c", "exit /b 3"])
    check("ntlm_sealed_exit_code", r.status_code == 3, repr(r.__dict__))
    r = s.run_cmd("ipconfig", ["/all"])
    check(
        "unknown_command_like_cmd",
        r.status_code == 1 and b"'ipconfig' is not recognized" in r.std_err,
        repr(r.__dict__),
    )
    r = s.run_cmd("hostname")
    check("hostname_is_the_simulated_host", r.std_out == (a["name"] + "\r\n").encode(), repr(r.std_out))

    # 2. The stand-in checker pushed as an .exe writes an EmoCheck report into the tree.
    exe = r"C:\Windows\Temp\emocheck.exe"
    r = s.run_cmd(exe, ["/quiet", "/output", r"C:\Windows\Temp"])
    check("checker_exit_code", r.status_code == 0, repr(r.__dict__))
    r = s.run_cmd("cmd", ["/c", r"dir /b C:\Windows\Temp\*_emocheck.txt"])
    names = r.std_out.decode().split()
    check("checker_report_listed", r.status_code == 0 and len(names) == 1 and names[0].startswith(a["name"] + "_"), repr(r.__dict__))
    r = s.run_cmd("cmd", ["/c", "type", "C:\\Windows\\Temp\\" + names[0]])
    report = r.std_out
    check(
        "checker_report_content",
        report.startswith(b"[EmoCheck v2.4.0]\r\n") and "Emotetを検知しました。".encode() in report and b"wfsrvhost.exe" in report,
        repr(report[:200]),
    )
    local_exe = os.path.join(a["tree"], "C", "Windows", "Temp", "emocheck.exe")
    want = hashlib.sha256(open(local_exe, "rb").read()).hexdigest()
    r = s.run_cmd("certutil", ["-hashfile", exe, "SHA256"])
    lines = r.std_out.decode().split("\r\n")
    check(
        "certutil_hashfile",
        r.status_code == 0 and lines[0] == f"SHA256 hash of {exe}:" and lines[1] == want,
        repr(r.std_out),
    )

    # 3. Stdin through Send: without /quiet the checker pauses until a key is read.
    p = protocol(http_a, cfg, message_encryption="always")
    shell = p.open_shell(working_directory=r"C:\Windows\Temp")
    cid = p.run_command(shell, "emocheck.exe", ["/output", "."])
    p.send_command_input(shell, cid, b"\r\n", end=True)
    out, err, code = p.get_command_output(shell, cid)
    check("stdin_send_ends_pause", code == 0 and b"Press any key to continue" in out, repr((out[-200:], err, code)))
    p.cleanup_command(shell, cid)

    # 4. A command that outlives OperationTimeout: the client must re-poll (WinRMOperationTimeoutError).
    p = protocol(http_a, cfg, message_encryption="always", operation_timeout_sec=1, read_timeout_sec=5)
    shell = p.open_shell()
    cid = p.run_command(shell, r"C:\Windows\Temp\waiter.exe", [r"C:\Windows\Temp\release.flag"])
    timeouts = 0
    try:
        p.get_command_output_raw(shell, cid)
    except WinRMOperationTimeoutError:
        timeouts += 1
    check("receive_times_out_while_silent", timeouts == 1)
    # Release the waiter through WinRM itself (cmd redirection into the tree).
    r = s.run_cmd("cmd", ["/c", r"echo go> C:\Windows\Temp\release.flag"])
    check("release_flag_written", r.status_code == 0, repr(r.__dict__))
    out = b""
    while True:
        try:
            o, e, code, done = p.get_command_output_raw(shell, cid)
        except WinRMOperationTimeoutError:
            timeouts += 1
            continue
        out += o
        if done:
            break
    check("repoll_gets_output", out == b"released\n" and code == 0, repr((out, code, timeouts)))
    p.cleanup_command(shell, cid)

    # 5. Unknown shell: the WS-Man fault Windows returns.
    try:
        p.run_command("6A3B1B4C-0000-0000-0000-000000000000", "cmd", ["/c", "echo"])
        check("unknown_shell_fault", False, "no fault")
    except WSManFaultError as e:
        check("unknown_shell_fault", e.wsman_fault_code == 2150858843 and e.fault_subcode == "w:InvalidSelectors", repr(e.__dict__))
    p.close_shell(shell)

    # 6. Wrong password, Basic over HTTP, unsealed NTLM over HTTP: all 401.
    expect_invalid_credentials(
        "ntlm_wrong_password",
        lambda: protocol(http_a, cfg, password="wrong-" + cfg["password"], message_encryption="always").open_shell(),
    )
    expect_invalid_credentials("basic_over_http_refused", lambda: session(http_a, cfg, "basic").run_cmd("hostname"))
    expect_invalid_credentials(
        "ntlm_unencrypted_over_http_refused",
        lambda: session(http_a, cfg, "ntlm", message_encryption="never").run_cmd("hostname"),
    )

    # 7. HTTPS: Basic with certificate validation against the lab CA, and NTLM without sealing.
    https_b = f"https://{b['https']}/wsman"
    s = session(https_b, cfg, "basic", server_cert_validation="validate", ca_trust_path=cfg["ca"])
    r = s.run_cmd("cmd", ["/c", "echo hello"])
    check("basic_https_validated", (r.std_out, r.status_code) == (b"hello\r\n", 0), repr(r.__dict__))
    expect_invalid_credentials(
        "basic_https_wrong_password",
        lambda: winrm.Session(https_b, auth=(cfg["user"], "nope"), transport="basic", proxy=None, ca_trust_path=cfg["ca"]).run_cmd("hostname"),
    )
    s = session(https_b, cfg, "ntlm", server_cert_validation="validate", ca_trust_path=cfg["ca"])
    r = s.run_cmd("hostname")
    check("ntlm_https_plain", r.std_out == (b["name"] + "\r\n").encode(), repr(r.__dict__))

    # 8. Terminate kills the whole process tree of a hanging checker.
    http_c = f"http://{c['http']}/wsman"
    p = protocol(http_c, cfg, message_encryption="always", operation_timeout_sec=1, read_timeout_sec=5)
    shell = p.open_shell()
    cid = p.run_command(shell, exe, ["/quiet"])
    marker = "pushscan-sim-hang-" + c["name"]
    seen = False
    for _ in range(100):
        if subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout.split().__len__() >= 2:
            seen = True
            break
        time.sleep(0.1)
    check("hang_scenario_started", seen)
    p.cleanup_command(shell, cid)
    gone = False
    for _ in range(100):
        if not subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout.strip():
            gone = True
            break
        time.sleep(0.1)
    check("terminate_kills_process_tree", gone)
    p.close_shell(shell)
    print("pywinrm: all checks passed")


if __name__ == "__main__":
    main()
