#!/usr/bin/env python3
"""A real SMTP server for tests/alerts.rs: aiosmtpd on a loopback port.

    python3 tests/alerts_smtp.py OUTDIR CERT KEY USER PASSWORD

STARTTLS with the given certificate is required before anything else, and
AUTH (PLAIN or LOGIN) with USER/PASSWORD is required before MAIL FROM
(aiosmtpd: require_starttls, auth_require_tls, auth_required). Each accepted
message is written to OUTDIR as msg-NNN.eml (the raw data as received) and
msg-NNN.json (envelope sender and recipients, whether the session was TLS
and authenticated, and the message parsed with Python's email package:
subject, text body, attachments). The .json file is renamed into place
last, so its presence means the message is complete. Prints "READY PORT"
once it accepts connections; runs until stdin is closed.
"""

import email
import email.policy
import json
import logging
import os
import socket
import ssl
import sys
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    outdir, cert, key, user, password = sys.argv[1:6]
    # Quiet: a refused handshake (the wrong-CA test) is expected, and
    # aiosmtpd warns about its own deprecated attributes.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore", DeprecationWarning)

    class Handler:
        def __init__(self):
            self.count = 0

        async def handle_DATA(self, server, session, envelope):
            self.count += 1
            base = os.path.join(outdir, "msg-%03d" % self.count)
            raw = envelope.original_content or envelope.content
            if isinstance(raw, str):
                raw = raw.encode("utf-8", "surrogateescape")
            with open(base + ".eml", "wb") as f:
                f.write(raw)
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            body = msg.get_body(preferencelist=("plain",))
            attachments = []
            for part in msg.iter_attachments():
                content = part.get_payload(decode=True) or b""
                attachments.append(
                    {
                        "filename": part.get_filename(),
                        "content_type": part.get_content_type(),
                        "content": content.decode("utf-8", "replace"),
                    }
                )
            record = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "tls": session.ssl is not None,
                "authenticated": bool(session.authenticated),
                "auth_user": user if session.authenticated else None,
                "subject": str(msg["subject"]),
                "from": str(msg["from"]),
                "to": str(msg["to"]),
                "auto_submitted": str(msg["auto-submitted"]),
                "message_id": str(msg["message-id"]),
                "body": body.get_content() if body is not None else "",
                "attachments": attachments,
            }
            with open(base + ".json.tmp", "w", encoding="utf-8") as f:
                json.dump(record, f, ensure_ascii=False, indent=1)
            os.rename(base + ".json.tmp", base + ".json")
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_require_tls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    controller.start()
    print("READY %d" % port, flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
