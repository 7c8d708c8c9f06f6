#!/usr/bin/env python3
"""MS-SCMR through Impacket, the reference pushscan's own client is held to.

Usage: scmr_impacket.py HOST PORT USER PASSWORD NAME...

Over \\PIPE\\svcctl of HOST:PORT (SMB, NTLM as USER): ROpenSCManagerW asking to
create services (and closing it if granted), ROpenSCManagerW to connect, then for
each NAME ROpenServiceW and, when it opened, RQueryServiceStatus,
RQueryServiceConfigW and RCloseServiceHandle; then RCreateServiceW of a service
named "pushscan-impacket-probe" and RCloseServiceHandle of the manager. Prints
one JSON object: each call's Windows error code (0 when it succeeded, the fault
status when the server answered with a FAULT) and what it returned.
"""

import json
import sys

from impacket.dcerpc.v5 import scmr, transport
from impacket.dcerpc.v5.rpcrt import DCERPCException, rpc_status_codes


def code(exc):
    """The Windows error code or fault status an Impacket exception carries.

    A FAULT Impacket meets while receiving comes as its status's name only."""
    value = getattr(exc, "error_code", None)
    if value is not None:
        return value & 0xFFFFFFFF
    for status, name in rpc_status_codes.items():
        if str(exc) == name:
            return status
    raise exc


def text(value):
    """An NDR string as Impacket returns it, without its terminating NUL."""
    if value is None or value == 0:
        return ""
    if isinstance(value, bytes):
        # A null pointer comes back as b"".
        value = value.decode("utf-16-le", errors="replace")
    return str(value).rstrip("\x00")


def main():
    host, port, user, password, *names = sys.argv[1:]
    rpc = transport.DCERPCTransportFactory(r"ncacn_np:%s[\pipe\svcctl]" % host)
    rpc.set_dport(int(port))
    rpc.set_credentials(user, password, "")
    dce = rpc.get_dce_rpc()
    dce.connect()
    dce.bind(scmr.MSRPC_UUID_SCMR)
    out = {"services": {}}
    try:
        denied = scmr.hROpenSCManagerW(
            dce, dwDesiredAccess=scmr.SC_MANAGER_CONNECT | scmr.SC_MANAGER_CREATE_SERVICE
        )
        out["open_manager_create"] = 0
        scmr.hRCloseServiceHandle(dce, denied["lpScHandle"])
    except DCERPCException as e:
        out["open_manager_create"] = code(e)
    manager = scmr.hROpenSCManagerW(dce, dwDesiredAccess=scmr.SC_MANAGER_CONNECT)
    scm = manager["lpScHandle"]
    out["open_manager"] = manager["ErrorCode"]
    for name in names:
        entry = {}
        try:
            handle = scmr.hROpenServiceW(
                dce,
                scm,
                name + "\x00",
                dwDesiredAccess=scmr.SERVICE_QUERY_CONFIG | scmr.SERVICE_QUERY_STATUS,
            )["lpServiceHandle"]
        except DCERPCException as e:
            entry["open"] = code(e)
            out["services"][name] = entry
            continue
        entry["open"] = 0
        status = scmr.hRQueryServiceStatus(dce, handle)["lpServiceStatus"]
        entry["status"] = [
            status["dwServiceType"],
            status["dwCurrentState"],
            status["dwControlsAccepted"],
            status["dwWin32ExitCode"],
            status["dwServiceSpecificExitCode"],
            status["dwCheckPoint"],
            status["dwWaitHint"],
        ]
        try:
            cfg = scmr.hRQueryServiceConfigW(dce, handle)["lpServiceConfig"]
            entry["config"] = {
                "service_type": cfg["dwServiceType"],
                "start_type": cfg["dwStartType"],
                "error_control": cfg["dwErrorControl"],
                "binary_path": text(cfg["lpBinaryPathName"]),
                "load_order_group": text(cfg["lpLoadOrderGroup"]),
                "tag_id": cfg["dwTagId"],
                "dependencies": text(cfg["lpDependencies"]),
                "start_name": text(cfg["lpServiceStartName"]),
                "display_name": text(cfg["lpDisplayName"]),
            }
        except DCERPCException as e:
            entry["config_error"] = code(e)
        scmr.hRCloseServiceHandle(dce, handle)
        out["services"][name] = entry
    try:
        created = scmr.hRCreateServiceW(
            dce,
            scm,
            "pushscan-impacket-probe\x00",
            "pushscan-impacket-probe\x00",
            lpBinaryPathName="C:\\probe.exe\x00",
            dwStartType=scmr.SERVICE_DEMAND_START,
        )
        out["create"] = 0
        scmr.hRCloseServiceHandle(dce, created["lpServiceHandle"])
    except DCERPCException as e:
        out["create"] = code(e)
    scmr.hRCloseServiceHandle(dce, scm)
    dce.disconnect()
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
